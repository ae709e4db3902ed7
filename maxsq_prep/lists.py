"""Write the authors' split-list files from the data on disk.

The loaders of :mod:`maxsq_lib.data` read ``<root>/<Dataset>/list/<split>.txt``. The authors ship
these lists in their repository (``gta5_list/``, ``synthia_list/``, ``city_list/``,
``NTHU_list/``); they can be copied there, or written from the files with the functions below.
Every writer is atomic (temporary file in the same folder, then ``os.replace``), returns
``{split: number of entries}``, and warns about ids it had to leave out. Introduced in notebook
``01_data``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from maxsq_lib.data.datasets import NTHU, DatasetError
from maxsq_lib.files import write_text_atomic

SYNTHIA_SPLITS: dict[str, range] = {"train": range(0, 9000), "val": range(9000, 9400)}
"""The authors' SYNTHIA split: ids 0-8999 train, 9000-9399 val."""

CITYSCAPES_SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Cityscapes split folders that get a list (plus ``trainval``)."""


def write_list(path: str | Path, entries: Iterable[str]) -> int:
    """Write one list file atomically, one entry a line.

    Args:
        path: the list file.
        entries: its entries, in order.
    Returns:
        the number of entries written.
    """
    path = Path(path)
    entries = [str(e) for e in entries]
    write_text_atomic(path, "".join(f"{e}\n" for e in entries))
    return len(entries)


def _require(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}\nExpected layout:\n{layout}")


def _short(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:10])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")


def _numeric_stems(folder: Path) -> set[int]:
    return {int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()}


def write_cityscapes_lists(root: str | Path = "datasets") -> dict[str, int]:
    """Write ``Cityscapes/list/{train,val,test,trainval}.txt`` from the ``leftImg8bit`` tree.

    Entries are ``<split>_<city>_<frame>`` (``train_aachen_000000_000019``), sorted by city and
    name; ``trainval`` is train followed by val.

    Args:
        root: the datasets root.
    Returns:
        ``{split: count}``.
    """
    base = Path(root) / "Cityscapes"
    images = base / "leftImg8bit"
    _require(images, f"  {images}/train/aachen/aachen_000000_000019_leftImg8bit.png")
    counts: dict[str, int] = {}
    lists: dict[str, list[str]] = {}
    for split in CITYSCAPES_SPLITS:
        files = sorted((images / split).glob("*/*_leftImg8bit.png"))
        if not files:
            continue
        lists[split] = [f"{split}_{p.name[: -len('_leftImg8bit.png')]}" for p in files]
        counts[split] = write_list(base / "list" / f"{split}.txt", lists[split])
    others = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name not in CITYSCAPES_SPLITS)
    if others:
        warnings.warn(f"Cityscapes: folders {others} in {images} are not listed (only {CITYSCAPES_SPLITS})")
    if not counts:
        raise DatasetError(f"no *_leftImg8bit.png files under {images}/{{train,val,test}}/<city>/")
    if "train" in lists and "val" in lists:
        counts["trainval"] = write_list(base / "list" / "trainval.txt", lists["train"] + lists["val"])
    return counts


def write_synthia_lists(root: str | Path = "datasets") -> dict[str, int]:
    """Write ``SYNTHIA/list/{train,val}.txt``: ids 0-8999 and 9000-9399 that have image and label.

    Ids of the ranges without a complete pair, and ids outside both ranges, are left out with a
    warning that names them.

    Args:
        root: the datasets root.
    Returns:
        ``{split: count}``.
    """
    base = Path(root) / "SYNTHIA"
    layout = f"  {base}/RGB/0000000.png\n  {base}/GT/LABELS/0000000.png"
    _require(base / "RGB", layout)
    _require(base / "GT" / "LABELS", layout)
    images, labels = _numeric_stems(base / "RGB"), _numeric_stems(base / "GT" / "LABELS")
    complete = images & labels
    counts = {}
    for split, ids in SYNTHIA_SPLITS.items():
        present = [i for i in ids if i in complete]
        gaps = [i for i in ids if i not in complete]
        if gaps:
            warnings.warn(f"SYNTHIA {split}: {len(gaps)} of ids {ids.start}-{ids.stop - 1} have no image/label pair "
                          f"and are not listed: {_short(gaps)}")
        counts[split] = write_list(base / "list" / f"{split}.txt", present)
    outside = sorted((images | labels) - set().union(*SYNTHIA_SPLITS.values()))
    if outside:
        warnings.warn(f"SYNTHIA: ids outside 0-9399 are not listed: {_short(outside)}")
    unpaired = sorted((images ^ labels) - set(outside))
    if unpaired:
        warnings.warn(f"SYNTHIA: ids with an image or a label but not both: {_short(unpaired)}")
    return counts


def write_nthu_lists(root: str | Path = "datasets", city: str = "Rome") -> dict[str, int]:
    """Write ``NTHU_Datasets/<City>/list/{train,test}.txt`` from ``Images/Train`` and ``Images/Test``.

    Args:
        root: the datasets root.
        city: Rome, Rio, Tokyo or Taipei (or another city folder).
    Returns:
        ``{"train": count, "test": count}``.
    """
    city = NTHU.resolve_city(Path(root), city)
    base = Path(root) / "NTHU_Datasets" / city
    counts = {}
    for split, folder in (("train", "Train"), ("test", "Test")):
        images = base / "Images" / folder
        _require(images, f"  {images}/pano_00002_0_180.jpg (or .png)")
        stems = sorted({p.stem for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png")})
        counts[split] = write_list(base / "list" / f"{split}.txt", stems)
    return counts


def _read_gta5_split_file(split_file: Path) -> dict[str, list[int]]:
    from scipy.io import loadmat

    if not split_file.is_file():
        raise DatasetError(f"GTA5 split file not found: {split_file} (split.mat from the GTA5 site)")
    try:
        mat = loadmat(split_file)
    except Exception as err:  # scipy raises several types for bad files
        raise DatasetError(f"cannot read GTA5 split file {split_file}: {err}") from err
    keys = {"train": "trainIds", "val": "valIds", "test": "testIds"}
    missing = [k for k in keys.values() if k not in mat]
    if missing:
        raise DatasetError(f"GTA5 split file {split_file} lacks {missing}; expected trainIds, valIds, testIds")
    return {split: [int(i) for i in mat[key].ravel()] for split, key in keys.items()}


def write_gta5_lists(root: str | Path = "datasets", split_file: str | Path | None = None) -> dict[str, int]:
    """Write ``GTA5/list/*.txt``: ``all`` from the files, and train/val/test/trainval from ``split.mat``.

    ``all`` lists every id with both an image and a label. With ``split_file`` (``split.mat``
    from the GTA5 site, holding ``trainIds``, ``valIds``, ``testIds``) the official splits are
    written too, in the file's order; ``trainval`` is train followed by val.

    Args:
        root: the datasets root.
        split_file: path of ``split.mat``, or None.
    Returns:
        ``{split: count}``.
    """
    base = Path(root) / "GTA5"
    layout = f"  {base}/images/00001.png\n  {base}/labels/00001.png"
    _require(base / "images", layout)
    _require(base / "labels", layout)
    images, labels = _numeric_stems(base / "images"), _numeric_stems(base / "labels")
    unpaired = sorted(images ^ labels)
    if unpaired:
        warnings.warn(f"GTA5: ids with an image or a label but not both are not listed in all.txt: {_short(unpaired)}")
    counts = {"all": write_list(base / "list" / "all.txt", sorted(images & labels))}
    if split_file is not None:
        splits = _read_gta5_split_file(Path(split_file))
        splits["trainval"] = splits["train"] + splits["val"]
        for split, ids in splits.items():
            absent = [i for i in ids if i not in images or i not in labels]
            if absent and split != "trainval":
                warnings.warn(f"GTA5 {split}: {len(absent)} listed ids have no image/label pair on disk: {_short(absent)}")
            counts[split] = write_list(base / "list" / f"{split}.txt", ids)
    return counts
