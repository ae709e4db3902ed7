"""Datasets of the paper in their real folder layouts, the authors' preprocessing, and data checks.

``GTA5``, ``SYNTHIA``, ``Cityscapes`` and ``NTHU(city=...)`` read ``<root>/<Dataset>/...``
(docs/authors_code.md §6.1); :func:`get_dataset` builds one from its config name;
:func:`check_dataset` (in :mod:`maxsq_lib.data.check`) reads every listed pair and reports problems.
Introduced in notebook ``01_data``.
"""

from __future__ import annotations

from .check import CheckReport, check_dataset
from .datasets import (DATASETS, NTHU, NTHU_CITIES, PAPER_SIZES, GTA5, SYNTHIA, Cityscapes, DatasetError, Sample,
                       SegmentationDataset, get_dataset, read_image, read_label_ids)
from .transforms import IMG_MEAN_BGR

__all__ = ["CheckReport", "DATASETS", "GTA5", "IMG_MEAN_BGR", "NTHU", "NTHU_CITIES", "PAPER_SIZES", "SYNTHIA",
           "Cityscapes", "DatasetError", "Sample", "SegmentationDataset", "check_dataset", "get_dataset",
           "read_image", "read_label_ids"]
