"""What a target loss does *during* adaptation, measured at every evaluation.

Notebook ``03_gradient_analysis`` shows where each loss puts its gradient at step 0; whether that
stays true while the model sharpens, and whether multi-level guidance's pseudo-labels stay right
while more pixels pass its threshold, needs the same measurement at later iterations. At each
evaluation of an adaptation run the trainer hands the main-head logits of every target val image
(and the aux-head logits, for multi-level guidance) to an :class:`AdaptationProbe`, which adds up,
per bin of the main head's confidence ``max_c p``:

- the pixels, and how many of the labelled ones are predicted right (accuracy per bin);
- the per-pixel norm ``|∂L/∂z|`` of the method's own, unweighted target loss w.r.t. the main
  logits (its share per bin says which pixels the loss trains);

and, for methods with pseudo-labels (``maxsquare_iw_multi``: the fused ones; ``hard``), the kept
fraction and the precision of the kept labels against the val labels. The labels serve this
measurement only; training never sees them. The model is the one being scored (eval mode, with the
evaluation's BatchNorm statistics), so these are the predictions the mIoU of that evaluation
counts. Recorded in ``metrics.json`` under ``history[i]["probe"]`` (and ``before["probe"]``);
drawn by ``maxsq figures`` (``gradient_shares_during.png``, ``pseudo_labels.png``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .strategies import TargetStrategy

PROBE_BINS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9, 0.99, 1.0)
"""Confidence bin edges (``edges[k] <= max p < edges[k+1]``, the last bin closed)."""


class AdaptationProbe:
    """Per-confidence-bin sums over one evaluation pass (see the module docstring).

    Args:
        strategy: the run's target strategy (its ``raw_loss`` is differentiated; ``none`` has no
            loss, so only pixels and accuracy are counted; its ``pseudo_label_fn``, if any, gives the
            pseudo-labels whose kept fraction and precision are counted).
        bins: confidence bin edges from 0 to 1.
    """

    def __init__(self, strategy: TargetStrategy, bins: tuple[float, ...] = PROBE_BINS):
        self.strategy = strategy
        self.edges = torch.tensor(bins, dtype=torch.float64)
        if self.edges.ndim != 1 or len(bins) < 2 or bins[0] != 0.0 or bins[-1] != 1.0 or \
                bool((self.edges.diff() <= 0).any()):
            raise ValueError(f"bins: expected increasing edges from 0 to 1, got {list(bins)}")
        k = len(bins) - 1
        self.pixels, self.labelled, self.correct, self.gradient = (torch.zeros(k, dtype=torch.float64)
                                                                   for _ in range(4))
        self.pseudo = torch.zeros(4, dtype=torch.float64)  # pixels, kept, kept labelled, kept right
        self.images = 0

    @property
    def has_loss(self) -> bool:
        return self.strategy.loss_fn is not None

    @property
    def pseudo_labels(self) -> bool:
        return self.strategy.pseudo_label_fn is not None

    @property
    def uses_aux(self) -> bool:
        """Whether :meth:`update` needs the aux-head logits."""
        return self.strategy.uses_aux

    def _per_bin(self, values: Tensor, bin_of_pixel: Tensor) -> Tensor:
        k = len(self.edges) - 1
        return torch.bincount(bin_of_pixel, weights=values.double().flatten(), minlength=k)[:k].cpu()

    def update(self, main_logits: Tensor, aux_logits: Tensor | None, label: Tensor) -> None:
        """Add one batch.

        Shape:
            main_logits, aux_logits: (B, C, H, W) at the label's size; label: (B, H, W), -1 ignored.
        """
        main = main_logits.detach().float()
        probs = main.softmax(dim=1)
        confidence, predicted = probs.max(dim=1)
        edges = self.edges.to(confidence.device, torch.float64)
        bin_of_pixel = (torch.bucketize(confidence.double().flatten(), edges, right=True) - 1).clamp(0, len(edges) - 2)
        valid = label >= 0
        self.pixels += self._per_bin(torch.ones_like(confidence), bin_of_pixel)
        self.labelled += self._per_bin(valid, bin_of_pixel)
        self.correct += self._per_bin(valid & (predicted == label), bin_of_pixel)
        if self.has_loss:
            # the batch loss, as training computes it (IW's weights are per image within it)
            z = main.clone().requires_grad_(True)
            aux = None if aux_logits is None else aux_logits.detach().float()
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.strategy.raw_loss(z, aux), z)
            self.gradient += self._per_bin(grad.norm(dim=1), bin_of_pixel)
        if self.pseudo_labels:
            pseudo = self.strategy.pseudo_label_fn(main, None if aux_logits is None else aux_logits.detach().float())
            kept = pseudo >= 0
            self.pseudo += torch.stack([torch.tensor(float(kept.numel())), kept.sum().double().cpu(),
                                        (kept & valid).sum().double().cpu(),
                                        (kept & valid & (pseudo == label)).sum().double().cpu()])
        self.images += main.shape[0]

    def result(self) -> dict:
        """JSON-ready sums and shares.

        Returns:
            ``{"bin_edges", "images", "pixel_share", "accuracy" (None where a bin has no labelled
            pixel), "gradient_share" (only with a loss), "pseudo_labels": {"kept_fraction",
            "precision"} (only for pseudo-label methods)}``; lists have one value per bin.
        """
        total = float(self.pixels.sum())
        out = {"bin_edges": self.edges.tolist(), "images": self.images,
               "pixel_share": (self.pixels / max(total, 1.0)).tolist(),
               "accuracy": [float(c / n) if n > 0 else None for c, n in zip(self.correct, self.labelled)]}
        if self.has_loss:
            g = float(self.gradient.sum())
            out["gradient_share"] = (self.gradient / g).tolist() if g > 0 else None
        if self.pseudo_labels:
            pixels, kept, kept_labelled, kept_right = (float(v) for v in self.pseudo)
            out["pseudo_labels"] = {"kept_fraction": kept / pixels if pixels else None,
                                    "precision": kept_right / kept_labelled if kept_labelled else None}
        return out
