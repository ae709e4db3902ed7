"""Gradient analysis of entropy minimisation vs Maximum Squares: analytic curves and measured shares.

The paper (Chen et al., ICCV 2019, §3) argues that the entropy's gradient with respect to the
probability grows without bound as ``p → 1`` (``log((1-p)/p)`` in the binary case), so easy,
already-confident pixels dominate training, while the MaxSquare gradient ``-(2p-1)`` is linear and
bounded. This module makes that argument checkable:

- **analytic curves** (:func:`binary_gradient_curves`, :func:`multiclass_gradient_curves`): the
  per-pixel gradients of both losses as functions of the predicted class's probability, with
  respect to that probability *and* with respect to its logit (what SGD applies to the network),
  obtained by autograd through :mod:`maxsq_lib.losses` and documented in closed form;
- **measurements** (:func:`gradient_shares`): on real logits, how the total gradient norm is
  shared between confidence bins and predicted classes, for entropy, MaxSquare and MaxSquare+IW,
  with respect to the logits and to the probabilities, beside the share of pixels;
- the **image-wise weights** as maps (:func:`iw_weight_maps`);
- the **dose** of a target loss at the starting point (:func:`dose_at_start`) and the
  **calibration** of predictions (:func:`calibration_bins`).

Notebook ``03_gradient_analysis`` introduces the curves and shares; their figures are drawn by
:mod:`maxsq_lib.course.plots.gradients`.

Per-pixel losses used by the curves: ``H(p) = -Σ_c p_c log p_c`` (entropy) and
``S(p) = -½ Σ_c p_c²`` (MaxSquare); the library's batch losses are these divided by ``C·H·W`` (and
``B``), which the curves undo so that the numbers are per pixel.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import losses
from ..engine.probe import PROBE_BINS
from . import results

LOSS_NAMES: tuple[str, ...] = ("entropy", "maxsquare", "maxsquare_iw")
"""Losses :func:`gradient_shares` knows: MinEnt, MaxSquare, image-wise weighted MaxSquare."""

DEFAULT_BINS: tuple[float, ...] = PROBE_BINS
"""Default edges of the max-probability bins of :func:`gradient_shares` (those the training-time
probe uses, so notebook 03's step-0 shares and notebook 05's shares during adaptation line up)."""

LOSS_LABELS: dict[str, str] = {"entropy": "entropy (MinEnt)", "maxsquare": "MaxSquare",
                               "maxsquare_iw": "MaxSquare + IW"}
"""Display names of the losses in the figures."""

LOSS_METHOD: dict[str, str] = {"entropy": "minent", "maxsquare": "maxsquare", "maxsquare_iw": "maxsquare_iw"}
"""The method (:mod:`maxsq_lib.methods`) whose target loss each loss here is (its figure colour)."""

_CURVE_KEYS: tuple[str, ...] = ("entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz")


# ----------------------------------------------------------------------------------------------
# analytic curves (autograd through the library's losses)
# ----------------------------------------------------------------------------------------------


def _check_probabilities(p: np.ndarray, name: str = "p") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of probabilities, got shape {p.shape}")
    if not np.all((p > 0.0) & (p < 1.0)):
        raise ValueError(f"{name}: probabilities must lie in the open interval (0, 1) "
                         f"(got min {p.min():.6g}, max {p.max():.6g})")
    return p


def multiclass_gradient_curves(p_max: np.ndarray, num_classes: int) -> dict[str, np.ndarray | int]:
    """Per-pixel gradients of entropy and MaxSquare for one class of a C-class softmax.

    The pixel has probability ``p`` on its predicted class and the other ``C-1`` classes share
    ``1-p`` evenly. The curves are computed by autograd through :func:`maxsq_lib.losses.entropy`
    and :func:`maxsq_lib.losses.max_square` (default scale) on logits ``z_k = log p_k`` built from
    ``p``, then multiplied by ``C·N`` to undo the library's mean, so they are the gradients of the
    per-pixel losses ``H = -Σ p_c log p_c`` and ``S = -½ Σ p_c²``. Closed forms:

    - w.r.t. ``p`` along the even-share path (the binary ``d/dp`` when C = 2):
      ``dH/dp = log((1-p) / ((C-1)·p))`` (unbounded as p → 1) and
      ``dS/dp = -(p - (1-p)/(C-1))`` (linear, ``-(2p-1)`` for C = 2);
    - w.r.t. the predicted class's logit ``z`` (the others fixed), ``dp/dz = p(1-p)`` times the
      above: ``dH/dz = -p(1-p)·log((C-1)·p/(1-p))`` and ``dS/dz = -p(1-p)·(p - (1-p)/(C-1))``;
      both vanish at ``p = 1/C`` (uniform) and as p → 1.

    Negative values mean that increasing p (or z) decreases the loss. Introduced in notebook
    ``03_gradient_analysis``.

    Args:
        p_max: probabilities of the predicted class, each in (0, 1).
        num_classes: C ≥ 2.
    Shape:
        (N,) -> each gradient (N,).
    Returns:
        ``{"p", "entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz"}`` float64 arrays and
        ``"num_classes"``.
    """
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    c = int(num_classes)
    p_np = _check_probabilities(p_max, "p_max")
    n = p_np.size
    out: dict[str, np.ndarray | int] = {"p": p_np.copy(), "num_classes": c}
    for name, loss in (("entropy", losses.entropy), ("maxsquare", losses.max_square)):
        # w.r.t. p: logits as a differentiable function of p (the even-share path)
        p = torch.tensor(p_np, dtype=torch.float64, requires_grad=True)
        logits = _even_share_logits(p, c)
        per_pixel_total = loss(logits) * (c * n)
        (grad_p,) = torch.autograd.grad(per_pixel_total, p)
        # w.r.t. the predicted class's logit, the other logits held fixed
        z = _even_share_logits(p.detach(), c).requires_grad_(True)
        (grad_z,) = torch.autograd.grad(loss(z) * (c * n), z)
        out[f"{name}_dp"] = grad_p.numpy()
        out[f"{name}_dz"] = grad_z[0, 0, 0].numpy()
    return out


def _even_share_logits(p: Tensor, num_classes: int) -> Tensor:
    """Logits whose softmax puts ``p`` on class 0 and ``(1-p)/(C-1)`` on every other class.

    Shape: (N,) -> (1, C, 1, N) (one row of N pixels).
    """
    other = torch.log((1.0 - p) / (num_classes - 1))
    rows = [torch.log(p)] + [other] * (num_classes - 1)
    return torch.stack(rows).reshape(1, num_classes, 1, p.shape[0])


def binary_gradient_curves(p: np.ndarray | Sequence[float]) -> dict[str, np.ndarray | int]:
    """Per-pixel gradients of entropy and MaxSquare in the binary case (two classes, ``p`` and ``1-p``).

    The C = 2 case of :func:`multiclass_gradient_curves` (autograd through the library's losses):
    ``p`` is the probability of the class whose logit ``z`` is differentiated (class 0 of the
    logits, the predicted class where ``p > 0.5``), ``z = log(p/(1-p))`` against the other class.
    Closed forms: ``dH/dp = log((1-p)/p)``, ``dS/dp = -(2p-1)``, ``dH/dz = -p(1-p)·log(p/(1-p))``,
    ``dS/dz = -p(1-p)·(2p-1)``; negative where p > 0.5: raising the predicted class's probability
    lowers both losses. Introduced in notebook ``03_gradient_analysis``; the course figure
    ``gradient_curves.png`` draws them (:func:`maxsq_lib.course.plots.gradients.gradient_curves`).

    Args:
        p: probabilities of that class, each in (0, 1) (a sequence or a 1-D array).
    Shape:
        (N,) -> each gradient (N,).
    Returns:
        as :func:`multiclass_gradient_curves` with ``num_classes = 2``.
    """
    return multiclass_gradient_curves(p, 2)


def gradient_magnitude_at(curves: dict, confidence: float) -> dict[str, float]:
    """``|gradient|`` of every curve at one probability, computed exactly (not interpolated).

    Args:
        curves: a result of :func:`binary_gradient_curves` or :func:`multiclass_gradient_curves`.
        confidence: the probability of the predicted class, in (0, 1).
    Returns:
        ``{"entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz"}`` -> magnitude.
    """
    if "num_classes" not in curves:
        raise ValueError("curves: expected the result of binary_gradient_curves or "
                         "multiclass_gradient_curves (no 'num_classes' key)")
    point = multiclass_gradient_curves(np.array([confidence]), int(curves["num_classes"]))
    return {key: float(abs(point[key][0])) for key in _CURVE_KEYS}


def high_low_ratio(curves: dict, high: float = 0.95, low: float = 0.6) -> dict[str, float]:
    """Ratio of the gradient magnitude at high vs low confidence, per loss and per variable.

    A ratio above 1 means a pixel at confidence ``high`` gets a larger gradient than one at
    ``low``. Binary closed forms at (0.95, 0.6): entropy w.r.t. p ``log 19 / log 1.5 ≈ 7.3``,
    MaxSquare w.r.t. p ``0.9 / 0.2 = 4.5``; w.r.t. the logit about 1.44 and 0.89.

    Args:
        curves: a result of :func:`binary_gradient_curves` or :func:`multiclass_gradient_curves`
            (only its ``num_classes`` is used; the values are computed exactly at both points).
        high: the high confidence, in (0, 1).
        low: the low confidence, in (0, 1); must give a non-zero gradient (not ``1/C``).
    Returns:
        ``{"entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz"}`` -> ratio.
    """
    at_high = gradient_magnitude_at(curves, high)
    at_low = gradient_magnitude_at(curves, low)
    if any(v == 0.0 for v in at_low.values()):
        raise ValueError(f"low={low}: the gradient is zero there (uniform prediction); pick another")
    return {key: at_high[key] / at_low[key] for key in _CURVE_KEYS}


def gradient_peaks(curves: dict) -> dict[str, float]:
    """The probability on the curve's grid where each gradient's magnitude is largest.

    Useful for the logit gradients, which vanish at both ends (``1/C`` and 1) and peak in between;
    the probability gradients of entropy peak at the grid's end (they are unbounded).

    Args:
        curves: a result of :func:`binary_gradient_curves` or :func:`multiclass_gradient_curves`.
    Returns:
        ``{"entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz"}`` -> p at the peak.
    """
    p = np.asarray(curves["p"])
    return {key: float(p[int(np.argmax(np.abs(curves[key])))]) for key in _CURVE_KEYS}


# ----------------------------------------------------------------------------------------------
# measured gradients on model outputs
# ----------------------------------------------------------------------------------------------


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        got = (f"shape {tuple(logits.shape)}, dtype {logits.dtype}" if isinstance(logits, Tensor)
               else type(logits).__name__)
        raise ValueError(f"logits: expected floating-point logits of shape (B, C, H, W), got {got}")


def entropy_from_probs(probs: Tensor) -> Tensor:
    """MinEnt as a function of the probabilities: ``Σ -p·log p / (B·C·H·W)``.

    Equals :func:`maxsq_lib.losses.entropy` of the logits whose softmax is ``probs`` (tested);
    differentiable w.r.t. ``probs`` (``∂/∂p = -(log p + 1) / (B·C·H·W)``). Probabilities that
    underflowed to 0 are clamped inside the log, so the gradient stays finite.

    Args:
        probs: probabilities summing to 1 over dim 1.
    Shape:
        (B, C, H, W) -> scalar.
    Returns:
        scalar loss.
    """
    tiny = torch.finfo(probs.dtype).tiny
    return -(probs * probs.clamp_min(tiny).log()).sum() / probs.numel()


def iw_max_square_from_probs(probs: Tensor, pixel_weights: Tensor) -> Tensor:
    """Image-wise weighted MaxSquare as a function of the probabilities (default scale, with ½).

    ``-(1/(2·B·C)) · Σ_{b,n} w_n Σ_c p²``; with ``w = losses.iw_pixel_weights(logits)`` it equals
    :func:`maxsq_lib.losses.iw_max_square` of those logits (tested). The weights are constants.

    Args:
        probs: probabilities summing to 1 over dim 1.
        pixel_weights: image-wise pixel weights.
    Shape:
        probs (B, C, H, W), pixel_weights (B, H, W) -> scalar.
    Returns:
        scalar loss.
    """
    b, c = probs.shape[:2]
    square_sum = (probs * probs).sum(dim=1)
    return -0.5 * (square_sum * pixel_weights.to(probs.dtype)).sum() / (b * c)


def _loss_of_logits(name: str, ratio: float):
    if name == "entropy":
        return losses.entropy
    if name == "maxsquare":
        return losses.max_square
    if name == "maxsquare_iw":
        return lambda z: losses.iw_max_square(z, ratio=ratio)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")


def _loss_of_probs(name: str, logits: Tensor, ratio: float):
    if name == "entropy":
        return entropy_from_probs
    if name == "maxsquare":
        return losses.max_square_from_probs
    if name == "maxsquare_iw":
        weights = losses.iw_pixel_weights(logits, ratio=ratio)
        return lambda p: iw_max_square_from_probs(p, weights)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")


def pixel_gradient_norms(logits: Tensor, loss: str = "entropy", wrt: str = "logits",
                         ratio: float = losses.IW_RATIO, dtype: torch.dtype = torch.float64) -> Tensor:
    """Per-pixel L2 norm over the classes of a loss's gradient, w.r.t. the logits or the probabilities.

    ``wrt="logits"``: autograd of the library's loss (:func:`maxsq_lib.losses.entropy`,
    ``max_square``, ``iw_max_square``) w.r.t. its input logits. ``wrt="probs"``: the loss written
    as a function of ``p = softmax(logits)`` (:func:`entropy_from_probs`,
    :func:`maxsq_lib.losses.max_square_from_probs`, :func:`iw_max_square_from_probs`),
    differentiated w.r.t. ``p``; the gradient is then projected on the simplex (its mean over the
    classes removed), because ``p`` can only move with ``Σ_c p_c = 1``: the removed component
    changes nothing that softmax can produce. For two classes this gives ``|dL/dp| / √2`` with
    the binary ``dL/dp`` of :func:`binary_gradient_curves`.

    Computed image by image (bounded memory); the result is the gradient of the *batch* loss
    (each image's gradient divided by B), since every loss here is the mean of its single-image
    values. Computed in ``dtype`` on the logits' device (float32 agrees with float64 to about 1e-6
    relative, tested).

    Args:
        logits: raw scores (e.g. the main head on target images), detached or not.
        loss: ``"entropy"``, ``"maxsquare"`` or ``"maxsquare_iw"``.
        wrt: ``"logits"`` or ``"probs"``.
        ratio: the IW exponent α (only for ``maxsquare_iw``).
        dtype: the floating-point type of the computation.
    Shape:
        (B, C, H, W) -> (B, H, W).
    Returns:
        norms in ``dtype``, on the logits' device.
    """
    _check_logits(logits)
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSS_NAMES}")
    if wrt not in ("logits", "probs"):
        raise ValueError(f"wrt: expected 'logits' or 'probs', got {wrt!r}")
    batch = logits.shape[0]
    norms = []
    for image_logits in logits.detach().to(dtype).split(1):
        if wrt == "logits":
            leaf = image_logits.clone().requires_grad_(True)
            value = _loss_of_logits(loss, ratio)(leaf)
        else:
            leaf = torch.softmax(image_logits, dim=1).requires_grad_(True)
            value = _loss_of_probs(loss, image_logits, ratio)(leaf)
        (grad,) = torch.autograd.grad(value, leaf)
        if wrt == "probs":
            grad = grad - grad.mean(dim=1, keepdim=True)
        norms.append(grad.norm(dim=1) / batch)
    return torch.cat(norms)


def _bin_index(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: ``edges[k] <= x < edges[k+1]``, the last bin closed at its right end."""
    index = np.searchsorted(edges, confidence, side="right") - 1
    return np.clip(index, 0, len(edges) - 2)


