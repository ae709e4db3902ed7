"""Class statistics of the datasets (notebooks ``01_data`` and ``06_cross_city``).

:func:`class_counts` counts the labelled pixels of each class; :func:`class_frequencies` turns them
into shares (the class imbalance that makes entropy minimisation favour easy classes). Their
figures are in :mod:`maxsq_lib.course.plots.data`.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm


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
