"""Figures of the source model (notebook ``02_source_pretraining``) and of the paper-scale
appendix (notebook ``09_appendix_paper_scale``): the network as a diagram of its modules, the
source run's training curves, per-class IoU side by side, predictions on target images, and the
class sets of the paper's benchmarks.

None is registered with :func:`~maxsq_lib.course.plots.base.figure`: they are drawn in the
chapters only, so ``figures/`` does not change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from ... import labels as L
from ... import methods as method_registry
from ..style import denormalize_bgr, figure_style, label_panel, legend_handles

MODULES = ("conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "layer5", "layer6")
"""The top-level modules of DeepLabv2 drawn by :func:`network_diagram`, in forward order."""

_ROLE = {"conv1": "stem 7×7 conv /2", "maxpool": "max-pool /2 (ceil)", "layer1": "bottlenecks",
         "layer2": "stride 2", "layer3": "dilation 2", "layer4": "dilation 4",
         "layer5": "aux ASPP head", "layer6": "main ASPP head"}


def module_shapes(model: torch.nn.Module, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """Output shape (C, h, w) of each of :data:`MODULES` for one zero image of ``height`` × ``width``,
    and of the upsampled logits (``"logits"``). Introduced in notebook ``02_source_pretraining``.

    Args:
        model: a DeepLabv2 (:func:`maxsq_lib.models.deeplabv2`); it is put in eval mode.
        height, width: the input size.
    Returns:
        ``{module name: (C, h, w)}``.
    """
    shapes, hooks = {}, []
    for name in MODULES:
        hooks.append(getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))))
    model.eval()
    try:
        with torch.no_grad():
            main, _ = model(torch.zeros(1, 3, height, width, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    shapes["logits"] = tuple(main.shape[1:])
    return shapes


def network_diagram(model: torch.nn.Module, height: int, width: int, title: str = "") -> Figure:
    """DeepLabv2 as boxes: the backbone left to right, the aux head on ``layer3`` and the main head
    on ``layer4``, each box with its output shape and parameter count for one input of
    ``height`` × ``width``. Introduced in notebook ``02_source_pretraining``.

    Args:
        model: a DeepLabv2.
        height, width: the input size.
        title: the figure's title (default: the input size and the parameter count).
    Returns:
        the figure.
    """
    shapes = module_shapes(model, height, width)
    params = {n: sum(p.numel() for p in getattr(model, n).parameters()) for n in MODULES}
    total = sum(p.numel() for p in model.parameters())
    backbone = MODULES[:6]
    with figure_style():
        fig, ax = plt.subplots(figsize=(12, 3.4))
        boxes = {n: (i * 1.6, 1.2) for i, n in enumerate(backbone)}
        boxes["layer5"], boxes["layer6"] = (4 * 1.6, -0.4), (6 * 1.6, 1.2)
        for name, (x, y) in boxes.items():
            color = "#dd8452" if name in ("layer5", "layer6") else "#c6d4e8"
            ax.add_patch(plt.Rectangle((x, y), 1.3, 0.9, color=color, ec="black", lw=0.6))
            c, h, w = shapes[name]
            ax.text(x + 0.65, y + 0.68, name, ha="center", fontsize=8, weight="bold")
            ax.text(x + 0.65, y + 0.48, _ROLE[name], ha="center", fontsize=6)
            ax.text(x + 0.65, y + 0.27, f"{c}×{h}×{w}", ha="center", fontsize=6.5)
            ax.text(x + 0.65, y + 0.07, f"{params[name]:,} p", ha="center", fontsize=6.5)
        for a, b in zip(backbone, backbone[1:] + ("layer6",)):
            ax.annotate("", xy=(boxes[b][0], 1.65), xytext=(boxes[a][0] + 1.3, 1.65),
                        arrowprops=dict(arrowstyle="->", lw=0.8))
        ax.annotate("", xy=(boxes["layer5"][0] + 0.65, 0.5), xytext=(boxes["layer3"][0] + 0.65, 1.2),
                    arrowprops=dict(arrowstyle="->", lw=0.8))
        c, h, w = shapes["logits"]
        ax.text(boxes["layer6"][0] + 1.45, 1.65, f"→ main logits\nupsampled to {c}×{h}×{w}", va="center", fontsize=7)
        ax.text(boxes["layer5"][0] + 1.45, 0.05, f"→ aux logits, upsampled to {c}×{h}×{w}", va="center", fontsize=7)
        ax.set_xlim(-0.2, 12.6)
        ax.set_ylim(-0.6, 2.4)
        ax.axis("off")
        ax.set_title(title or f"DeepLabv2 for one {width}×{height} input: output C×h×w and parameters "
                              f"(p) of each module; {total:,} parameters in all", fontsize=9)
    return fig


def training_curves(metrics: Mapping) -> Figure:
    """A source run's training: left the source cross-entropy of each head (training batches, log
    scale), right the target val mIoU at each evaluation with the source val mIoU at the end as a
    line. Introduced in notebook ``02_source_pretraining``.

    Args:
        metrics: the run's ``metrics.json`` (``train_log``, ``history``, ``source_val``).
    Returns:
        the figure.
    """
    log, history = metrics["train_log"], metrics["history"]
    it = [e["iteration"] for e in log]
    with figure_style():
        fig, (ax, ev) = plt.subplots(1, 2, figsize=(11, 3.3))
        ax.plot(it, [e["source_ce"] for e in log], color="#4c72b0")
        ax.text(it[-1], log[-1]["source_ce"], " main", fontsize=7, va="center", color="#4c72b0")
        if "source_aux_ce" in log[0]:
            ax.plot(it, [e["source_aux_ce"] for e in log], color="#dd8452")
            ax.text(it[-1], log[-1]["source_aux_ce"], " aux", fontsize=7, va="center", color="#dd8452")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title("source cross-entropy per head (training batches)", fontsize=9)
        ev.plot([e["iteration"] for e in history], [100 * e["miou"] for e in history], "o-",
                color=method_registry.color("source"))
        ev.text(history[-1]["iteration"], 100 * history[-1]["miou"] - 6, "target val", fontsize=7, ha="right")
        if metrics.get("source_val"):
            sv = 100 * metrics["source_val"]["miou"]
            ev.axhline(sv, color="#55a868", ls="--", lw=1)
            ev.text(history[0]["iteration"], sv + 2, "source val (end)", fontsize=7, color="#55a868")
        ev.set_ylim(0, 100)
        ev.set_xlabel("iteration")
        ev.set_ylabel("mIoU (%), whole split")
        ev.set_title("mIoU at each evaluation: the target never trained on", fontsize=9)
        fig.tight_layout()
    return fig


def class_gap(series: Mapping[str, Mapping[str, float | None]], title: str = "") -> Figure:
    """Per-class IoU of several evaluations on one row per class (a dot each, joined by a line),
    classes sorted by the drop from the first evaluation to the second. Introduced in notebook
    ``02_source_pretraining``.

    Args:
        series: name -> {class name: IoU (fraction) or None}, at least two, in drawing order; the
            first two define the sort.
        title: the figure's title.
    Returns:
        the figure (the x axis is IoU in %).
    """
    names = list(series)
    first, second = series[names[0]], series[names[1]]
    classes = [c for c in first if first[c] is not None and second.get(c) is not None]
    classes.sort(key=lambda c: first[c] - second[c])
    colors = ("#55a868", method_registry.color("source"), method_registry.color("adabn"), "#c44e52")
    with figure_style():
        fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(classes) + 1.6))
        for y, c in enumerate(classes):
            xs = [100 * series[n][c] for n in names if series[n].get(c) is not None]
            ax.plot([min(xs), max(xs)], [y, y], color="#cccccc", lw=2, zorder=1)
        for n, color in zip(names, colors):
            pts = [(100 * series[n][c], y) for y, c in enumerate(classes) if series[n].get(c) is not None]
            ax.scatter(*zip(*pts), color=color, s=28, zorder=2, label=n)
        ax.set_yticks(range(len(classes)))
        ax.set_yticklabels(classes, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("IoU (%)")
        ax.legend(frameon=False, fontsize=7.5, ncol=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.18))
        ax.set_title(title or "per-class IoU, classes sorted by the drop from the first to the second", fontsize=9)
        fig.tight_layout()
    return fig


def target_predictions(images: torch.Tensor, label_maps: torch.Tensor, predicted: Mapping[str, np.ndarray],
                       names: Sequence[str], class_set: L.ClassSet) -> Figure:
    """One row per image: the image, its label, the prediction and its normalised entropy, with
    the pixel accuracy under the prediction. Introduced in notebook ``02_source_pretraining``.

    Args:
        images: (B, 3, H, W) BGR-mean-subtracted images (:func:`maxsq_lib.course.batch`).
        label_maps: (B, H, W) train ids, -1 = ignore.
        predicted: :func:`maxsq_lib.course.predict` of ``images`` (``pred``, ``entropy``).
        names: the images' names.
        class_set: the class set of the labels.
    Returns:
        the figure.
    """
    n = len(images)
    with figure_style():
        fig, axes = plt.subplots(n, 4, figsize=(10, 1.5 * n + 1.0), squeeze=False, layout="constrained")
        for r in range(n):
            label = label_maps[r].numpy()
            valid = label >= 0
            axes[r, 0].imshow(denormalize_bgr(images[r].numpy()))
            axes[r, 0].set_ylabel(names[r], fontsize=6)
            label_panel(axes[r, 1], label, class_set)
            label_panel(axes[r, 2], predicted["pred"][r], class_set)
            axes[r, 2].set_xlabel(f"pixel accuracy {(predicted['pred'][r][valid] == label[valid]).mean():.0%}",
                                  fontsize=7)
            im = axes[r, 3].imshow(predicted["entropy"][r], vmin=0, vmax=1, cmap="magma")
            for a in axes[r]:
                a.set_xticks([])
                a.set_yticks([])
        for a, t in zip(axes[0], ("target image", "label", "prediction (source only)", "normalised entropy")):
            a.set_title(t)
        fig.colorbar(im, ax=axes[:, 3].tolist(), shrink=0.8, label="entropy / log C")
        fig.legend(handles=legend_handles(class_set), loc="outside lower center",
                   ncol=min(10, class_set.num_classes), frameon=False, fontsize=7)
    return fig


CLASS_SET_COLUMNS = (("GTA5, Cityscapes (19)", L.CITYSCAPES_19), ("SYNTHIA (16)", L.SYNTHIA_16),
                     ("NTHU (13)", L.NTHU_13), ("MiniCity (10)", L.MINICITY_10))
"""The class sets :func:`class_sets` draws, by benchmark (mIoU* is drawn beside SYNTHIA)."""


def class_set_membership() -> dict[str, list[bool]]:
    """Which of the 19 Cityscapes train classes each class set keeps, and which SYNTHIA's mIoU*
    scores (13 of its 16). Introduced in notebook ``09_appendix_paper_scale``.

    Returns:
        ``{column name: [kept?] for each of the 19 train ids}`` in :data:`CLASS_SET_COLUMNS` order,
        with ``"SYNTHIA mIoU* (13)"`` after SYNTHIA.
    """
    out = {}
    for name, cs in CLASS_SET_COLUMNS:
        out[name] = [t in cs.train19_ids for t in range(19)]
        if cs is L.SYNTHIA_16:
            star = {cs.train19_ids[i] for i in L.MIOU_STAR_13_OF_16}
            out["SYNTHIA mIoU* (13)"] = [t in star for t in range(19)]
    return out


def class_sets() -> Figure:
    """The 19 Cityscapes train classes (rows) and which each benchmark's class set keeps (columns,
    :func:`class_set_membership`). Introduced in notebook ``09_appendix_paper_scale``.

    Returns:
        the figure.
    """
    member = class_set_membership()
    grid = np.array(list(member.values()), dtype=float).T
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.5, 6))
        ax.imshow(grid, cmap="Blues", vmin=-0.3, vmax=1.3, aspect="auto")
        ax.set_xticks(range(len(member)))
        ax.set_xticklabels(list(member), rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(19))
        ax.set_yticklabels([f"{t} {n}" for t, n in enumerate(L.CITYSCAPES_19.class_names)], fontsize=8)
        for (r, c), kept in np.ndenumerate(grid):
            ax.text(c, r, "✓" if kept else "·", ha="center", va="center", fontsize=8,
                    color="white" if kept else "#888888")
        ax.set_title("which of the 19 train classes each class set keeps (✓)", fontsize=9)
        fig.tight_layout()
    return fig
