"""Target-loss strategies: the only thing that differs between adaptation methods.

The training loop (:mod:`maxsq_lib.engine.trainer`) forwards a target batch through the network in
every adaptation iteration and asks the strategy for a loss. A strategy is a small object with a
name, a flag saying whether it uses the auxiliary (layer5) head, and ``__call__(main, aux)`` that
returns the weighted target loss (or ``None`` when there is nothing to back-propagate) and a dict
of detached tensors to log.

=====================  =============================================================================
method                 target objective (λ_T = ``lambda_target``, λ_seg = ``lambda_seg``)
=====================  =============================================================================
none                   no loss: target images still pass through BatchNorm in train mode
minent                 λ_T · entropy(P)
maxsquare              λ_T · MaxSquare(P)
maxsquare_iw           λ_T · IW-MaxSquare(P; α)
maxsquare_iw_multi     λ_T · IW-MaxSquare(P; α) + λ_seg · λ_T · CE(aux, fused pseudo-label)
hard                   λ_T · CE(main, argmax P where max P > threshold)
=====================  =============================================================================

P = softmax of the main-head logits at input resolution. ``faithful_scale=True`` uses the authors'
constants (official-code-facts §4), so the paper's λ_T values mean what they meant there.
Introduced in notebook ``04_adaptation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .. import losses


@dataclass(frozen=True)
class TargetStrategy:
    """A named target loss.

    Args:
        name: the method name (``maxsq_lib.config.METHODS``).
        lambda_target: λ_T, weight of the target loss.
        uses_aux: whether the strategy trains the aux head (multi-level guidance); the loop then
            also adds λ_seg·CE(aux) on the source batch.
        loss_fn: ``(main_logits, aux_logits) -> (unweighted loss, logs)`` or ``None`` for ``none``.
        pseudo_label_fn: ``(main_logits, aux_logits) -> (B, H, W)`` pseudo-labels (-1: not kept)
            of the methods that train on them (``maxsquare_iw_multi``, ``hard``), else ``None``.
    """

    name: str
    lambda_target: float
    uses_aux: bool
    loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]] | None
    pseudo_label_fn: Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __call__(self, main_logits: Tensor, aux_logits: Tensor | None) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Weighted target loss and detached values to log.

        Shape:
            main_logits, aux_logits: (B, C, H, W) at input resolution (aux may be ``None`` when
            ``uses_aux`` is false: the engine then skips the aux head).
        Returns:
            (λ_T-weighted scalar loss or ``None``, ``{name: 0-d tensor}``).
        """
        if self.loss_fn is None:
            return None, {}
        loss, logs = self.loss_fn(main_logits, aux_logits)
        logs = {"target_loss": loss.detach(), **logs}
        return self.lambda_target * loss, logs

    def raw_loss(self, main_logits: Tensor, aux_logits: Tensor) -> Tensor:
        """The unweighted main-head loss (used to measure gradient norms for λ matching)."""
        if self.loss_fn is None:
            raise ValueError(f"method {self.name!r} has no target loss")
        return self.loss_fn(main_logits, aux_logits)[0]


def make_strategy(method: str, *, lambda_target: float = 0.1, lambda_seg: float = 0.1,
                  threshold: float = 0.95, iw_ratio: float = 0.2,
                  faithful_scale: bool = True) -> TargetStrategy:
    """Build the strategy for an adaptation method by name.

    Args:
        method: ``adabn``, ``none``, ``minent``, ``maxsquare``, ``maxsquare_iw``,
            ``maxsquare_iw_multi``, ``hard``.
        lambda_target: λ_T.
        lambda_seg: λ_seg, the aux-head weight of multi-level guidance.
        threshold: confidence threshold δ of multi-level guidance and of ``hard``.
        iw_ratio: α of the image-wise class weights.
        faithful_scale: use the authors' loss constants (§4 of the facts file).
    Returns:
        a :class:`TargetStrategy`.
    """

    def minent(main: Tensor, aux: Tensor):
        return losses.entropy(main, faithful=faithful_scale), {}

    def maxsquare(main: Tensor, aux: Tensor):
        return losses.max_square(main, faithful=faithful_scale), {}

    def maxsquare_iw(main: Tensor, aux: Tensor):
        return losses.iw_max_square(main, ratio=iw_ratio, faithful=faithful_scale), {}

    def fused_labels(main: Tensor, aux: Tensor) -> Tensor:
        return losses.fused_pseudo_label(main, aux, threshold=threshold)

    def confident_labels(main: Tensor, aux: Tensor | None) -> Tensor:
        return losses.hard_pseudo_label(main, threshold=threshold)

    def maxsquare_iw_multi(main: Tensor, aux: Tensor):
        main_loss = losses.iw_max_square(main, ratio=iw_ratio, faithful=faithful_scale)
        aux_ce, pseudo = losses.multi_level_guidance(main, aux, threshold=threshold)
        kept = (pseudo >= 0).float().mean()
        # λ_T multiplies the sum, so the aux term ends up weighted λ_seg·λ_T as in §4.1.
        return main_loss + lambda_seg * aux_ce, {"target_main_loss": main_loss.detach(),
                                                  "target_aux_ce": aux_ce.detach(),
                                                  "pseudo_label_fraction": kept}

    def hard(main: Tensor, aux: Tensor):
        pseudo = confident_labels(main, aux)
        return losses.source_cross_entropy(main, pseudo), {"pseudo_label_fraction": (pseudo >= 0).float().mean()}

    table = {
        "adabn": (None, False, None),  # no gradient step at all: see maxsq_lib.engine.adabn
        "none": (None, False, None),
        "minent": (minent, False, None),
        "maxsquare": (maxsquare, False, None),
        "maxsquare_iw": (maxsquare_iw, False, None),
        "maxsquare_iw_multi": (maxsquare_iw_multi, True, fused_labels),
        "hard": (hard, False, confident_labels),
    }
    if method not in table:
        raise ValueError(f"unknown adaptation method {method!r}; expected one of {list(table)}")
    fn, uses_aux, pseudo_label_fn = table[method]
    return TargetStrategy(method, float(lambda_target), uses_aux, fn, pseudo_label_fn)


def strategy_from_config(adapt_cfg, lambda_target: float | None = None) -> TargetStrategy:
    """The strategy an :class:`maxsq_lib.config.AdaptConfig` describes (``lambda_target``: a
    measured λ_T that replaces the configured one, e.g. a matched-gradient run's)."""
    lam = adapt_cfg.lambda_target if lambda_target is None else lambda_target
    return make_strategy(adapt_cfg.method, lambda_target=lam,
                         lambda_seg=adapt_cfg.lambda_seg, threshold=adapt_cfg.threshold,
                         iw_ratio=adapt_cfg.iw_ratio, faithful_scale=adapt_cfg.faithful_scale)


def logit_gradient_norm(strategy: TargetStrategy, main_logits: Tensor, aux_logits: Tensor) -> Tensor:
    """Norm of the gradient of the *unweighted* target loss w.r.t. the main logits.

    Used to match λ between losses (``adapt.match_gradient_to``): at equal λ, MaxSquare's gradient
    is smaller than entropy's, so a fair comparison of the loss *shape* scales λ by the ratio.

    Shape:
        main_logits, aux_logits: (B, C, H, W).
    Returns:
        0-d tensor.
    """
    logits = main_logits.detach().float().requires_grad_(True)
    loss = strategy.raw_loss(logits, None if aux_logits is None else aux_logits.detach().float())
    (grad,) = torch.autograd.grad(loss, logits)
    return grad.norm()