def _check_bins(bins: Sequence[float], num_classes: int) -> np.ndarray:
    """Validated bin edges: strictly increasing, from at most 1/C (the smallest max probability) to 1."""
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins: expected at least two strictly increasing edges, got {list(bins)}")
    if edges[0] > 1.0 / num_classes or edges[-1] < 1.0:
        raise ValueError(f"bins: the edges must span [1/C, 1] = [{1.0 / num_classes:.4g}, 1] so that every "
                         f"pixel's max probability falls in a bin, got {list(bins)}")
    return edges


def _shares(weights: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """Fraction of ``weights.sum()`` falling in each group. (P,), (P,) -> (num_groups,)."""
    total = weights.sum()
    if not total > 0:
        raise ValueError("the total gradient norm is zero (every pixel is uniform?): shares undefined")
    return np.bincount(groups, weights=weights, minlength=num_groups) / total


def gradient_shares(logits: Tensor, losses: Sequence[str] = LOSS_NAMES,
                    bins: Sequence[float] = DEFAULT_BINS, ratio: float = 0.2,
                    dtype: torch.dtype = torch.float32) -> dict:
    """Share of the total per-pixel gradient norm from each confidence bin and each predicted class.

    For each loss, the per-pixel gradient norm ``g_n`` (:func:`pixel_gradient_norms`, w.r.t. the
    logits and w.r.t. the probabilities) is summed over the pixels whose max probability falls in
    each bin (``edges[k] <= max_c p < edges[k+1]``, the last bin includes 1) and over the pixels of
    each predicted class (argmax), then divided by ``Σ_n g_n``. The share of *pixels* in each bin
    and class is returned beside it: a loss favours a group when its gradient share exceeds its
    pixel share. Introduced in notebook ``03_gradient_analysis``.

    Memory: the gradients are taken image by image on the logits' device, so besides the logits
    themselves (``B·C·H·W`` numbers) it holds a few single-image tensors of ``C·H·W``. At full
    resolution of the paper profile that is too much for the host; pass logits sampled on a grid
    (:func:`target_logits`, :func:`grid_stride`): the shares on a stride-s grid equal the full
    computation's within sampling error (tested), since every loss here is a sum of per-pixel terms
    (IW's weights, taken from the sampled argmax histogram, change by a constant factor that cancels).

    Args:
        logits: raw scores of target images (main head), full resolution or sampled on a grid.
        losses: any of ``"entropy"``, ``"maxsquare"``, ``"maxsquare_iw"``.
        bins: increasing edges spanning [0, 1].
        ratio: the IW exponent α of ``maxsquare_iw``.
        dtype: the floating-point type of the computation (float32 agrees with float64 to 1e-5
            on every share, tested).
    Shape:
        logits (B, C, H, W); with K = len(bins) - 1 the arrays below are (K,) per bin, (C,) per
        class.
    Returns:
        ``{"bin_edges": (K+1,), "num_pixels": int, "pixels": {"bin", "class"},
        "logits": {loss: {"bin", "class", "total_norm", "mean_norm"}}, "probs": {same}}`` as numpy
        arrays and floats; ``total_norm`` is ``Σ_n g_n`` for the batch loss at the library's scale,
        ``mean_norm`` its mean per pixel.
    """
    from .. import losses as loss_module  # the argument shadows the module name

    _check_logits(logits)
    edges = _check_bins(bins, logits.shape[1])
    unknown = [name for name in losses if name not in LOSS_NAMES]
    if unknown or not losses:
        raise ValueError(f"losses: expected a non-empty subset of {LOSS_NAMES}, got {list(losses)}")
    num_classes = logits.shape[1]
    with torch.no_grad():
        probs = loss_module.softmax_probabilities(logits.detach().to(dtype))
        confidence, predicted = probs.max(dim=1)
    confidence_np = confidence.cpu().double().numpy().ravel()
    predicted_np = predicted.cpu().numpy().ravel()
    bin_of_pixel = _bin_index(confidence_np, edges)
    num_bins = len(edges) - 1
    ones = np.ones_like(confidence_np)
    result: dict = {
        "bin_edges": edges,
        "num_pixels": int(confidence_np.size),
        "pixels": {"bin": _shares(ones, bin_of_pixel, num_bins),
                   "class": _shares(ones, predicted_np, num_classes)},
        "logits": {},
        "probs": {},
    }
    for wrt in ("logits", "probs"):
        for name in losses:
            norms = pixel_gradient_norms(logits, name, wrt, ratio, dtype).cpu().double().numpy().ravel()
            result[wrt][name] = {
                "bin": _shares(norms, bin_of_pixel, num_bins),
                "class": _shares(norms, predicted_np, num_classes),
                "total_norm": float(norms.sum()),
                "mean_norm": float(norms.mean()),
            }
    return result


MAX_PIXELS_PER_IMAGE = 32_768
"""Pixel budget per image of :func:`target_logits`: MiniCity's 128×64 maps are kept whole; the paper
profile's 1024×512 ones are sampled on every 4th row and column (32,768 pixels)."""


def grid_stride(height: int, width: int, max_pixels: int = MAX_PIXELS_PER_IMAGE) -> int:
    """The smallest stride ``s`` whose grid ``[::s, ::s]`` keeps at most ``max_pixels`` pixels.

    Args:
        height, width: the logit map's size.
        max_pixels: the budget per image (≥ 1).
    Returns:
        s ≥ 1 (1: the whole map fits).
    """
    if height < 1 or width < 1 or max_pixels < 1:
        raise ValueError(f"grid_stride: expected positive sizes, got height={height}, width={width}, "
                         f"max_pixels={max_pixels}")
    stride = 1
    while -(-height // stride) * -(-width // stride) > max_pixels:
        stride += 1
    return stride


def logit_bytes(num_images: int, height: int, width: int, num_classes: int, stride: int = 1,
                dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one ``(B, C, H, W)`` tensor of logits sampled on a stride-``stride`` grid:
    pixels × classes × bytes per number. The measurement holds the logits and, per image, a few
    tensors of that image's size. Introduced in notebook ``03_gradient_analysis``.

    Args:
        num_images: B.
        height, width: the full logit map's size.
        num_classes: C.
        stride: the grid stride (:func:`grid_stride`).
        dtype: the floating-point type.
    Returns:
        the size in bytes.
    """
    pixels = -(-height // stride) * -(-width // stride)
    return num_images * pixels * num_classes * torch.empty((), dtype=dtype).element_size()


def target_logits(model: torch.nn.Module, images: Tensor, device: torch.device | str = "cpu",
                  max_pixels: int = MAX_PIXELS_PER_IMAGE, chunk: int = 8) -> tuple[Tensor, int]:
    """Main-head logits of target images, sampled on a fixed grid, in float32 on ``device``.

    The images go through the model ``chunk`` at a time and each logit map is cut to every
    ``s``-th row and column (:func:`grid_stride`) before the next chunk, so the full-resolution maps
    never coexist: at the paper profile 64 maps of 1024×512 with 19 classes would be 2.5 GB in
    float32 (5.1 GB in float64), the stride-4 grid keeps 159 MB. Introduced in notebook
    ``03_gradient_analysis``.

    Args:
        model: the segmentation model, on ``device``, in eval mode.
        images: preprocessed images (on any device).
        device: where the model runs and the logits stay.
        max_pixels: the pixel budget per image.
        chunk: images per forward pass.
    Shape:
        images (B, 3, H, W) -> logits (B, C, ceil(H/s), ceil(W/s)).
    Returns:
        ``(logits, s)``.
    """
    stride = grid_stride(images.shape[-2], images.shape[-1], max_pixels)
    parts = []
    with torch.no_grad():
        for start in range(0, images.shape[0], chunk):
            out = model(images[start:start + chunk].to(device))
            main = out[0] if isinstance(out, (tuple, list)) else out
            parts.append(main[..., ::stride, ::stride].float())
    return torch.cat(parts), stride


def compare_shares(above: Mapping[str, float], study: results.Study | None = None, seed: int = 0,
                   profile: str = "cpu") -> dict[str, dict]:
    """Print one line per quantity: the learner's share above max p 0.9 (pixels, and each loss's
    logit gradient) beside the study's mean ± std over its seeds, agreeing or differing by the
    course's one rule (:func:`maxsq_lib.course.results.agreement`). The study's values are its
    training probe at iteration 0 (:attr:`~maxsq_lib.course.results.RunRecord.start_shares`) of
    the runs ``minent``, ``maxsquare`` and ``maxsquare_iw`` (:data:`LOSS_METHOD`); the pixels are
    those of the first of them that has them (all three start from the same model). Introduced in
    notebook ``03_gradient_analysis``.

    Args:
        above: a :func:`share_above` result (its ``pixels`` and ``logits/<loss>`` entries).
        study: the reference :class:`~maxsq_lib.course.results.Study` (default the committed one,
            :func:`~maxsq_lib.course.results.load_committed_study`).
        seed: the seed of the learner's model (named in the line).
        profile: the learner's profile (named in the line).
    Returns:
        quantity (``pixels`` or a loss of :data:`LOSS_NAMES`) -> the :func:`results.agreement` result
        (fractions; ``agrees`` None where a side has no value).
    """
    study = results.load_committed_study() if study is None else study
    pixels = next((v for v in (results.start_share_values(study, LOSS_METHOD[n], "pixels") for n in LOSS_NAMES)
                   if v), {})
    references = {"pixels": pixels, **{n: results.start_share_values(study, LOSS_METHOD[n], "logit_gradient")
                                       for n in LOSS_NAMES}}
    verdicts = {}
    for name, ref in references.items():
        key = name if name == "pixels" else f"logits/{name}"
        if key not in above:
            continue
        what = "pixels" if name == "pixels" else f"{LOSS_LABELS[name]}'s logit gradient"
        verdicts[name] = results.agreement(f"share of {what} above max p 0.9 (%):", {seed: above[key]}, ref,
                                           profile, signed=False)
    return verdicts


def share_above(shares: dict, threshold: float = 0.9) -> dict[str, float]:
    """Share of pixels, and of each loss's gradient norm, from pixels with max p above a bin edge.

    Args:
        shares: a result of :func:`gradient_shares`.
        threshold: one of its bin edges.
    Returns:
        ``{"pixels": f, "logits/<loss>": f, "probs/<loss>": f}``.
    """
    edges = np.asarray(shares["bin_edges"])
    matches = np.flatnonzero(np.isclose(edges, threshold))
    if matches.size == 0:
        raise ValueError(f"threshold={threshold} is not a bin edge; edges are {edges.tolist()}")
    first = int(matches[0])
    out = {"pixels": float(shares["pixels"]["bin"][first:].sum())}
    for wrt in ("logits", "probs"):
        for name, entry in shares[wrt].items():
            out[f"{wrt}/{name}"] = float(entry["bin"][first:].sum())
    return out


def iw_weight_maps(logits: Tensor, ratio: float = 0.2) -> np.ndarray:
    """Image-wise weight of every pixel (its argmax class's ``w_c``), as maps.

    Wraps :func:`maxsq_lib.losses.iw_pixel_weights`: ``w_c = 1 / max(N_c^α · N^(1-α), 1)`` from
    each image's argmax histogram. Introduced in notebook ``03_gradient_analysis``.

    Args:
        logits: raw scores.
        ratio: α.
    Shape:
        (B, C, H, W) -> (B, H, W).
    Returns:
        float64 numpy weights.
    """
    return losses.iw_pixel_weights(logits.detach(), ratio=ratio).cpu().numpy()


def start_batches(cfg, batches: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The first ``batches`` source and target train batches at the run's batch sizes, as
    :func:`dose_at_start` takes them (``results.md``'s dose table and the lab measure on these).

    Returns:
        ``[(source images, source labels, target images), ...]``.
    """
    from .notebook import batch, dataset

    source, target = dataset(cfg, "source"), dataset(cfg, "target")
    bs, tbs = cfg.adapt.batch_size, cfg.adapt.target_batch_size
    return [(*batch(source, range(k * bs, (k + 1) * bs))[:2], batch(target, range(k * tbs, (k + 1) * tbs))[0])
            for k in range(min(batches, len(source) // bs, len(target) // tbs))]


def dose_at_start(model: torch.nn.Module, batches, methods: Sequence[str], *, lambda_seg: float = 0.1,
                  multi: bool = True, **strategy_kwargs) -> dict:
    """The dose of each target loss at the starting point: ‖∇_θ L_T‖ / ‖∇_θ CE_source‖ at λ_T = 1.

    The loop's update is Adam's step on the sum of both gradients, so this ratio (times λ_T) is how
    strongly the target loss pulls against the source cross-entropy when adaptation starts; the
    logit-gradient ratio to MaxSquare is the part that comes from the loss's shape and constants.
    Introduced in notebook ``04_adaptation``.

    Args:
        model: the starting point (copied; BatchNorm in train mode as in the loop).
        batches: ``(source_images, source_labels, target_images)`` tuples.
        methods: target-loss methods (:func:`maxsq_lib.engine.strategies.make_strategy` names).
        lambda_seg: the aux head's weight in the source CE when ``multi``.
        multi: the source CE includes the aux head (``source.multi``).
        strategy_kwargs: further :func:`make_strategy` arguments (``faithful_scale``, ...).
    Shape:
        source_images, target_images: (B, 3, H, W); source_labels: (B, H, W).
    Returns:
        ``{"batches": n, "methods": {method: {"ratio", "ratio_min", "ratio_max",
        "logit_ratio_to_maxsquare"}}}`` (means over the batches; ratios at λ_T = 1).
    """
    import copy

    from ..engine.strategies import logit_gradient_norm, make_strategy
    from ..models import unwrap_model

    net = copy.deepcopy(unwrap_model(model))
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]

    def grad_norm(loss: Tensor) -> float:
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

    ratios: dict[str, list[float]] = {m: [] for m in methods}
    logit_ratios: dict[str, list[float]] = {m: [] for m in methods}
    reference = make_strategy("maxsquare", lambda_target=1.0, lambda_seg=lambda_seg, **strategy_kwargs)
    strategies = {m: make_strategy(m, lambda_target=1.0, lambda_seg=lambda_seg, **strategy_kwargs)
                  for m in methods}
    count = 0
    for source_images, source_labels, target_images in batches:
        main, aux = net(source_images, with_aux=True)
        source_ce = losses.source_cross_entropy(main, source_labels)
        if multi:
            source_ce = source_ce + lambda_seg * losses.source_cross_entropy(aux, source_labels)
        g_source = grad_norm(source_ce)
        with torch.no_grad():
            t_main, t_aux = net(target_images, with_aux=True)
        g_reference = float(logit_gradient_norm(reference, t_main, t_aux))
        for m, strategy in strategies.items():
            loss, _ = strategy(*net(target_images, with_aux=True))
            ratios[m].append(grad_norm(loss) / g_source)
            logit_ratios[m].append(float(logit_gradient_norm(strategy, t_main, t_aux)) / g_reference)
        count += 1
    return {"batches": count, "methods": {
        m: {"ratio": float(np.mean(ratios[m])), "ratio_min": float(np.min(ratios[m])),
            "ratio_max": float(np.max(ratios[m])),
            "logit_ratio_to_maxsquare": float(np.mean(logit_ratios[m]))} for m in methods}}


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Reliability of predictions: accuracy against confidence in equal-width bins, and the
    expected calibration error ``ECE = Σ_b (n_b / N) |acc_b − conf_b|``. Introduced in notebook
    ``05_evaluation``.

    Args:
        confidence: max softmax probability of each labelled pixel, in [0, 1].
        correct: whether each pixel's prediction equals its label (same shape).
        bins: number of bins over [0, 1].
    Shape:
        confidence, correct: (N,) (any shape; flattened).
    Returns:
        ``{"edges" (bins + 1,), "accuracy" (bins,), "confidence" (bins,), "count" (bins,), "ece"}``;
        empty bins hold NaN accuracy and confidence.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and correct differ in size: {conf.shape} vs {hit.shape}")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)  # 1.0 goes to the last bin
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=hit, minlength=bins) / count
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / count.sum() * np.abs(accuracy[filled] - mean_conf[filled]))) if conf.size else 0.0
    return {"edges": edges, "accuracy": accuracy, "confidence": mean_conf, "count": count, "ece": ece}
