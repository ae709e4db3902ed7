"""Fabricated GTA5 and Cityscapes folders in the authors' layouts, for checks without the data.

The files, folders, list entries and label-id encodings are those the loaders of
:mod:`maxsq_lib.data.datasets` read (GTA5: palette PNGs of Cityscapes ids; Cityscapes:
``leftImg8bit`` / ``gtFine_labelIds``); the pictures and labels are random. Used by the GPU check
(``benchmarks/gpu_check.py``, which must run on a lent machine with only numpy, Pillow and torch,
hence nothing here beyond numpy and Pillow) and by ``tests/test_paper_shape.py``. No notebook
introduces it: it is test equipment, not course material.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REAL_SIZES: dict[str, tuple[int, int]] = {"gta5": (1914, 1052), "cityscapes": (2048, 1024)}
"""The datasets' native image sizes ``(W, H)``: GTA5 frames, Cityscapes leftImg8bit and gtFine."""

TOY_SIZES: dict[str, tuple[int, int]] = {"gta5": (191, 105), "cityscapes": (204, 102)}
"""About a tenth of :data:`REAL_SIZES`, for the CPU rehearsal of the GPU check."""

CITYSCAPES_IDS = 34
"""Cityscapes label ids 0..33 (``gtFine_labelIds``); the loaders map them to the 19 classes."""


def _blocks(rng: np.random.Generator, w: int, h: int, cell: int, channels: int | None, high: int) -> np.ndarray:
    # Random values constant over cell x cell squares: a real-size file then encodes and decodes
    # in a fraction of the time per-pixel noise takes, and labels form regions as real ones do.
    shape = (h // cell + 1, w // cell + 1) + ((channels,) if channels else ())
    coarse = rng.integers(0, high, shape, dtype=np.uint8)
    return coarse.repeat(cell, axis=0).repeat(cell, axis=1)[:h, :w]


def fabricate(root: str | Path, *, sizes: dict[str, tuple[int, int]] | None = None, source_train: int = 8,
              source_val: int = 2, target_train: int = 3, target_val: int = 2, seed: int = 0) -> Path:
    """Write ``GTA5/`` and ``Cityscapes/`` under ``root`` in their real layouts, with lists.

    Args:
        root: the folder that becomes ``data.root`` (created if missing).
        sizes: image size ``(W, H)`` per dataset (``"gta5"``, ``"cityscapes"``); labels have the
            image's size. None: :data:`TOY_SIZES`; :data:`REAL_SIZES` for the native resolution.
        source_train, source_val: GTA5 images in ``list/train.txt`` and ``list/val.txt``
            (ids 1.., then the next ones).
        target_train, target_val: Cityscapes images in ``train`` (city ``aachen``) and ``val``
            (city ``frankfurt``).
        seed: seed of the random pictures and labels.
    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    sizes = {**TOY_SIZES, **(sizes or {})}
    rng = np.random.default_rng(seed)

    def picture(w: int, h: int) -> Image.Image:
        return Image.fromarray(_blocks(rng, w, h, 4, 3, 256), "RGB")

    def label_ids(w: int, h: int) -> np.ndarray:
        return _blocks(rng, w, h, 8, None, CITYSCAPES_IDS)

    gta = root / "GTA5"
    for sub in ("images", "labels", "list"):
        (gta / sub).mkdir(parents=True, exist_ok=True)
    gw, gh = sizes["gta5"]
    ids = {"train": range(1, source_train + 1), "val": range(source_train + 1, source_train + source_val + 1)}
    for split, numbers in ids.items():
        for i in numbers:
            picture(gw, gh).save(gta / "images" / f"{i:05d}.png")
            labels = Image.fromarray(label_ids(gw, gh), "P")  # palette index = Cityscapes label id
            labels.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
            labels.save(gta / "labels" / f"{i:05d}.png")
        (gta / "list" / f"{split}.txt").write_text("".join(f"{i}\n" for i in numbers))

    cs = root / "Cityscapes"
    (cs / "list").mkdir(parents=True, exist_ok=True)
    cw, ch = sizes["cityscapes"]
    for split, count, city in (("train", target_train, "aachen"), ("val", target_val, "frankfurt")):
        entries = []
        for k in range(count):
            base = f"{city}_{k:06d}_000019"
            for top in ("leftImg8bit", "gtFine"):
                (cs / top / split / city).mkdir(parents=True, exist_ok=True)
            picture(cw, ch).save(cs / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png")
            Image.fromarray(label_ids(cw, ch), "L").save(cs / "gtFine" / split / city / f"{base}_gtFine_labelIds.png")
            entries.append(f"{split}_{base}\n")
        (cs / "list" / f"{split}.txt").write_text("".join(entries))
    return root
