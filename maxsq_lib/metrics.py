"""Segmentation metrics from a confusion matrix: IoU per class, mIoU (incl. the SYNTHIA 16 / 13*
subsets), pixel accuracy, mean pixel accuracy and frequency-weighted IoU.

The protocol is the authors' (docs/authors_code.md §7): one confusion matrix accumulated over the
whole evaluation set (not averaged per image), rows = ground truth, columns = prediction, counting
only pixels whose ground truth is a class ``0 <= gt < C``; ``IoU_c = TP / (row + column - TP)``;
mIoU is the NaN-mean over classes, so a class absent from both ground truth and predictions is
skipped while a class that is only predicted (or only in the ground truth) counts as 0. All values
are fractions in [0, 1], not percent.

Introduced in notebook ``02_source_pretraining`` and used for the result tables in
``05_evaluation``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .labels import IGNORE_INDEX, MIOU_STAR_13_OF_16, SYNTHIA_16, ClassSet, class_set_for

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _as_index_tensor(x: Tensor | np.ndarray, name: str, device: torch.device | None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.ascontiguousarray(x), device=device)
    if t.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name}: expected an integer class map, got dtype {t.dtype}")
    return t.long()


def _confusion_counts(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                      ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Confusion counts plus two tally bins, without a host synchronisation.

    Shape: pred, target (...) with equal shapes -> (C·C + 2,) int64 on their device:
    ``[0, C·C)`` the row-major matrix, ``C·C`` the number of predictions outside [0, C) (any
    target), ``C·C + 1`` the number of pixels whose target is ignored.
    """
    # an array joins the tensor's device
    device = next((x.device for x in (pred, target) if isinstance(x, Tensor)), None)
    pred = _as_index_tensor(pred, "pred", device)
    target = _as_index_tensor(target, "target", device)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target on {target.device}")
    c = int(num_classes)
    bad_pred = (pred < 0) | (pred >= c)
    ignored = (target < 0) | (target >= c) | (target == ignore_index)
    index = torch.where(ignored, c * c + 1, c * target + pred)
    index = torch.where(bad_pred, c * c, index).reshape(-1)
    nbins = c * c + 2
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=nbins)
    # torch.bincount reads its input's max back to the host on accelerators; index_add_ does not
    return torch.zeros(nbins, dtype=torch.long, device=index.device).index_add_(
        0, index, torch.ones_like(index))


def _raise_if_bad_predictions(counts: Tensor, num_classes: int) -> None:
    num_bad = int(counts[num_classes * num_classes])  # the one host read-back
    if num_bad:
        raise ValueError(
            f"{num_bad} predicted values lie outside [0, {num_classes}): predictions must be class "
            f"indices of the {num_classes}-class set (only the target may hold ignore values)")


