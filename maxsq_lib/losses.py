"""Segmentation losses for unsupervised domain adaptation: MaxSquare, image-wise weighted MaxSquare,
MinEnt (entropy), multi-level self-produced guidance, hard pseudo-labels and the source
cross-entropy.

Every loss takes raw logits ``(B, C, H, W)`` (already upsampled to the label size) and computes
``p = softmax(logits, dim=1)`` itself, in float32 (or float64 when the logits are float64), so the
losses are safe under autocast. Label maps use ``-1`` (:data:`~maxsq_lib.labels.IGNORE_INDEX`) for
ignored pixels. No loss copies data to the host or reads a value back (no ``.item()``, ``.cpu()``,
boolean-mask indexing), so they run on any device without a synchronisation.

**Scales: our default vs ``faithful=True``.** ``faithful=True`` reproduces the constants of the
authors' code exactly (docs/authors_code.md §4; matched against their golden values in the tests).
B = batch, C = classes, H×W = pixels, p = softmax(logits), w = image-wise pixel weight.

=================  ======================================  ===============  ======================
loss               authors (``faithful=True``)             default          ratio default/faithful
=================  ======================================  ===============  ======================
``max_square``     ``-Σ p² / (2·B·C·H·W)``                 same             1
``iw_max_square``  ``-Σ_{b,n} w_n Σ_c p² / (B·C)``         with a ½         ½
``entropy``        ``Σ -p·log p / (B·C·H·W)``              same             1
CE losses          mean over kept / non-ignored pixels     same, 0 if none  1 (theirs: NaN if none)
=================  ======================================  ===============  ======================

Why:

- *MaxSquare and MinEnt keep the authors' mean over C* (per-pixel value divided by C). The paper's
  λ_T = 0.1 (0.09 for Multi) was tuned on exactly this scale, so a λ_T taken from the paper has the
  same effect here; a per-pixel (×C) default would silently make every λ_T 19 times stronger.
- *Their MaxSquare ignore mask* (``prob != -1``) is always true, a no-op; we have none either.
- *IW: the missing ½.* The authors' IW loss has no ½, so at ratio 0 (uniform weights 1/(H·W)) it
  is 2 × their MaxSquare and, at the same λ_T, IW is weighted twice as strongly. Our default keeps
  the ½, so ``iw_max_square(ratio=0) == max_square``; pass ``faithful=True`` (or double λ_T) to get
  the authors' strength, e.g. to reproduce their IW rows.
- *IW needed B = 1 in their code* (weights (B,H,W) broadcast into (B,C,H,W), issue #15; a ``.cpu()``
  histogram per image). Here both modes work at any B, with per-image histograms (next paragraph).
- *MinEnt* gradient: p is not detached, so it is the true entropy gradient, as in their trainer.

**Image-wise weights (IW) for any batch size.** The class histogram ``N_c`` is computed per image
from that image's argmax map (one ``scatter_add`` over all images at once), so image ``b``'s
weights depend on image ``b`` only. The weighted sum is divided by ``B·C``, i.e. the loss is the
*mean over images* of the single-image loss: a batch of 4 gives exactly the mean of 4 single-image
calls, values and gradients, and at B = 1 it is the authors' loss. Both modes work at any B.

Introduced in notebook ``03_gradient_analysis`` (MaxSquare, entropy, IW weights) and used by the
training loop in ``04_adaptation``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .labels import IGNORE_INDEX

IW_RATIO: float = 0.2
"""Default image-wise weighting exponent alpha (the authors' ``--IW_ratio``)."""

MULTI_THRESHOLD: float = 0.95
"""Default confidence threshold delta of the multi-level pseudo-labels (the authors' ``--threshold``)."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        got = (f"shape {tuple(logits.shape)}, dtype {logits.dtype}" if isinstance(logits, Tensor)
               else type(logits))
        raise ValueError(f"{name}: expected floating-point logits of shape (B, C, H, W), got {got}")


def _full_precision(logits: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged (float64 keeps gradcheck exact)."""
    return logits.float() if logits.dtype in _LOW_PRECISION else logits


def softmax_probabilities(logits: Tensor) -> Tensor:
    """Class probabilities ``p = softmax(logits)`` over the class axis, in at least float32.

    Args:
        logits: raw scores.
    Shape:
        (B, C, H, W) -> (B, C, H, W).
    Returns:
        probabilities summing to 1 over dim 1, differentiable w.r.t. ``logits``.
    """
    _check_logits(logits)
    return torch.softmax(_full_precision(logits), dim=1)


def pixel_square_sum(logits: Tensor) -> Tensor:
    """Per-pixel ``Σ_c p_c²`` (between 1/C for a uniform pixel and 1 for a one-hot pixel).

    Used as a map in notebook ``07_explorer``; MaxSquare is −½ of its mean divided by C.

    Args:
        logits: raw scores.
    Shape:
        (B, C, H, W) -> (B, H, W).
    Returns:
        differentiable per-pixel sum of squared probabilities.
    """
    p = softmax_probabilities(logits)
    return (p * p).sum(dim=1)


def pixel_entropy(logits: Tensor) -> Tensor:
    """Per-pixel entropy ``-Σ_c p_c log p_c`` in nats (0 for one-hot, log C for uniform).

    Computed from ``log_softmax`` so that it stays finite for saturated logits. Used as a map in
    notebook ``07_explorer``.

    Args:
        logits: raw scores.
    Shape:
        (B, C, H, W) -> (B, H, W).
    Returns:
        differentiable per-pixel entropy.
    """
    _check_logits(logits)
    log_p = torch.log_softmax(_full_precision(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


# ----------------------------------------------------------------------------------------------
# MaxSquare and entropy
# ----------------------------------------------------------------------------------------------


def max_square_from_probs(probs: Tensor, faithful: bool = False) -> Tensor:
    """MaxSquare as a function of the probabilities: ``-1/(2·B·C·H·W) · Σ p²``.

    Its gradient is ``∂L/∂p = -p / (B·C·H·W)``: linear in p, so confident pixels do not dominate as
    they do under entropy minimisation (notebook ``03_gradient_analysis``).

    Args:
        probs: probabilities (any shape; the mean runs over every element).
        faithful: accepted for a uniform signature; both modes give the authors' value (see the
            module table).
    Shape:
        (B, C, H, W) -> scalar.
    Returns:
        scalar loss (minimising it pushes every pixel towards a one-hot prediction).
    """
    del faithful  # same constant in both modes, by design (module docstring)
    return -0.5 * (probs * probs).mean()


def max_square(logits: Tensor, faithful: bool = False) -> Tensor:
    """Maximum Squares loss of a batch of logits: ``-1/(2·B·C·H·W) · Σ_{b,c,h,w} p²``.

    Args:
        logits: raw scores of the target images (main head).
        faithful: accepted for a uniform signature; the default already equals the authors'
            constant (module table).
    Shape:
        (B, C, H, W) -> scalar.
    Returns:
        scalar loss in [-1/(2C), -1/(2C²)].
    """
    return max_square_from_probs(softmax_probabilities(logits), faithful)


def entropy(logits: Tensor, faithful: bool = False) -> Tensor:
    """MinEnt loss: the mean over all ``B·C·H·W`` elements of ``-p·log p`` (per-pixel entropy / C).

    p is not detached, so this is the true entropy gradient (as the authors' trainer computes it).

    Args:
        logits: raw scores of the target images.
        faithful: accepted for a uniform signature; both modes give the authors' value.
    Shape:
        (B, C, H, W) -> scalar.
    Returns:
        scalar loss in [0, log(C)/C].
    """
    del faithful  # same constant in both modes (module docstring)
    b, c, h, w = logits.shape
    return pixel_entropy(logits).sum() / (b * c * h * w)


# ----------------------------------------------------------------------------------------------
# image-wise class weights
# ----------------------------------------------------------------------------------------------


def _class_counts(labels: Tensor, num_classes: int) -> Tensor:
    """Per-image class histogram of a label map; values outside [0, C) are not counted.

    One ``scatter_add`` over all images: no loop, no host synchronisation.
    Shape: (B, H, W) integer -> (B, C) int64.
    """
    flat = labels.reshape(labels.shape[0], -1).long()
    valid = (flat >= 0) & (flat < num_classes)
    index = torch.where(valid, flat, torch.zeros_like(flat))
    counts = torch.zeros(flat.shape[0], num_classes, dtype=torch.long, device=flat.device)
    return counts.scatter_add_(1, index, valid.long())


def _weights_from_counts(counts: Tensor, ratio: float) -> Tensor:
    """``w_c = 1 / max(N_c^α · N^(1-α), 1)`` with ``N = Σ_c N_c`` per image. (B, C) -> (B, C) float64."""
    n_c = counts.double()
    n = n_c.sum(dim=1, keepdim=True)
    return 1.0 / torch.clamp_min(n_c.pow(ratio) * n.pow(1.0 - ratio), 1.0)


@torch.no_grad()
def iw_class_weights(logits_or_argmax: Tensor, num_classes: int, ratio: float = IW_RATIO) -> Tensor:
    """Image-wise class weights ``w_c = 1 / max(N_c^α · N^(1-α), 1)`` from each image's histogram.

    ``N_c`` counts the pixels of image b whose predicted (argmax) class is c, ``N`` the counted
    pixels of that image (H·W for an argmax map). Rare classes get larger weights: with α = 0.2, a
    class covering 1% of an image weighs 0.01^-0.2 ≈ 2.5× a class covering all of it. Constants,
    never differentiated. Introduced in notebook ``03_gradient_analysis``.

    Args:
        logits_or_argmax: floating logits (B, C, H, W) (argmax of the logits over dim 1), or an integer map
            (B, H, W) of class indices; values outside [0, C) (e.g. -1) are not counted.
        num_classes: C.
        ratio: α, the authors' ``--IW_ratio``; 0 gives the uniform weight 1/N.
    Shape:
        (B, C, H, W) or (B, H, W) -> (B, C).
    Returns:
        float64 weights, on the input's device (a class absent from an image gets 1 for α > 0).
    """
    x = logits_or_argmax
    if x.is_floating_point():
        _check_logits(x, "logits_or_argmax")
        if x.shape[1] != num_classes:
            raise ValueError(
                f"logits_or_argmax: {x.shape[1]} classes on dim 1, expected num_classes={num_classes}")
        x = x.max(dim=1).indices
    elif x.dim() != 3:
        raise ValueError("logits_or_argmax: expected (B, C, H, W) logits or a (B, H, W) class map, "
                         f"got {tuple(x.shape)}")
    return _weights_from_counts(_class_counts(x, num_classes), ratio)


def _pixel_weights_from_argmax(argmax: Tensor, num_classes: int, ratio: float) -> Tensor:
    """Weight of each pixel's argmax class. (B, H, W) -> (B, H, W) float64."""
    class_weights = _weights_from_counts(_class_counts(argmax, num_classes), ratio)
    b = argmax.shape[0]
    return class_weights.gather(1, argmax.reshape(b, -1)).view(argmax.shape)


@torch.no_grad()
def iw_pixel_weights(logits: Tensor, ratio: float = IW_RATIO) -> Tensor:
    """Per-pixel image-wise weight: the class weight of each pixel's argmax class (a map).

    Shown as a map in notebooks ``03_gradient_analysis`` and ``07_explorer``.

    Args:
        logits: raw scores.
        ratio: α, as in :func:`iw_class_weights`.
    Shape:
        (B, C, H, W) -> (B, H, W).
    Returns:
        float64 weights (detached), on the logits' device.
    """
    _check_logits(logits)
    # argmax of the probabilities, as iw_max_square uses (identical to the logits' argmax except
    # at floating-point ties)
    argmax = softmax_probabilities(logits).max(dim=1).indices
    return _pixel_weights_from_argmax(argmax, logits.shape[1], ratio)


def _square_sum_over_classes(p: Tensor) -> Tensor:
    """``Σ_c p_c²`` accumulated class by class. (B, C, H, W) -> (B, H, W).

    Same value as ``(p * p).sum(1)`` but without a (B, C, H, W) temporary: 3-10× faster on a CPU
    than that or ``einsum`` (which copies p into a matmul layout for B > 1).
    """
    total = p[:, 0] * p[:, 0]
    for c in range(1, p.shape[1]):
        total.addcmul_(p[:, c], p[:, c])
    return total


class _ImageWiseSquareSum(torch.autograd.Function):
    """``-scale · Σ_{b,n} w_n Σ_c p²`` with ``p = softmax(logits)`` and image-wise weights ``w``.

    A fused forward/backward: the weights are constants, so the gradient has the closed form
    ``∂L/∂z_j = -2·scale·w·p_j·(p_j - Σ_c p_c²)`` (checked against autograd and gradcheck in the
    tests). It allocates one probability tensor and one gradient tensor instead of the half-dozen
    full-size intermediates of the autograd graph, which made forward + backward about twice as
    fast on a CPU than the same formula through autograd (see benchmarks/bench_losses.py for the
    comparison with the authors' formulation). First derivatives only.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, ratio: float, scale: float) -> Tensor:  # type: ignore[override]
        p = torch.softmax(logits, dim=1)
        # max().indices: the same first-maximum argmax as argmax(), several times faster on CPU
        weights = _pixel_weights_from_argmax(p.max(dim=1).indices, p.shape[1], ratio).to(p.dtype)
        square_sum = _square_sum_over_classes(p)
        ctx.save_for_backward(p, square_sum, weights)
        ctx.scale = scale
        return -scale * (square_sum * weights).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        p, square_sum, weights = ctx.saved_tensors
        coefficient = (-2.0 * ctx.scale) * grad_output * weights  # (B, H, W)
        grad = p - square_sum.unsqueeze(1)
        return grad.mul_(p).mul_(coefficient.unsqueeze(1)), None, None


def iw_max_square(logits: Tensor, ratio: float = IW_RATIO, faithful: bool = False) -> Tensor:
    """Image-wise weighted MaxSquare: ``-(k/(B·C)) · Σ_{b,n} w_n Σ_c p²_{b,c,n}``.

    ``w_n`` is the detached weight of pixel n's argmax class in its own image
    (:func:`iw_class_weights`), so a batch gives the mean of the single-image losses. ``k = 1``
    with ``faithful=True`` (the authors' constant: no ½, so ratio 0 gives 2 × MaxSquare) and
    ``k = ½`` by default (ratio 0 gives exactly :func:`max_square`). Any batch size, no host sync.

    Args:
        logits: raw scores of the target images (main head).
        ratio: α, the authors' ``--IW_ratio`` (0.2).
        faithful: use the authors' constant (twice the default).
    Shape:
        (B, C, H, W) -> scalar.
    Returns:
        scalar loss (first-order differentiable w.r.t. ``logits``).
    """
    _check_logits(logits)
    b, c = logits.shape[:2]
    k = 1.0 if faithful else 0.5
    return _ImageWiseSquareSum.apply(_full_precision(logits), float(ratio), k / (b * c))


def source_cross_entropy(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy with ignore -1, averaged over the non-ignored pixels.

    Unlike ``F.cross_entropy(..., ignore_index=-1)``, a batch where every pixel is ignored gives 0
    (with a zero gradient, still connected to the graph) instead of NaN, without a host sync.

    Args:
        logits: raw scores.
        label: integer class map, -1 = ignore; other values must lie in [0, C).
    Shape:
        logits (B, C, H, W), label (B, H, W) -> scalar.
    Returns:
        scalar loss.
    """
    _check_logits(logits)
    if label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"label: expected shape {tuple(logits.shape[:1] + logits.shape[2:])} (B, H, W) to match logits "
            f"{tuple(logits.shape)}, got {tuple(label.shape)}"
        )
    label = label.long()
    total = F.cross_entropy(_full_precision(logits), label, ignore_index=IGNORE_INDEX, reduction="sum")
    num_valid = (label != IGNORE_INDEX).sum().clamp_min(1)
    return total / num_valid


@torch.no_grad()
def hard_pseudo_label(logits: Tensor, threshold: float = MULTI_THRESHOLD) -> Tensor:
    """Argmax pseudo-labels where the top probability exceeds ``threshold``, else -1.

    Args:
        logits: raw scores.
        threshold: keep a pixel iff ``max_c p > threshold``.
    Shape:
        (B, C, H, W) -> (B, H, W) int64.
    Returns:
        detached label map.
    """
    confidence, label = softmax_probabilities(logits).max(dim=1)
    return torch.where(confidence > threshold, label, torch.full_like(label, IGNORE_INDEX))


@torch.no_grad()
def fused_pseudo_label(main_logits: Tensor, aux_logits: Tensor, threshold: float = MULTI_THRESHOLD) -> Tensor:
    """Multi-level pseudo-labels: argmax of ``(softmax(main) + softmax(aux)) / 2`` where either
    head's top probability exceeds ``threshold``, else -1.

    Args:
        main_logits: main-head (layer6) scores.
        aux_logits: auxiliary-head (layer5) scores, same shape.
        threshold: δ (0.95 in the README's Multi command).
    Shape:
        (B, C, H, W), (B, C, H, W) -> (B, H, W) int64.
    Returns:
        detached label map.
    """
    _check_logits(aux_logits, "aux_logits")
    if main_logits.shape != aux_logits.shape:
        raise ValueError(
            f"main_logits {tuple(main_logits.shape)} and aux_logits {tuple(aux_logits.shape)} differ in shape")
    p_main = softmax_probabilities(main_logits)
    p_aux = softmax_probabilities(aux_logits)
    label = ((p_main + p_aux) / 2).max(dim=1).indices
    keep = (p_main.amax(dim=1) > threshold) | (p_aux.amax(dim=1) > threshold)
    return torch.where(keep, label, torch.full_like(label, IGNORE_INDEX))


def multi_level_guidance(
    main_logits: Tensor, aux_logits: Tensor, threshold: float = MULTI_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """Multi-level self-produced guidance: the aux head learns the fused, confident pseudo-labels.

    The loss is the aux head's cross-entropy against :func:`fused_pseudo_label` (mean over kept
    pixels; 0 when none is kept). No gradient flows through the pseudo-labels, nor into the main
    head. The trainer weights it by λ_seg·λ_T. Introduced in notebook ``04_adaptation``.

    Args:
        main_logits: main-head scores of the target images.
        aux_logits: aux-head scores, same shape.
        threshold: δ.
    Shape:
        (B, C, H, W), (B, C, H, W) -> (scalar, (B, H, W) int64).
    Returns:
        (loss, pseudo_label); ``(pseudo_label >= 0).float().mean()`` is the kept fraction.
    """
    pseudo_label = fused_pseudo_label(main_logits, aux_logits, threshold)
    return source_cross_entropy(aux_logits, pseudo_label), pseudo_label
