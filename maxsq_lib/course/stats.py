"""Class statistics and sample figures of the datasets (notebook ``01_data``).

:func:`class_frequencies` measures the share of each class among labelled pixels;
:func:`class_frequency_figure` compares these shares across domains (the class imbalance that
makes entropy minimisation favour easy classes); :func:`sample_grid` shows images beside their
coloured labels, one column pair per domain. Save the figures with
:func:`maxsq_lib.course.style.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from ..labels import ClassSet, class_set_for
from .style import denormalize_bgr, figure_style, label_panel, legend_handles

_DOMAIN_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _label_of(dataset, index: int) -> np.ndarray:
    if hasattr(dataset, "load_label"):
        return np.asarray(dataset.load_label(index))
    return np.asarray(dataset[index][1])


def class_counts(dataset, num_classes: int | None = None, limit: int | None = None,
                 progress: bool = False) -> np.ndarray:
    """Pixels of each class over a dataset's labels (ignored pixels not counted).

    Args:
        dataset: a dataset whose items are ``(image, label, name)`` (or with ``load_label``).
        num_classes: number of classes (default: ``dataset.num_classes``).
        limit: use only the first ``limit`` items.
        progress: show a tqdm bar.
    Shape:
        -> (C,) int64.
    Returns:
        pixel counts per class.
    """
    num_classes = int(num_classes if num_classes is not None else dataset.num_classes)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    counts = np.zeros(num_classes, dtype=np.int64)
    for index in tqdm(range(count), disable=not progress, desc="class counts", leave=False):
        label = _label_of(dataset, index).ravel()
        label = label[(label >= 0) & (label < num_classes)]
        counts += np.bincount(label.astype(np.int64), minlength=num_classes)
    return counts


def class_frequencies(dataset, num_classes: int | None = None, limit: int | None = None,
                      progress: bool = False) -> np.ndarray:
    """Share of each class among the labelled pixels of a dataset.

    Args:
        dataset: a dataset whose items are ``(image, label, name)`` (or with ``load_label``).
        num_classes: number of classes (default: ``dataset.num_classes``).
        limit: use only the first ``limit`` items.
        progress: show a tqdm bar.
    Shape:
        -> (C,) float64, summing to 1.
    Returns:
        pixel fractions per class.
    Raises:
        ValueError: no labelled pixel (e.g. an unlabelled split such as NTHU train).
    """
    counts = class_counts(dataset, num_classes, limit, progress)
    total = counts.sum()
    if total == 0:
        raise ValueError(f"{dataset!r} has no labelled pixels (an unlabelled split?)")
    return counts / total


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