def confusion_matrix(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Confusion matrix ``M[gt, pred]`` over the pixels whose ground truth is a class.

    Pixels with ``target == ignore_index``, ``target < 0`` or ``target >= C`` are not counted.
    Checking the predictions reads one number back to the host (a sync on a GPU); use
    :class:`ConfusionMatrix` to defer that check to the end of an evaluation.

    Args:
        pred: integer predicted class map (tensor or array); every value must be in [0, C).
        target: integer ground-truth class map of the same shape.
        num_classes: C.
        ignore_index: an extra target value to skip (values outside [0, C) are always skipped).
    Shape:
        (...), (...) -> (C, C).
    Returns:
        int64 matrix on the inputs' device, rows = ground truth, columns = prediction.
    Raises:
        ValueError: a prediction outside [0, C), or shapes that differ.
        TypeError: non-integer inputs.
    """
    counts = _confusion_counts(pred, target, num_classes, ignore_index)
    _raise_if_bad_predictions(counts, num_classes)
    return counts[: num_classes * num_classes].view(num_classes, num_classes)


def _as_matrix(conf: Tensor | np.ndarray) -> Tensor:
    m = torch.as_tensor(conf)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"conf: expected a square (C, C) confusion matrix, got shape {tuple(m.shape)}")
    return m.double()


def per_class_iou(conf: Tensor | np.ndarray) -> Tensor:
    """Intersection over union of every class: ``TP / (row sum + column sum - TP)``.

    Args:
        conf: confusion matrix, rows = ground truth.
    Shape:
        (C, C) -> (C,).
    Returns:
        float64 IoU per class; NaN where the class is absent from both ground truth and predictions.
    """
    m = _as_matrix(conf)
    tp = m.diagonal()
    return tp / (m.sum(dim=0) + m.sum(dim=1) - tp)


def miou(conf: Tensor | np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean IoU: the NaN-mean of :func:`per_class_iou`, optionally over a subset of classes.

    Args:
        conf: confusion matrix (C, C).
        classes: indices of the classes to average (e.g. :data:`MIOU_STAR_13_OF_16`); all if None.
    Returns:
        mIoU as a fraction; NaN if no selected class occurs at all.
    """
    iou = per_class_iou(conf)
    if classes is not None:
        iou = iou[list(classes)]
    return float(torch.nanmean(iou))


def pixel_accuracy(conf: Tensor | np.ndarray) -> float:
    """Fraction of counted pixels predicted correctly (NaN for an empty matrix)."""
    m = _as_matrix(conf)
    return float(m.diagonal().sum() / m.sum())


def mean_pixel_accuracy(conf: Tensor | np.ndarray) -> float:
    """Per-class recall ``TP / row sum``, NaN-averaged over the classes present in the ground truth."""
    m = _as_matrix(conf)
    return float(torch.nanmean(m.diagonal() / m.sum(dim=1)))


def fw_iou(conf: Tensor | np.ndarray) -> float:
    """Frequency-weighted IoU: IoU weighted by each class's share of the ground-truth pixels."""
    m = _as_matrix(conf)
    freq = m.sum(dim=1) / m.sum()
    present = freq > 0
    return float((freq[present] * per_class_iou(m)[present]).sum())


def miou_star_13(conf: Tensor | np.ndarray) -> float:
    """mIoU* over 13 of the 16 SYNTHIA classes (wall, fence, pole dropped); ``conf`` must be 16×16."""
    shape = tuple(torch.as_tensor(conf).shape)
    if shape != (SYNTHIA_16.num_classes,) * 2:
        raise ValueError("conf: the SYNTHIA metrics need a 16x16 confusion matrix "
                         f"(synthia16 class order), got {shape}")
    return miou(conf, MIOU_STAR_13_OF_16)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def summarize(conf: Tensor | np.ndarray, class_set: ClassSet | int | str) -> dict:
    """The metrics of one evaluation as a JSON-friendly dict (floats, NaN written as None).

    Args:
        conf: confusion matrix of the class set (C, C).
        class_set: the :class:`ClassSet`, or its size or name (``"synthia16"`` adds mIoU*).
    Returns:
        ``{"miou", "pixel_accuracy", "mean_pixel_accuracy", "fw_iou", "num_pixels",
        "per_class_iou": {class name: IoU}}`` plus ``"miou_star13"`` for synthia16.
    """
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    m = _as_matrix(conf)
    if m.shape[0] != cs.num_classes:
        raise ValueError(
            f"conf is {m.shape[0]}x{m.shape[0]} but class set {cs.name!r} has {cs.num_classes} classes")
    iou = per_class_iou(m).tolist()
    out = {"miou": _json_float(miou(m)), "pixel_accuracy": _json_float(pixel_accuracy(m)),
           "mean_pixel_accuracy": _json_float(mean_pixel_accuracy(m)), "fw_iou": _json_float(fw_iou(m)),
           "num_pixels": int(m.sum()),
           "per_class_iou": {name: _json_float(v) for name, v in zip(cs.class_names, iou)}}
    if cs.name == SYNTHIA_16.name:
        out["miou_star13"] = _json_float(miou_star_13(m))
    return out


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches without a host sync per batch.

    Out-of-range predictions are tallied on the device and reported (``ValueError``) when
    :attr:`matrix` is read. Introduced in notebook ``02_source_pretraining``.

    Args:
        num_classes: C.
        device: where to keep the counts; None = the device of the first :meth:`update`.
        ignore_index: extra target value to skip (values outside [0, C) are always skipped).
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._device = None if device is None else torch.device(device)
        self._counts: Tensor | None = None

    def update(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        """Add one batch: integer maps of equal shape (pred in [0, C), target with ignore)."""
        counts = _confusion_counts(pred, target, self.num_classes, self.ignore_index)
        if self._counts is None:
            self._counts = torch.zeros_like(counts, device=self._device or counts.device)
        self._counts += counts.to(self._counts.device)

    def reset(self) -> None:
        """Forget every count."""
        if self._counts is not None:
            self._counts.zero_()

    @property
    def matrix(self) -> Tensor:
        """The (C, C) int64 matrix (rows = ground truth); raises ValueError on bad predictions."""
        c = self.num_classes
        if self._counts is None:
            return torch.zeros(c, c, dtype=torch.long, device=self._device)
        _raise_if_bad_predictions(self._counts, c)
        return self._counts[: c * c].view(c, c).clone()

    @property
    def num_ignored(self) -> int:
        """Pixels skipped because their target was not a class."""
        return 0 if self._counts is None else int(self._counts[-1])
