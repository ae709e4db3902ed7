"""Evaluation on a whole split: one confusion matrix, main head, optional flip ensembling.

The protocol is the authors' (docs/authors_code.md §7): the image is resized to the configured size,
the main-head logits come back at that size, the label is resized (nearest) to the same size, and
one confusion matrix is accumulated over the whole split; mIoU is the NaN-mean over the classes of
the active set. ``flip=True`` averages the softmax of the image and of its mirror (mirrored back)
before the argmax. With full-resolution labels (an option, stated in the output) the logits are
upsampled bilinearly to the label size instead.

Besides the labelled metrics, the evaluation returns a label-free score, the mean normalised
prediction entropy (entropy / log C, in [0, 1]), so a reader can see which checkpoint a selection
rule without target labels would pick. Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .. import metrics
from ..labels import ClassSet, class_set_for
from ..models import unwrap_model
from .distributed import DistInfo, all_reduce_sum
from .precision import autocast
from .sampling import loader_options


def predict_probabilities(model: torch.nn.Module, images: Tensor, flip: bool = False,
                          out_size: tuple[int, int] | None = None) -> Tensor:
    """Class probabilities of the main head, optionally flip-ensembled.

    Args:
        model: returns ``(main, aux)`` logits at input resolution.
        images: (B, 3, H, W) network inputs.
        flip: average with the prediction on the mirrored image (mirrored back).
        out_size: ``(H, W)`` to upsample the logits to (bilinear, align_corners=True), or None.
    Shape:
        images (B, 3, H, W) -> (B, C, H', W') float32.
    Returns:
        probabilities summing to 1 over C.
    """

    def probs(x: Tensor) -> Tensor:
        return forward_logits(model, x, with_aux=False, out_size=out_size)[0].softmax(dim=1)

    p = probs(images)
    if flip:
        p = 0.5 * (p + probs(images.flip(-1)).flip(-1))
    return p


def forward_logits(model: torch.nn.Module, images: Tensor, with_aux: bool = False,
                   out_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor | None]:
    """Main (and optionally aux) logits in float32, upsampled to ``out_size`` if it differs.

    Shape:
        images (B, 3, H, W) -> ((B, C, H', W'), (B, C, H', W') or None).
    """

    def resized(logits: Tensor) -> Tensor:
        logits = logits.float()
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=True)
        return logits

    # The aux head is not evaluated; skipping it where the model allows saves a tenth of the pass.
    forward = getattr(unwrap_model(model), "forward", model)
    main_only = not with_aux and "with_aux" in inspect.signature(forward).parameters
    main, aux = model(images, with_aux=False) if main_only else model(images)
    return resized(main), (resized(aux) if with_aux and aux is not None else None)


def normalized_entropy(probs: Tensor) -> Tensor:
    """Per-pixel entropy divided by log C.

    Shape:
        (B, C, H, W) -> (B, H, W) in [0, 1].
    """
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1) / math.log(probs.shape[1])


@dataclass
class EvalResult:
    """A whole-split evaluation.

    Attributes:
        confusion: (C, C) int64 confusion matrix (rows = ground truth).
        summary: ``maxsq_lib.metrics.summarize`` of it (mIoU, pixel accuracy, per-class IoU).
        mean_entropy: label-free score (mean normalised entropy over all pixels).
        images: number of images evaluated.
        flip: whether flip ensembling was used.
        label_resolution: ``"resized"`` (the authors' protocol) or ``"full"``.
    """

    confusion: Tensor
    summary: dict
    mean_entropy: float
    images: int
    flip: bool
    label_resolution: str
    extra: dict = field(default_factory=dict)

    @property
    def miou(self) -> float:
        return self.summary["miou"]

    def to_dict(self) -> dict:
        return {**self.summary, "mean_entropy": self.mean_entropy, "images": self.images,
                "flip": self.flip, "label_resolution": self.label_resolution,
                "confusion": self.confusion.cpu().tolist(), **self.extra}

    def table(self) -> str:
        """A per-class IoU table (percent) with the class names of the active set."""
        lines = [f"{'class':<15} IoU (%)"]
        for name, iou in self.summary["per_class_iou"].items():
            lines.append(f"{name:<15} {'  n/a' if iou is None else f'{100 * iou:5.1f}'}")
        lines.append(f"{'mIoU':<15} {100 * self.miou:5.1f}   ({self.images} images, "
                     f"labels {self.label_resolution}, flip {'on' if self.flip else 'off'})")
        if "miou_star13" in self.summary:
            lines.append(f"{'mIoU* (13)':<15} {100 * self.summary['miou_star13']:5.1f}")
        return "\n".join(lines)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, class_set: ClassSet | int | str, *,
             device: torch.device | str = "cpu", flip: bool = False, batch_size: int = 1,
             limit: int | None = None, workers: int = 0, amp: str = "none", channels_last: bool = False,
             dist: DistInfo | None = None, progress: bool = True, desc: str = "eval",
             subsets: Mapping[str, Collection[str]] | None = None, probe=None) -> EvalResult:
    """Evaluate the main head on a whole split.

    Args:
        model: a DeepLabv2 (or anything returning ``(main, aux)`` logits).
        dataset: items ``(image, label, name)``; labels may be larger than the image
            (full-resolution labels), then logits are upsampled to the label size.
        class_set: the active class set (its size must equal the model's outputs).
        device: where to run.
        flip: flip ensembling (mean of softmaxes).
        batch_size: images per forward pass (labels of one batch must share a size).
        limit: evaluate only the first ``limit`` items.
        workers: DataLoader workers (the profile's ``data.workers`` in the engine); pinned memory
            on CUDA, int16 labels in transit (:func:`maxsq_lib.engine.sampling.loader_options`).
        amp: ``"none"`` (float32), ``"bf16"``/``"fp16"`` autocast for the forward pass, or
            ``"auto"`` (:func:`maxsq_lib.engine.precision.resolve_amp`).
        channels_last: feed channels-last inputs.
        dist: distributed info; each rank evaluates a strided part and the sums are reduced.
        progress: show a tqdm bar.
        subsets: named subsets of the split, as item names (e.g. the ``dev`` and ``test`` halves
            of target val); each gets its own confusion matrix from the same forward passes,
            reported in ``extra["subsets"]``.
        probe: an :class:`maxsq_lib.engine.probe.AdaptationProbe` fed every batch's logits (no
            flip); its result goes to ``extra["probe"]`` (single process only).
    Returns:
        an :class:`EvalResult`.
    """
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    dist = dist or DistInfo()
    if probe is not None and (flip or dist.enabled):
        raise ValueError("evaluate: a probe measures single-process passes without flip ensembling")
    device = torch.device(device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(dist.rank, n, dist.world))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                        **loader_options(workers, device))
    was_training = model.training
    model.eval()
    accumulator = metrics.ConfusionMatrix(cs.num_classes, device=device)
    parts = {name: (set(members), metrics.ConfusionMatrix(cs.num_classes, device=device), [0])
             for name, members in (subsets or {}).items()}
    entropy_sum = torch.zeros((), dtype=torch.float64, device=device)
    pixel_count = torch.zeros((), dtype=torch.float64, device=device)
    full_res = False
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress or not dist.is_main)
    for images, labels, names in bar:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        label = labels.to(device, non_blocking=True).long()
        out_size = tuple(label.shape[-2:])
        full_res |= out_size != tuple(images.shape[-2:])
        with autocast(device, amp):
            if probe is None:
                probs = predict_probabilities(model, images, flip=flip, out_size=out_size)
            else:
                main, aux = forward_logits(model, images, with_aux=probe.uses_aux, out_size=out_size)
                probe.update(main, aux, label)
                probs = main.softmax(dim=1)
        pred = probs.max(dim=1).indices  # argmax's first maximum, several times faster on CPU
        accumulator.update(pred, label)
        for members, part, count in parts.values():
            keep = [i for i, name in enumerate(names) if name in members]
            if keep:
                part.update(pred[keep], label[keep])
                count[0] += len(keep)
        ent = normalized_entropy(probs)
        entropy_sum += ent.sum(dtype=torch.float64)
        pixel_count += ent.numel()
    model.train(was_training)
    conf = all_reduce_sum(accumulator.matrix, dist)
    totals = all_reduce_sum(torch.stack([entropy_sum, pixel_count]), dist)
    mean_entropy = float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")
    extra = {} if probe is None else {"probe": probe.result()}
    if parts:
        extra["subsets"] = {}
        for name, (_members, part, count) in parts.items():
            sub = all_reduce_sum(part.matrix, dist).cpu()
            images = int(all_reduce_sum(torch.tensor([count[0]], device=device), dist)[0])
            extra["subsets"][name] = {**metrics.summarize(sub, cs), "images": images}
    return EvalResult(conf.cpu(), metrics.summarize(conf.cpu(), cs), mean_entropy, n, flip,
                      "full" if full_res else "resized", extra)
