"""Check a dataset on disk without training: read every listed pair and report what is wrong.

:func:`check_dataset` is what ``maxsq data check <name>`` runs. It reports, per split, the number
of entries, a histogram of image sizes, label ids outside the dataset's id range (with their pixel
counts; the loaders map them to ignore), image/label pairs of different sizes, unreadable or
corrupt files and listed files that are missing; and over the whole dataset folder, images without
a label (or labels without an image) and files that no list names. Introduced in notebook
``01_data``.
"""

from __future__ import annotations

import functools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .datasets import (DATASETS, NTHU, DatasetError, Sample, SegmentationDataset, get_dataset, read_image,
                       read_label_ids)

_SHOW = 20  # lines shown per problem category in the text report


@dataclass
class SplitCheck:
    """What the check found in one split.

    Args:
        split: split name.
        list_file: its list file.
        entries: number of list entries.
        checked: entries whose files were read (all, or ``limit``).
        image_sizes: ``"WxH"`` -> number of images.
        missing: listed files that do not exist (with the list line).
        unreadable: corrupt, truncated or wrongly encoded files.
        size_mismatch: pairs whose image and label sizes differ.
        unknown_label_ids: label id outside the dataset's id range -> pixel count.
        labelled_pixels: pixels read from label files.
        ignored_pixels: of those, pixels that map to ignore (-1) in the class set.
        duplicates: entries listed more than once.
    """

    split: str
    list_file: str
    entries: int = 0
    checked: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    unknown_label_ids: dict[int, int] = field(default_factory=dict)
    labelled_pixels: int = 0
    ignored_pixels: int = 0
    duplicates: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No missing or unreadable file and no unknown label id (pairs of different sizes are
        listed, not failed: the loaders resize them independently, as the authors' code does)."""
        return not (self.missing or self.unreadable or self.unknown_label_ids)


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`.

    Args:
        dataset: dataset name (``gta5``, ...).
        root: the datasets root.
        num_classes: the class set used to count ignored pixels.
        city: NTHU city, else None.
        splits: per-split results.
        missing_partners: images without their label file, labels without their image.
        unlisted: image or label files that no list file names (information, not a problem:
            e.g. GTA5's ``train`` list names half of the images).
        errors: problems that stopped a split from being read (missing folder, list file, ...).
    """

    dataset: str
    root: str
    num_classes: int
    city: str | None = None
    splits: dict[str, SplitCheck] = field(default_factory=dict)
    missing_partners: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong: every listed pair reads, matches and uses known ids."""
        return not self.errors and not self.missing_partners and all(s.ok for s in self.splits.values())

    def to_dict(self) -> dict:
        """A JSON-ready dict (with ``ok``)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def format(self) -> str:
        """The report as readable text."""
        title = f"{self.dataset}" + (f" ({self.city})" if self.city else "")
        lines = [f"Check of {title} under {self.root} ({self.num_classes} classes)"]
        for err in self.errors:
            lines.append(f"ERROR: {err}")
        for s in self.splits.values():
            lines.append(f"split {s.split}: {s.entries} entries in {s.list_file}, {s.checked} read")
            if s.image_sizes:
                sizes = ", ".join(f"{k}: {v}" for k, v in sorted(s.image_sizes.items(), key=lambda kv: -kv[1]))
                lines.append(f"  image sizes (W x H): {sizes}")
            if s.labelled_pixels:
                share = 100.0 * s.ignored_pixels / s.labelled_pixels
                lines.append(f"  ignored label pixels: {share:.2f}% ({s.ignored_pixels} of {s.labelled_pixels})")
            if s.unknown_label_ids:
                ids = ", ".join(f"{k}: {v} px" for k, v in sorted(s.unknown_label_ids.items()))
                lines.append(f"  PROBLEM label ids outside the map (read as ignore): {ids}")
            lines += _section("PROBLEM missing files", s.missing)
            lines += _section("PROBLEM unreadable or corrupt files", s.unreadable)
            lines += _section("note: image and label sizes differ (the loaders resize each "
                              "independently, as the authors' code does)", s.size_mismatch)
            lines += _section("note: duplicate entries", s.duplicates, indent="  ")
        lines += _section("PROBLEM files without their partner", self.missing_partners, indent="")
        lines += _section("note: files that no list names", self.unlisted, indent="")
        problems = len(self.errors) + len(self.missing_partners) + sum(
            len(s.missing) + len(s.unreadable) + len(s.unknown_label_ids) for s in self.splits.values())
        lines.append("Result: OK" if self.ok else f"Result: {problems} problem(s)")
        return "\n".join(lines)


def _section(title: str, items: list[str], indent: str = "  ") -> list[str]:
    if not items:
        return []
    out = [f"{indent}{title} ({len(items)}):"]
    out += [f"{indent}  {item}" for item in items[:_SHOW]]
    if len(items) > _SHOW:
        out.append(f"{indent}  ... and {len(items) - _SHOW} more")
    return out


@dataclass
class _SampleResult:
    image_size: tuple[int, int] | None = None
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: str | None = None
    id_pixels: dict[int, int] = field(default_factory=dict)


def _check_sample(sample: Sample, multichannel: bool) -> _SampleResult:
    """Read one listed pair fully; record what is wrong instead of raising."""
    result = _SampleResult()
    try:
        result.image_size = read_image(sample.image, sample.where).size
    except DatasetError as err:
        result.unreadable.append(str(err))
    if sample.label is None:
        return result
    try:
        raw = read_label_ids(sample.label, sample.where, multichannel)
    except DatasetError as err:
        result.unreadable.append(str(err))
        return result
    counts = np.bincount(raw.ravel().astype(np.int64))
    result.id_pixels = {int(i): int(counts[i]) for i in np.flatnonzero(counts)}
    label_size = (raw.shape[1], raw.shape[0])
    if result.image_size is not None and label_size != result.image_size:
        width, height = result.image_size
        result.size_mismatch = (f"{sample.where}: image {sample.image} is {width}x{height}, "
                                f"label {sample.label} is {label_size[0]}x{label_size[1]}")
    return result


def check_split(dataset: SegmentationDataset, limit: int | None = None, progress: bool = True,
                workers: int = 1) -> SplitCheck:
    """Check one split of a constructed dataset (built with ``check_files=False``).

    Args:
        dataset: the dataset.
        limit: read only the first ``limit`` entries (None: all).
        progress: show a tqdm bar.
        workers: reading threads (PIL decodes outside the GIL).
    Returns:
        the :class:`SplitCheck`.
    """
    report = SplitCheck(split=dataset.split, list_file=str(dataset.list_file), entries=len(dataset))
    seen: Counter[str] = Counter(s.entry for s in dataset.samples)
    report.duplicates = [f"{e!r} listed {n} times" for e, n in seen.items() if n > 1]
    missing = dataset.missing_files()
    report.missing = [f"{s.where}: {p} not found" for s, p in missing]
    missing_samples = {id(s) for s, _ in missing}
    samples = dataset.samples[:limit] if limit is not None else dataset.samples
    readable = [s for s in samples if id(s) not in missing_samples]
    report.checked = len(readable)
    work = functools.partial(_check_sample, multichannel=dataset.multichannel_labels)
    bar = tqdm(total=len(readable), desc=f"{dataset.title} {dataset.split}", disable=not progress, leave=False)
    sizes: Counter[str] = Counter()
    unknown: Counter[int] = Counter()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(work, readable) if workers > 1 else map(work, readable)
        for result in results:
            bar.update(1)
            if result.image_size is not None:
                sizes[f"{result.image_size[0]}x{result.image_size[1]}"] += 1
            report.unreadable += result.unreadable
            if result.size_mismatch:
                report.size_mismatch.append(result.size_mismatch)
            for label_id, pixels in result.id_pixels.items():
                report.labelled_pixels += pixels
                if label_id not in dataset.label_ids:
                    unknown[label_id] += pixels
                if label_id >= len(dataset.lut) or dataset.lut[label_id] < 0:
                    report.ignored_pixels += pixels
    bar.close()
    report.image_sizes = dict(sizes)
    report.unknown_label_ids = dict(sorted(unknown.items()))
    return report


def check_dataset(name: str, root: str | Path = "datasets", split: str | None = None, num_classes: int = 19,
                  city: str | None = None, limit: int | None = None, progress: bool = True,
                  workers: int = 1) -> CheckReport:
    """Read every listed image/label pair of a dataset and report what is wrong.

    Args:
        name: ``"gta5"``, ``"synthia"``, ``"cityscapes"`` or ``"nthu"``.
        root: the datasets root (default ``datasets``).
        split: one split, or None for every list file found.
        num_classes: class set used to count ignored pixels (19, 16, 13, 10).
        city: NTHU city (default Rome).
        limit: read at most this many entries per split.
        progress: tqdm progress bars.
        workers: reading threads.
    Returns:
        a :class:`CheckReport`; ``report.ok`` is False when anything is wrong and
        ``report.format()`` says what.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    cls = DATASETS[key]
    root = Path(root)
    report = CheckReport(dataset=key, root=str(root), num_classes=num_classes)
    try:
        city = report.city = NTHU.resolve_city(root, city or "Rome") if cls is NTHU else None
    except DatasetError as err:
        report.errors.append(str(err))
        return report
    list_dir = root / cls.folder / (city or "") / "list"
    all_splits = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
    splits = [split] if split is not None else all_splits
    if not splits:
        # Constructing a split reports the missing folder or list with the expected layout.
        splits = ["train"]

    referenced: set[Path] = set()
    opened: list[SegmentationDataset] = []
    for name_ in dict.fromkeys(splits + all_splits):
        try:
            dataset = get_dataset(key, root=root, split=name_, num_classes=num_classes, check_files=False,
                                  city=city)
        except DatasetError as err:
            if name_ in splits:
                report.errors.append(str(err))
            continue
        opened.append(dataset)
        referenced |= {p for s in dataset.samples for p in (s.image, s.label) if p is not None}
        if name_ in splits:
            report.splits[name_] = check_split(dataset, limit, progress, workers)

    if opened:
        for image, label, expects_label in opened[0].disk_pairs():
            if image is not None and label is None and expects_label:
                report.missing_partners.append(f"image {image} has no label file")
            elif image is None and label is not None:
                report.missing_partners.append(f"label {label} has no image file")
            for path in (image, label):
                if path is not None and path not in referenced:
                    report.unlisted.append(str(path))
    return report
