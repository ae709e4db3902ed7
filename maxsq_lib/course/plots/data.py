"""Figures of the data (notebook ``01_data``): class frequencies per domain and sample grids.

:func:`class_frequency_figure` compares the share of each class among labelled pixels across
domains (the class imbalance that makes entropy minimisation favour easy classes; the shares come
from :func:`maxsq_lib.course.stats.class_frequencies`); :func:`sample_grid` shows images beside their
coloured labels, one column pair per domain. :func:`benchmark_frequencies` and
:func:`benchmark_samples` are the course figures of a benchmark's source train and target val sets
(registered, :func:`~maxsq_lib.course.plots.base.figure`). For the chapter itself (not registered):
:func:`chapter_domains` (the datasets it compares), :func:`frequency_difference` (the class mix of
the source and how the other domains differ from it), :func:`shift_strip` and
:func:`calibration_curve` (MiniCity's ``shift`` knob).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ...labels import ClassSet, class_set_for
from ..results import MissingEvidence
from ..stats import class_frequencies
from ..style import denormalize_bgr, figure_style, label_panel, legend_handles
from .base import FROM_FILES, QUALITATIVE_INDICES, data_config, dataset_label, figure

_DOMAIN_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")

FREQUENCY_LIMIT = 500
"""Images per domain counted for the class-frequency figure (the first ones, for speed)."""


def class_frequency_figure(freqs_by_domain: Mapping[str, np.ndarray], class_set: ClassSet | int | str,
                           log: bool = True, title: str | None = None):
    """Grouped bar chart of class frequencies, one bar colour per domain.

    Args:
        freqs_by_domain: domain name -> (C,) pixel fractions (from :func:`class_frequencies`).
        class_set: the class set (names on the x axis), or its size or name.
        log: logarithmic y axis (rare classes stay visible).
        title: figure title.
    Returns:
        the matplotlib figure.
    """
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    domains = list(freqs_by_domain)
    for domain, freqs in freqs_by_domain.items():
        if np.shape(freqs) != (cs.num_classes,):
            raise ValueError(f"frequencies of {domain!r} have shape {np.shape(freqs)}, expected ({cs.num_classes},)")
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * cs.num_classes + 2), 3.6))
        width = 0.8 / max(1, len(domains))
        x = np.arange(cs.num_classes)
        for k, domain in enumerate(domains):
            ax.bar(x + (k - (len(domains) - 1) / 2) * width, np.asarray(freqs_by_domain[domain]) * 100.0,
                   width=width, label=domain, color=_DOMAIN_COLORS[k % len(_DOMAIN_COLORS)])
        ax.set_xticks(x)
        ax.set_xticklabels(cs.class_names, rotation=45, ha="right")
        ax.set_ylabel("share of labelled pixels (%)")
        if log:
            ax.set_yscale("log")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars
        ax.set_title(title or f"Class frequencies ({cs.name})")
        fig.tight_layout()
    return fig


def sample_grid(datasets: Mapping[str, object], n: int = 4, class_set: ClassSet | int | str | None = None,
                indices: Mapping[str, list[int]] | None = None):
    """Images beside their coloured labels: rows = samples, two columns per domain.

    Samples are spread evenly over each dataset (first, ..., last) unless ``indices`` is given.
    Items are shown as the datasets return them (augmented if ``augment=True``).

    Args:
        datasets: domain name -> dataset with items ``(image, label, name)``.
        n: samples per domain (rows).
        class_set: colours of the labels (default: the first dataset's ``class_set``).
        indices: optional domain -> item indices to show.
    Returns:
        the matplotlib figure.
    """
    if not datasets:
        raise ValueError("sample_grid needs at least one dataset")
    if class_set is None:
        class_set = getattr(next(iter(datasets.values())), "class_set", None)
        if class_set is None:
            raise ValueError("pass class_set: the datasets have no class_set attribute")
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    chosen = {}
    for domain, dataset in datasets.items():
        if indices is not None and domain in indices:
            chosen[domain] = list(indices[domain])[:n]
        else:
            chosen[domain] = sorted(set(np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()))
    rows = max(len(v) for v in chosen.values())
    cols = 2 * len(datasets)
    with figure_style():
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 1.5 * rows + 0.4), squeeze=False)
        for d, (domain, dataset) in enumerate(datasets.items()):
            for r in range(rows):
                ax_image, ax_label = axes[r, 2 * d], axes[r, 2 * d + 1]
                if r >= len(chosen[domain]):
                    ax_image.axis("off")
                    ax_label.axis("off")
                    continue
                image, label, name = dataset[chosen[domain][r]]
                ax_image.imshow(denormalize_bgr(np.asarray(image)))
                ax_image.set_xticks([])
                ax_image.set_yticks([])
                # Cityscapes-style names are long: small enough that columns do not collide
                ax_image.set_ylabel(str(name), fontsize=5)
                label_panel(ax_label, np.asarray(label), cs)
                if r == 0:
                    ax_image.set_title(f"{domain}: image", fontsize=8)
                    ax_label.set_title(f"{domain}: label", fontsize=8)
        fig.legend(handles=legend_handles(cs), loc="lower center", ncol=min(10, cs.num_classes),
                   frameon=False, fontsize=7)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _benchmark_data(profile: str, benchmark: str, data_root: str | None, runs_root):
    """The class set and the (source train, target val) datasets of a benchmark, with their names
    in figures; MissingEvidence when the data cannot be read."""
    from ... import course

    cfg = data_config(profile, benchmark, runs_root, data_root)
    try:
        datasets = (course.dataset(cfg, "source"), course.dataset(cfg, "val"))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise MissingEvidence(f"cannot read the data of {benchmark}: {exc}") from exc
    names = (f"source: {dataset_label(cfg.data.source, profile)} train",
             f"target: {dataset_label(cfg.data.target, profile)} val")
    return class_set_for(cfg.data.num_classes), dict(zip(names, datasets))


@figure("class_frequencies.png",
        "share of labelled pixels per class in the source and target domains (log scale).",
        needs=FROM_FILES, order=11)
def benchmark_frequencies(profile: str, benchmark: str, data_root: str | None = None,
                          runs_root: str | os.PathLike = "runs") -> Figure:
    """The class frequencies of a benchmark's source train and target val sets (the first
    :data:`FREQUENCY_LIMIT` images of each). Notebook ``01_data``.

    Args:
        profile: the profile (its config names the datasets and sizes).
        benchmark: the benchmark (source and target datasets).
        data_root: dataset root (None: the profile's).
        runs_root: the runs folder (only part of the resolved config).
    Raises:
        MissingEvidence: the data root does not exist or a dataset cannot be read.
    """
    cs, datasets = _benchmark_data(profile, benchmark, data_root, runs_root)
    try:
        freqs = {}
        for name, ds in datasets.items():
            used = min(FREQUENCY_LIMIT, len(ds))
            counted = f"all {used}" if used == len(ds) else f"first {used} of {len(ds)}"
            freqs[f"{name} ({counted} images)"] = class_frequencies(ds, cs.num_classes, limit=FREQUENCY_LIMIT)
        return class_frequency_figure(freqs, cs, title=f"Class frequencies, {benchmark}")
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise MissingEvidence(f"cannot read the data of {benchmark}: {exc}") from exc


@figure("sample_grid.png", "the first source training and target val images with their labels.",
        needs=FROM_FILES, order=12)
def benchmark_samples(profile: str, benchmark: str, data_root: str | None = None,
                      runs_root: str | os.PathLike = "runs") -> Figure:
    """The sample grid of a benchmark's source train and target val sets (items
    :data:`~maxsq_lib.course.plots.base.QUALITATIVE_INDICES`, no augmentation). Notebook ``01_data``.

    Args and raises as :func:`benchmark_frequencies`.
    """
    cs, datasets = _benchmark_data(profile, benchmark, data_root, runs_root)
    try:
        return sample_grid(datasets, n=len(QUALITATIVE_INDICES), class_set=cs,
                           indices={n: [i for i in QUALITATIVE_INDICES if i < len(d)] for n, d in datasets.items()})
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise MissingEvidence(f"cannot read the data of {benchmark}: {exc}") from exc


# ------------------------------------------------------------------------------------ chapter 01

def chapter_domains(cfg, city: str | None = "Rome") -> dict[str, object]:
    """The labelled datasets notebook ``01_data`` compares: the source training split, the target
    val split and, where the target is not NTHU, one NTHU-layout city's test split.

    Args:
        cfg: the run config of the chapter (:func:`maxsq_lib.course.config_for`).
        city: the NTHU-layout city shown beside source and target (None: none).
    Returns:
        figure name of the domain -> dataset (items ``(image, label, name)``, no augmentation).
    Raises:
        DatasetError: a dataset is not in place (its message names the expected path).
    """
    from ...data import get_dataset

    d = cfg.data
    out = {f"{dataset_label(d.source, cfg.profile)} {d.source_split} (source)": get_dataset(
        d.source, root=d.root, split=d.source_split, size=tuple(d.source_size), num_classes=d.num_classes,
        city=d.city if d.source == "nthu" else None)}
    target = d.city if d.target == "nthu" else dataset_label(d.target, cfg.profile)
    out[f"{target} {d.val_split} (target)"] = get_dataset(
        d.target, root=d.root, split=d.val_split, size=tuple(d.val_size), num_classes=d.num_classes,
        city=d.city if d.target == "nthu" else None)
    if city is not None and d.target != "nthu":
        out[f"{city} test (NTHU layout)"] = get_dataset("nthu", root=d.root, split="test", size=tuple(d.val_size),
                                                         num_classes=d.num_classes, city=city)
    return out


def frequency_difference(freqs_by_domain: Mapping[str, np.ndarray], class_set: ClassSet | int | str,
                         title: str | None = None) -> Figure:
    """The class mix of the first domain, and how every other domain differs from it.

    Left: the first domain's share of labelled pixels per class (log axis: the imbalance). Right:
    each other domain's share minus the first's, in percentage points (a difference plot: what
    changes between the domains, not what they share). Notebook ``01_data``.

    Args:
        freqs_by_domain: domain name -> (C,) pixel fractions (:func:`~maxsq_lib.course.stats.class_frequencies`),
            the reference domain first.
        class_set: the class set (names on the y axis), or its size or name.
        title: the figure's title.
    Returns:
        the figure.
    Raises:
        ValueError: fewer than two domains, or frequencies of the wrong shape.
    """
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    names = list(freqs_by_domain)
    if len(names) < 2:
        raise ValueError(f"frequency_difference needs two domains or more, got {names}")
    freqs = {n: np.asarray(freqs_by_domain[n], dtype=float) * 100.0 for n in names}
    for n, f in freqs.items():
        if f.shape != (cs.num_classes,):
            raise ValueError(f"frequencies of {n!r} have shape {f.shape}, expected ({cs.num_classes},)")
    ref, others = names[0], names[1:]
    y = np.arange(cs.num_classes)[::-1]  # the first class on top
    with figure_style():
        fig, (ax_ref, ax_diff) = plt.subplots(1, 2, figsize=(9.5, 0.28 * cs.num_classes + 1.6), sharey=True,
                                              gridspec_kw={"width_ratios": (1, 1.3)})
        shown = np.where(freqs[ref] > 0, freqs[ref], np.nan)  # a class never drawn has no bar on a log axis
        ax_ref.barh(y, shown, color=_DOMAIN_COLORS[0], height=0.7)
        ax_ref.set_xscale("log")
        ax_ref.set_xlabel("share of labelled pixels (%, log)")
        ax_ref.set_title(f"{ref}: the class mix")
        height = 0.8 / len(others)
        for k, n in enumerate(others):
            ax_diff.barh(y + (len(others) - 1) / 2 * height - k * height, freqs[n] - freqs[ref], height=height,
                         color=_DOMAIN_COLORS[(k + 1) % len(_DOMAIN_COLORS)], label=f"{n} − source")
        ax_diff.axvline(0, color="black", lw=0.6)
        ax_diff.set_xlabel("difference of share (percentage points)")
        ax_diff.set_title("how the other domains differ from it")
        ax_ref.set_yticks(y)
        ax_ref.set_yticklabels(cs.class_names)
        fig.legend(*ax_diff.get_legend_handles_labels(), loc="lower center", ncol=len(others), frameon=False,
                   fontsize=8)
        fig.suptitle(title or f"Class frequencies per domain ({cs.name})")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def shift_strip(source_image: np.ndarray, images: Sequence[np.ndarray], label_ids: np.ndarray,
                shifts: Sequence[float], default_shift: float, data_shift: float | None = None) -> Figure:
    """One MiniCityscapes layout rendered at several shifts, beside a source image and the layout's
    label (the same at every shift). Notebook ``01_data``.

    Args:
        source_image: (H, W, 3) uint8, a MiniGTA image (another layout).
        images: one (H, W, 3) uint8 render per shift.
        label_ids: (H, W) MiniCity label ids of the layout.
        shifts: the shifts of ``images``.
        default_shift: the calibrated default, marked in its title.
        data_shift: the shift of the data on disk, marked where it is not the default.
    Returns:
        the figure.
    """
    cs = class_set_for("minicity10")
    n = len(shifts) + 2
    with figure_style():
        fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 1.9))
        axes[0].imshow(source_image)
        axes[0].set_title("a source image\n(another layout)")
        for ax, s, img in zip(axes[1:], shifts, images):
            ax.imshow(img)
            mark = "\n(default)" if s == default_shift else "\n(data on disk)" if s == data_shift else ""
            ax.set_title(f"shift {s:g}{mark}")
        label_panel(axes[-1], cs.cityscapes_id_lut[label_ids], cs, title="its label\n(every shift)")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("One target layout as the shift grows from the source look (0) to the full target look (1)",
                     fontsize=9)
        fig.tight_layout()
    return fig


def calibration_curve(curve: Mapping[float, float], on_source: float, default_shift: float,
                      images: int, profile: str) -> Figure:
    """The source-only model's mIoU on the same target layouts rendered at each shift, with its
    mIoU on source val as a reference line. Notebook ``01_data``.

    Args:
        curve: shift -> mIoU (fraction), from :func:`maxsq_prep.calibrate_shift.shift_curve`.
        on_source: the same model's mIoU on source val (fraction).
        default_shift: the calibrated default shift, marked.
        images: how many val layouts the curve scored.
        profile: the profile of the source model (in the title).
    Returns:
        the figure.
    """
    xs = sorted(curve)
    with figure_style():
        fig, ax = plt.subplots(figsize=(5.6, 3.4))
        ax.plot(xs, [100 * curve[s] for s in xs], "o-", color=_DOMAIN_COLORS[0])
        ax.axhline(100 * on_source, color=_DOMAIN_COLORS[2], ls="--", lw=1)
        ax.axvline(default_shift, color=_DOMAIN_COLORS[3], ls=":", lw=1.5)
        # labels on the lines instead of a legend that would cover the curve
        ax.annotate("the same model on source val", (xs[-1], 100 * on_source), xytext=(0, 4),
                    textcoords="offset points", ha="right", fontsize=7.5, color=_DOMAIN_COLORS[2])
        ax.annotate(f"default {default_shift:g}", (default_shift, 3), xytext=(4, 0), textcoords="offset points",
                    fontsize=7.5, color=_DOMAIN_COLORS[3])
        ax.set_xlabel("shift (0 = source look, 1 = full target look)")
        ax.set_ylabel("target mIoU (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"Source-only model ({profile}) on {images} target val layouts, per shift", fontsize=9)
        fig.tight_layout()
    return fig
