"""Dataset classes for GTA5, SYNTHIA-RAND-CITYSCAPES, Cityscapes and NTHU (cross-city).

Each class reads the authors' folder layout under a root folder (default ``datasets/``,
docs/authors_code.md §6.1), takes its items from a list file that lives with the data
(``<root>/GTA5/list/<split>.txt`` and so on, one entry a line in the authors' formats, so their
shipped lists can be dropped in; :mod:`maxsq_prep.lists` can also write them), maps label ids to
the ids of a class set with the tables of :mod:`maxsq_lib.labels`, and applies the authors'
preprocessing (:mod:`maxsq_lib.data.transforms`). Introduced in notebook ``01_data``.

An item is ``(image, label, name)``:

* ``image`` float32 tensor (3, H, W): BGR, minus :data:`~maxsq_lib.data.transforms.IMG_MEAN_BGR`;
* ``label`` int64 tensor (H, W) of class-set ids, -1 for ignore (all -1 for unlabelled splits);
* ``name`` the file stem (for Cityscapes the base name ``aachen_000000_000019``).

Training augmentation (``augment=True``: mirror, then blur) draws its random numbers from a
generator seeded with ``(seed, epoch, index)``; the engine sets ``dataset.seed`` and calls
``dataset.set_epoch(epoch)`` before each epoch. Items then do not depend on the DataLoader worker
count or access order, and a resumed run replays the same augmentations. With
``persistent_workers=True`` the workers keep the epoch they started with, so leave it off (the
default) or recreate the loader each epoch.

Every problem with the data raises :class:`DatasetError` with the path, the list line and the
expected layout. Label ids that the class set does not map become -1; ids outside the dataset's
own id range are also -1 and are counted by :func:`maxsq_lib.data.check.check_dataset`.
"""

from __future__ import annotations

import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import png
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..config import CITIES
from ..labels import CITYSCAPES_LABEL_IDS, IGNORE_INDEX, SYNTHIA_LABEL_IDS, ClassSet, class_set_for
from .transforms import (Size, apply_augmentation, draw_augmentation, image_to_tensor, item_rng,
                         map_label_ids, resize_image, resize_label)

PAPER_SIZES: dict[str, Size] = {"gta5": (1280, 720), "synthia": (1280, 760), "cityscapes": (1024, 512),
                                "nthu": (1024, 512)}
"""Input sizes ``(W, H)`` the authors train with (docs/authors_code.md §5.2); pass as ``size=``."""

NTHU_CITIES: tuple[str, ...] = CITIES
"""The four cities of the NTHU cross-city benchmark."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DatasetError(ValueError):
    """A dataset on disk does not match the expected layout, or one of its files is unusable."""


# --------------------------------------------------------------------------------------------
# Reading files


def _corrupt(path: Path, where: str, reason: object) -> DatasetError:
    suffix = f" (listed at {where})" if where else ""
    return DatasetError(f"corrupt or truncated image file: {path}{suffix}: {reason}")


def read_image(path: str | Path, where: str = "") -> Image.Image:
    """Read an image file fully and return it in RGB mode.

    Args:
        path: image file (PNG or JPEG).
        where: list file and line, for error messages.
    Returns:
        a loaded RGB PIL image.
    Raises:
        DatasetError: the file is missing, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}" + (f" (listed at {where})" if where else ""))
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as err:
        raise _corrupt(path, where, err) from err


def read_png16_channels(path: str | Path, where: str = "") -> np.ndarray:
    """Read a 16-bit RGB or RGBA PNG with all 16 bits (PIL keeps only the high byte), with pypng.

    Args:
        path: a PNG with bit depth 16 and colour type 2 (RGB) or 6 (RGBA), interlaced or not.
        where: list file and line, for error messages.
    Shape:
        -> (H, W, C) uint16, C = 3 or 4.
    Returns:
        the samples.
    Raises:
        DatasetError: not such a PNG, or corrupt / truncated (a bad chunk checksum says "bad CRC").
    """
    path = Path(path)
    try:
        width, height, pixels, info = png.Reader(filename=str(path)).read_flat()
    except png.ChunkError as err:
        reason = f"bad CRC or chunk ({err})" if "checksum" in str(err).lower() else err
        raise _corrupt(path, where, reason) from err
    except (png.Error, OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, where, err) from err
    if info["bitdepth"] != 16 or info["greyscale"] or info["planes"] not in (3, 4):
        raise DatasetError(f"{path}: expected a 16-bit RGB(A) PNG, got bit depth {info['bitdepth']}, "
                           f"{info['planes']} plane(s){' (greyscale)' if info['greyscale'] else ''}")
    return np.asarray(pixels, dtype=np.uint16).reshape(height, width, info["planes"])


