"""Figures of the data (notebook ``01_data``): class frequencies per domain and sample grids.

:func:`class_frequency_figure` compares the share of each class among labelled pixels across
domains (the class imbalance that makes entropy minimisation favour easy classes; the shares come
from :func:`maxsq_lib.course.stats.class_frequencies`); :func:`sample_grid` shows images beside their
coloured labels, one column pair per domain. :func:`benchmark_frequencies` and
:func:`benchmark_samples` are the course figures of a benchmark's source train and target val sets
(registered, :func:`~maxsq_lib.course.plots.base.figure`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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
