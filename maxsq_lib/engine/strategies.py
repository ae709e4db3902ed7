"""Target-loss strategies: the only thing that differs between adaptation methods.

The training loop (:mod:`maxsq_lib.engine.trainer`) forwards a target batch through the network in
every adaptation iteration and asks the strategy for a loss. A strategy is a small object with a
name, a flag saying whether it uses the auxiliary (layer5) head, and ``__call__(main, aux)`` that
returns the weighted target loss (or ``None`` when there is nothing to back-propagate) and a dict
of detached tensors to log.

The methods and their losses are the rows of :mod:`maxsq_lib.methods`; the strategy weights the
row's loss by λ_T. P = softmax of the main-head logits at input resolution. ``faithful_scale=True`` uses the authors'
constants (docs/authors_code.md §4.2), so the paper's λ_T values mean what they meant there.
Introduced in notebook ``04_adaptation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .. import methods


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
    """Build the strategy for an adaptation method by name (a row of :mod:`maxsq_lib.methods`).

    Args:
        method: a registered method, e.g. ``adabn``, ``none``, ``minent``, ``maxsquare``,
            ``maxsquare_iw``, ``maxsquare_iw_multi``, ``hard``.
        lambda_target: λ_T.
        lambda_seg: λ_seg, the aux-head weight of multi-level guidance.
        threshold: confidence threshold δ of multi-level guidance and of ``hard``.
        iw_ratio: α of the image-wise class weights.
        faithful_scale: use the authors' loss constants (docs/authors_code.md §4.2).
    Returns:
        a :class:`TargetStrategy`.
    """
    row = methods.get_method(method)
    if row.role == "source":
        raise ValueError(f"{method!r} is a source row, not an adaptation method")
    params = methods.LossParams(lambda_seg, threshold, iw_ratio, faithful_scale)
    return TargetStrategy(method, float(lambda_target), row.uses_aux, _bind(row.loss, params),
                          _bind(row.pseudo_labels, params))


def _bind(fn, params: methods.LossParams):
    """``fn(main, aux, params)`` as ``(main, aux) -> ...`` (None stays None)."""
    if fn is None:
        return None
    return lambda main, aux: fn(main, aux, params)


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