def _is_png16_color(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    # Signature (8), IHDR length+type (8), width, height (8), bit depth, colour type.
    return head.startswith(_PNG_SIGNATURE) and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def read_label_ids(path: str | Path, where: str = "", multichannel: bool = False) -> np.ndarray:
    """Read the raw label ids of a label image (before mapping to a class set).

    Accepted encodings: palette PNGs (the palette *index* is the id, as GTA5), 8-bit grayscale,
    16-bit grayscale, and with ``multichannel=True`` channel 0 of an RGB(A) image, 8- or 16-bit
    (SYNTHIA's ``GT/LABELS``).

    Args:
        path: label file.
        where: list file and line, for error messages.
        multichannel: accept colour images and take channel 0.
    Shape:
        -> (H, W) unsigned integer ids.
    Returns:
        the id map (uint8, or uint16 for 16-bit files).
    Raises:
        DatasetError: missing, corrupt, truncated, or an unsupported encoding.
    """
    path = Path(path)
    suffix = f" (listed at {where})" if where else ""
    if not path.is_file():
        raise DatasetError(f"label file not found: {path}{suffix}")
    if multichannel and _is_png16_color(path):
        return read_png16_channels(path, where)[:, :, 0]
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            array = np.asarray(im)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as err:
        raise _corrupt(path, where, err) from err
    if mode in ("P", "L") or mode.startswith("I;16"):
        return array
    if mode == "I":
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise DatasetError(f"{path}{suffix}: label ids must lie in 0..65535")
        return array.astype(np.uint16)
    if multichannel and array.ndim == 3:
        return np.ascontiguousarray(array[:, :, 0])
    expected = "a palette or grayscale PNG"
    if multichannel:
        expected += ", or an RGB(A) PNG whose channel 0 holds the class id"
    raise DatasetError(f"{path}{suffix}: label image has mode {mode!r}; expected {expected} of label ids")


# --------------------------------------------------------------------------------------------
# The datasets


@dataclass(frozen=True)
class Sample:
    """One list entry resolved to files.

    Args:
        name: item name (file stem).
        image: image path.
        label: label path, None for unlabelled splits.
        list_file: the list file it comes from.
        line_no: 1-based line in the list file.
        entry: the text of that line.
    """

    name: str
    image: Path
    label: Path | None
    list_file: Path
    line_no: int
    entry: str

    @property
    def where(self) -> str:
        """``list_file:line ('entry')``, for messages."""
        return f"{self.list_file}:{self.line_no} ({self.entry!r})"


def _parse_size(size, what: str = "size") -> Size | None:
    if size is None:
        return None
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (W, H) or None, got {size!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"{what} must be positive, got {size!r}")
    return (width, height)


class ListedFiles:
    """A dataset's files as its list file names them, checked on disk (use a subclass).

    The layout of each dataset (folders, list entries, file names) is a table in its subclass;
    this class reads the list, resolves every entry to its files and says, naming the file and the
    expected layout, what is missing. :class:`SegmentationDataset` adds reading and preprocessing.

    Args:
        root: folder that holds the datasets (``GTA5/``, ``SYNTHIA/``, ``Cityscapes/``,
            ``NTHU_Datasets/``).
        split: list name, i.e. ``<dataset>/list/<split>.txt``.
        check_files: check at construction that every listed file exists.
    """

    title: ClassVar[str] = ""
    folder: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    entry_example: ClassVar[str] = ""
    writer: ClassVar[str] = ""
    # (digits, image folder, label folder) where list entries are integer ids (GTA5, SYNTHIA)
    numbered: ClassVar[tuple[int, str, str] | None] = None

    def __init__(self, root: str | Path = "datasets", split: str = "train", check_files: bool = True) -> None:
        self.root = Path(root)
        self.split = str(split)
        self._require_folder()
        self.list_file = self.list_path(self.split)
        self.samples: list[Sample] = self._read_list()
        if check_files:
            self._check_files()

    def __len__(self) -> int:
        return len(self.samples)

    # ---- layout (subclasses) -------------------------------------------------------------

    @property
    def config_name(self) -> str:
        """The dataset's name in configs and commands (``gta5``, ``nthu``, ...)."""
        return next((k for k, v in DATASETS.items() if isinstance(self, v)), type(self).__name__.lower())

    @property
    def dataset_dir(self) -> Path:
        """The dataset's own folder under ``root``."""
        return self.root / self.folder

    @property
    def list_dir(self) -> Path:
        """Folder of the list files."""
        return self.dataset_dir / "list"

    @property
    def labelled(self) -> bool:
        """Whether this split has label files."""
        return True

    def list_path(self, split: str) -> Path:
        """The list file of a split."""
        return self.list_dir / f"{split}.txt"

    def available_splits(self) -> list[str]:
        """Splits whose list file exists (file stems in the list folder)."""
        return sorted(p.stem for p in self.list_dir.glob("*.txt")) if self.list_dir.is_dir() else []

    def sample_from_entry(self, entry: str, line_no: int) -> Sample:
        """Resolve one list entry to its files (subclasses, or a :attr:`numbered` layout: the entry is a
        non-negative integer id, zero-padded in the file names ``<image folder>/<id>.png`` and
        ``<label folder>/<id>.png``)."""
        if self.numbered is None:
            raise NotImplementedError
        digits, image_dir, label_dir = self.numbered
        try:
            number = int(entry)
        except ValueError:
            raise self._bad_entry(entry, line_no, "not an integer id") from None
        if number < 0:
            raise self._bad_entry(entry, line_no, "negative id")
        stem = f"{number:0{digits}d}"
        return Sample(stem, self.dataset_dir / image_dir / f"{stem}.png",
                      self.dataset_dir / label_dir / f"{stem}.png", self.list_file, line_no, entry)

    def disk_pairs(self) -> list[tuple[Path | None, Path | None, bool]]:
        """Every image and label file on disk, paired by name: ``(image, label, expects_label)``.

        Used by the checks to find files without a partner and files no list mentions.
        """
        if self.numbered is None:
            raise NotImplementedError
        _, image_dir, label_dir = self.numbered
        return _pair(*(_stem_map(self.dataset_dir / folder, "*.png") for folder in (image_dir, label_dir)))

    # ---- construction ----------------------------------------------------------------------

    def _layout_text(self) -> str:
        return "\n".join("  " + line for line in self.layout.format(root=self.root).splitlines())

    def _require_folder(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(f"dataset root not found: {self.root}\nExpected {self.title} in this layout:\n"
                               f"{self._layout_text()}")
        if not self.dataset_dir.is_dir():
            raise DatasetError(f"{self.title} folder not found: {self.dataset_dir}\n"
                               f"Expected this layout:\n{self._layout_text()}")

    def _read_list(self) -> list[Sample]:
        if not self.list_file.is_file():
            found = self.available_splits()
            raise DatasetError(f"{self.title} list file not found: {self.list_file}\n"
                               f"Expected one entry a line, e.g. {self.entry_example!r}; lists found: "
                               f"{found or 'none'}. {self.writer} writes them from the files on disk.\n"
                               f"Expected layout:\n{self._layout_text()}")
        samples = []
        for line_no, line in enumerate(self.list_file.read_text().splitlines(), start=1):
            entry = line.strip()
            if entry:
                samples.append(self.sample_from_entry(entry, line_no))
        if not samples:
            raise DatasetError(f"{self.title} list file is empty: {self.list_file}\n"
                               f"Expected one entry a line, e.g. {self.entry_example!r}.")
        return samples

    def _bad_entry(self, entry: str, line_no: int, why: str) -> DatasetError:
        return DatasetError(f"bad entry at {self.list_file}:{line_no} ({entry!r}): {why}; "
                            f"expected entries like {self.entry_example!r}")

    def missing_files(self) -> list[tuple[Sample, Path]]:
        """Listed files that do not exist, as ``(sample, path)``."""
        return [(sample, path) for sample in self.samples for path in (sample.image, sample.label)
                if path is not None and not path.is_file()]

    def _check_files(self) -> None:
        missing = self.missing_files()
        if missing:
            shown = "\n".join(f"  {s.where}: {p} not found" for s, p in missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise DatasetError(f"{len(missing)} file(s) named by {self.list_file} are missing:\n"
                               f"{shown}{more}\nExpected layout:\n{self._layout_text()}")

class SegmentationDataset(ListedFiles, Dataset):
    """Reading and preprocessing of the four datasets, the authors' way (use a subclass).

    Args:
        root: folder that holds the datasets (see :class:`ListedFiles`).
        split: list name, i.e. ``<dataset>/list/<split>.txt``.
        size: output image size ``(W, H)`` (bicubic resize, aspect ratio not kept), or None for the
            native size. The authors' sizes are in :data:`PAPER_SIZES`.
        num_classes: 19, 16, 13 or 10: the class set of the labels
            (:func:`maxsq_lib.labels.class_set_for`).
        augment: training augmentation (mirror, then blur), drawn per ``(seed, epoch, index)``.
        label_size: ``"image"`` (labels at the output image size, nearest resize, the authors'
            protocol), ``"native"`` (the label file's resolution), or an explicit ``(W, H)``.
        full_resolution_labels: shorthand for ``label_size="native"``.
        seed: seed of the augmentation draws (the engine sets it from the run's seed).
        flip_p: probability of the horizontal mirror when augmenting.
        blur_p: probability of the Gaussian blur when augmenting (0 turns it off).
        check_files: check at construction that every listed file exists.
        allow_size_mismatch: resize image and label independently when their sizes differ, as the
            authors' code does (a few real GTA5 pairs differ); the first such pair is reported
            once and :attr:`size_mismatches` names them all (``maxsq data check`` lists them
            without training). False raises instead.
        cache_bytes: memory for keeping items resized and mapped (before augmentation) after
            their first read; 0 turns it off. Decoding PNGs was about a tenth of a MiniCity
            training step, and a run reads each image many times (epochs, every evaluation).
    """

    label_map: ClassVar[str] = "cityscapes"  # which lookup table of the class set
    label_ids: ClassVar[frozenset[int]] = CITYSCAPES_LABEL_IDS
    multichannel_labels: ClassVar[bool] = False

    def __init__(self, root: str | Path = "datasets", split: str = "train", size: Size | None = None,
                 num_classes: int = 19, augment: bool = False, *, label_size: Size | str = "image",
                 full_resolution_labels: bool = False, seed: int = 0, flip_p: float = 0.5,
                 blur_p: float = 0.5, check_files: bool = True, allow_size_mismatch: bool = True,
                 cache_bytes: int = 256 * 2**20) -> None:
        self.size = _parse_size(size)
        self.class_set: ClassSet = class_set_for(num_classes)
        self.num_classes = self.class_set.num_classes
        self.lut: np.ndarray = getattr(self.class_set, f"{self.label_map}_id_lut")
        self.augment = bool(augment)
        if full_resolution_labels:
            label_size = "native"
        if label_size not in ("image", "native"):
            label_size = _parse_size(label_size, "label_size")
        self.label_size = label_size
        self.seed = int(seed)
        self.epoch = 0
        self.flip_p = float(flip_p)
        self.blur_p = float(blur_p)
        self.allow_size_mismatch = bool(allow_size_mismatch)
        self.size_mismatches: set[str] = set()
        """Names of the items read so far whose image and label sizes differ."""
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[int, tuple[Image.Image, np.ndarray]] = {}
        self._cached_bytes = 0
        super().__init__(root, split, check_files)

    # ---- items -----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws the next items use (called by the engine)."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {len(self)} items, "
                f"size={self.size}, classes={self.class_set.name}, augment={self.augment})")

    def read_raw(self, index: int) -> tuple[Image.Image, np.ndarray | None]:
        """The image and the raw label ids of an item, as on disk (no resize, no mapping).

        Args:
            index: item index.
        Shape:
            label (H, W) unsigned ids, the image's size unless ``allow_size_mismatch``.
        Returns:
            ``(RGB PIL image, raw label ids or None for unlabelled splits)``.
        Raises:
            DatasetError: missing or corrupt files, or image and label sizes that differ.
        """
        sample = self.samples[index]
        image = read_image(sample.image, sample.where)
        if sample.label is None:
            return image, None
        raw = read_label_ids(sample.label, sample.where, self.multichannel_labels)
        label_wh = (raw.shape[1], raw.shape[0])
        if label_wh != image.size:
            what = (f"image and label sizes differ at {sample.where}: image {sample.image} is "
                    f"{image.size[0]}x{image.size[1]}, label {sample.label} is {label_wh[0]}x{label_wh[1]} (W x H)")
            if not self.allow_size_mismatch:
                raise DatasetError(what)
            if not self.size_mismatches:
                print(f"note: {what}; resized independently, as the authors' code does (reported "
                      f"once; maxsq data check {self.config_name} lists every such pair)",
                      file=sys.stderr)
            self.size_mismatches.add(sample.name)
        return image, raw

    def _label_target_size(self, image_size: Size, raw: np.ndarray | None, native_image: Size) -> Size:
        if self.label_size == "image":
            return image_size
        if self.label_size == "native":
            return (raw.shape[1], raw.shape[0]) if raw is not None else native_image
        return self.label_size

    def _prepared(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """The item resized and mapped, not augmented; kept in memory up to ``cache_bytes``.
        Callers get copies, so nothing they do reaches the cache."""
        hit = self._cache.get(index)
        if hit is None:
            image, raw = self.read_raw(index)
            native = image.size
            image = resize_image(image, self.size)
            label_wh = self._label_target_size(image.size, raw, native)
            if raw is None:
                label = np.full((label_wh[1], label_wh[0]), IGNORE_INDEX, dtype=np.int64)
            else:
                label = map_label_ids(resize_label(raw, label_wh), self.lut)
            hit = (image, label)
            nbytes = image.size[0] * image.size[1] * len(image.getbands()) + label.nbytes
            if self._cached_bytes + nbytes <= self.cache_bytes:
                self._cache[index] = hit
                self._cached_bytes += nbytes
        return hit[0].copy(), hit[1].copy()

    def _load(self, index: int, augment: bool, epoch: int | None = None) -> tuple[Image.Image, np.ndarray]:
        image, label = self._prepared(index)
        if augment:
            epoch = self.epoch if epoch is None else epoch
            draws = draw_augmentation(item_rng(self.seed, epoch, index), self.flip_p, self.blur_p)
            image, label = apply_augmentation(image, label, draws)
        return image, label

    def load_label(self, index: int) -> np.ndarray:
        """The preprocessed label of an item, without augmentation.

        Shape:
            -> (H, W) int64, class-set ids and -1.
        """
        return self._load(index, augment=False)[1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """One item ``(image, label, name)``.

        Shape:
            image (3, H, W) float32 BGR minus mean; label (H, W) int64 (or the label size).
        """
        return self.item(index, self.epoch)

    def item(self, index: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The item as in epoch ``epoch``, whatever :meth:`set_epoch` said (the engine's
        resumable sampler knows each sample's epoch; it does not depend on dataset state).

        Shape:
            image (3, H, W) float32 BGR minus mean; label (H, W) int64 (or the label size).
        """
        if index < 0:
            index += len(self)
        image, label = self._load(index, self.augment, epoch)
        return image_to_tensor(image), torch.from_numpy(label), self.samples[index].name


def _stem_map(folder: Path, pattern: str, suffix_to_strip: str = "") -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {(path.name[: -len(suffix_to_strip)] if suffix_to_strip else path.stem): path
            for path in sorted(folder.glob(pattern))}


def _pair(images: dict[str, Path], labels: dict[str, Path], expects_label: bool = True):
    return [(images.get(k), labels.get(k), expects_label) for k in sorted(set(images) | set(labels))]


class GTA5(SegmentationDataset):
    """GTA5 (Richter et al. 2016): ``GTA5/images/00001.png``, palette labels of Cityscapes ids.

    List entries are integer ids without padding (``1``); the authors train on ``train``
    (12,403 images). See :class:`SegmentationDataset` for the arguments.
    """

    title = "GTA5"
    folder = "GTA5"
    entry_example = "1"
    writer = "maxsq_prep.lists.write_gta5_lists(root)"
    numbered = (5, "images", "labels")
    layout = (
        "{root}/GTA5/images/00001.png      RGB frames, id zero-padded to 5 digits\n"
        "{root}/GTA5/labels/00001.png      palette PNGs, palette index = Cityscapes label id\n"
        "{root}/GTA5/list/train.txt        one id per line, e.g. 1"
    )


class SYNTHIA(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES: ``SYNTHIA/RGB/0000000.png``, 16-bit labels (channel 0 = class id).

    List entries are integer ids (``0``); the authors use 0-8999 for train, 9000-9399 for val.
    Use ``num_classes=16`` for the paper's SYNTHIA benchmark. See :class:`SegmentationDataset`.
    """

    title = "SYNTHIA"
    folder = "SYNTHIA"
    label_map = "synthia"
    label_ids = SYNTHIA_LABEL_IDS
    multichannel_labels = True
    entry_example = "0"
    writer = "maxsq_prep.lists.write_synthia_lists(root)"
    numbered = (7, "RGB", "GT/LABELS")
    layout = (
        "{root}/SYNTHIA/RGB/0000000.png          RGB frames, id zero-padded to 7 digits\n"
        "{root}/SYNTHIA/GT/LABELS/0000000.png    16-bit PNGs, channel 0 = SYNTHIA class id\n"
        "{root}/SYNTHIA/list/train.txt           one id per line, e.g. 0"
    )


class Cityscapes(SegmentationDataset):
    """Cityscapes: ``leftImg8bit/<split>/<city>/<base>_leftImg8bit.png`` and ``gtFine/..._labelIds.png``.

    List entries are ``<split folder>_<city>_<rest>`` (``train_aachen_000000_000019``); the item
    name is the base name ``aachen_000000_000019``. See :class:`SegmentationDataset`.
    """

    title = "Cityscapes"
    folder = "Cityscapes"
    entry_example = "train_aachen_000000_000019"
    writer = "maxsq_prep.lists.write_cityscapes_lists(root)"
    layout = (
        "{root}/Cityscapes/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png\n"
        "{root}/Cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png   (label ids)\n"
        "{root}/Cityscapes/list/train.txt    one entry per line, e.g. train_aachen_000000_000019"
    )

    def sample_from_entry(self, entry: str, line_no: int) -> Sample:
        tokens = entry.split("_")
        if len(tokens) < 3 or not all(tokens):
            raise self._bad_entry(entry, line_no, "expected <split>_<city>_<frame>")
        split_folder, city = tokens[0], tokens[1]
        base = "_".join(tokens[1:])
        folder = Path(split_folder) / city
        return Sample(base, self.dataset_dir / "leftImg8bit" / folder / f"{base}_leftImg8bit.png",
                      self.dataset_dir / "gtFine" / folder / f"{base}_gtFine_labelIds.png", self.list_file,
                      line_no, entry)

    def disk_pairs(self):
        pairs = []
        keys = {(p.parent.parent.name, p.parent.name)
                for top in ("leftImg8bit", "gtFine") for p in (self.dataset_dir / top).glob("*/*/*.png")}
        for split_folder, city in sorted(keys):
            images, labels = (_stem_map(self.dataset_dir / top / split_folder / city, f"*{suffix}", suffix)
                              for top, suffix in (("leftImg8bit", "_leftImg8bit.png"),
                                                  ("gtFine", "_gtFine_labelIds.png")))
            pairs += _pair(images, labels)
        return pairs


class NTHU(SegmentationDataset):
    """NTHU cross-city (Chen et al. 2017): ``NTHU_Datasets/<City>/Images/{Train,Test}/<id>.jpg``.

    Split ``"train"`` is unlabelled (labels all -1); ``"val"`` (alias ``"test"``) reads
    ``list/test.txt`` with the labels ``Labels/Test/<id>_eval.png`` (Cityscapes label ids). The
    paper uses ``num_classes=13``.

    Args:
        city: Rome, Rio, Tokyo or Taipei (case-insensitive), or another city folder that exists.
        The other arguments: see :class:`SegmentationDataset`.
    """

    title = "NTHU"
    folder = "NTHU_Datasets"
    entry_example = "pano_00002_0_180"
    writer = "maxsq_prep.lists.write_nthu_lists(root, city)"
    layout = (
        "{root}/NTHU_Datasets/<City>/Images/Train/pano_00002_0_180.jpg   (or .png), unlabelled\n"
        "{root}/NTHU_Datasets/<City>/Images/Test/<id>.jpg                 (or .png)\n"
        "{root}/NTHU_Datasets/<City>/Labels/Test/<id>_eval.png            Cityscapes label ids\n"
        "{root}/NTHU_Datasets/<City>/list/train.txt, test.txt             e.g. pano_00002_0_180\n"
        "Cities: Rome, Rio, Tokyo, Taipei"
    )

    def __init__(self, root: str | Path = "datasets", split: str = "train", size: Size | None = None,
                 num_classes: int = 19, augment: bool = False, *, city: str = "Rome", **kwargs) -> None:
        self.city = self.resolve_city(Path(root), city)
        super().__init__(root, split, size, num_classes, augment, **kwargs)

    @staticmethod
    def resolve_city(root: Path, city: str) -> str:
        """The canonical city name (``"rome"`` -> ``"Rome"``); other names need an existing folder."""
        for known in NTHU_CITIES:
            if city.lower() == known.lower():
                return known
        if (root / "NTHU_Datasets" / city).is_dir():
            return city
        raise DatasetError(f"unknown NTHU city {city!r}: expected one of {', '.join(NTHU_CITIES)} "
                           f"(or a folder {root / 'NTHU_Datasets' / city})")

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.folder / self.city

    @property
    def labelled(self) -> bool:
        return self.list_path(self.split).stem == "test"

    def list_path(self, split: str) -> Path:
        return self.list_dir / f"{'test' if split in ('val', 'test') else split}.txt"

    def _image_path(self, folder: str, entry: str) -> Path:
        base = self.dataset_dir / "Images" / folder
        jpg, png = base / f"{entry}.jpg", base / f"{entry}.png"
        return png if not jpg.is_file() and png.is_file() else jpg

    def sample_from_entry(self, entry: str, line_no: int) -> Sample:
        if self.labelled:
            label = self.dataset_dir / "Labels" / "Test" / f"{entry}_eval.png"
            return Sample(entry, self._image_path("Test", entry), label, self.list_file, line_no, entry)
        return Sample(entry, self._image_path("Train", entry), None, self.list_file, line_no, entry)

    def disk_pairs(self):
        def images(folder: str) -> dict[str, Path]:
            found = {}
            for pattern in ("*.png", "*.jpg"):  # .jpg wins, as in the loader
                found.update(_stem_map(self.dataset_dir / "Images" / folder, pattern))
            return found

        train = [(path, None, False) for _, path in sorted(images("Train").items())]
        labels = _stem_map(self.dataset_dir / "Labels" / "Test", "*_eval.png", "_eval.png")
        return train + _pair(images("Test"), labels)


DATASETS: dict[str, type[SegmentationDataset]] = {"gta5": GTA5, "synthia": SYNTHIA, "cityscapes": Cityscapes,
                                                  "nthu": NTHU}
"""Dataset classes by their config name."""


def get_dataset(name: str, **kwargs) -> SegmentationDataset:
    """Build a dataset by name (the engine's config names).

    Args:
        name: ``"gta5"``, ``"synthia"``, ``"cityscapes"`` or ``"nthu"`` (case-insensitive).
        **kwargs: constructor arguments (``root``, ``split``, ``size``, ``num_classes``, ``augment``,
            ``city`` for NTHU; ``city=None`` is accepted and ignored for every dataset).
    Returns:
        the dataset.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    city = kwargs.pop("city", None)
    if city is not None:
        if key != "nthu":
            raise ValueError(f"city={city!r} only applies to the nthu dataset, not {key!r}")
        kwargs["city"] = city
    return DATASETS[key](**kwargs)
