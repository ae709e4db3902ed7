"""Dataset loaders on small fabricated samples written in the exact real layouts.

The helpers that write these samples (``make_*``, ``write_png16``) are also used by
``test_data_check.py``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from maxsq_lib.data import (
    GTA5,
    NTHU,
    SYNTHIA,
    Cityscapes,
    DatasetError,
    get_dataset,
    read_label_ids,
)
from maxsq_lib.data.datasets import read_png16_channels
from maxsq_lib.data.transforms import (
    draw_augmentation,
    item_rng,
    nearest_indices,
    resize_label,
)

# Independent copies of docs/authors_code.md §6.3, so that the library's tables are checked
# against the document rather than against themselves.
CITYSCAPES_TO_TRAIN19 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                         24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA_TO_TRAIN19 = {1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18,
                      12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3}
CLASS_SUBSETS = {
    19: list(range(19)),
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
    13: [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
    10: [0, 1, 2, 4, 5, 7, 8, 10, 11, 13],  # MiniCity: road ... car
}
MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)
W, H = 8, 6  # native size of the fabricated images


def expected_id(label_id: int, table: dict[int, int], num_classes: int) -> int:
    train19 = table.get(label_id)
    subset = CLASS_SUBSETS[num_classes]
    return subset.index(train19) if train19 in subset else -1


# ---------------------------------------------------------------------------------------------
# Writers of fabricated files


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    a, b, c = (x.astype(np.int16) for x in (a, b, c))
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def _filtered_rows(rows: np.ndarray, bpp: int, filters: list[int]) -> bytes:
    """PNG scanline filtering (types 0-4) of a (h, row_bytes) uint8 array."""
    out = []
    previous = np.zeros(rows.shape[1], dtype=np.uint8)
    for y, row in enumerate(rows):
        kind = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.uint8), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.uint8), previous[:-bpp]])
        predictor = [
            np.zeros_like(row), left, previous,
            ((left.astype(np.uint16) + previous) // 2).astype(np.uint8),
            _paeth(left, previous, upper_left),
        ][kind]
        out.append(bytes([kind]) + (row - predictor).astype(np.uint8).tobytes())
        previous = row
    return b"".join(out)


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png16(path: Path, array: np.ndarray, filters=(0,), interlace: bool = False, idat_size: int = 0) -> None:
    """Write an (H, W, C) uint16 array as a 16-bit RGB (C=3) or RGBA (C=4) PNG.

    ``idat_size`` > 0 splits the compressed data over several IDAT chunks, as libpng does.
    """
    height, width, channels = array.shape
    bpp = 2 * channels
    big_endian = array.astype(">u2").view(np.uint8).reshape(height, width * bpp)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in _ADAM7:
            part = array[y0::dy, x0::dx]
            if part.size:
                rows = part.astype(">u2").view(np.uint8).reshape(part.shape[0], part.shape[1] * bpp)
                raw += _filtered_rows(rows, bpp, list(filters))
    else:
        raw = _filtered_rows(big_endian, bpp, list(filters))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    color_type = {3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, int(interlace))
    path.parent.mkdir(parents=True, exist_ok=True)
    compressed = zlib.compress(raw)
    step = idat_size or len(compressed)
    idat = b"".join(chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b""))


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(path)


def write_palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG whose indices are the ids (colours deliberately unrelated to the ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), "P")
    im.putpalette(np.random.default_rng(7).integers(0, 256, 768).astype(np.uint8).tolist())
    im.save(path)


def write_gray(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), "L").save(path)


def random_rgb(seed: int, size=(W, H)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)


def random_ids(seed: int, ids, size=(W, H)) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.asarray(ids), (size[1], size[0]))


CS_IDS = list(range(34))


def make_gta5(root: Path, ids=(1, 2, 3), lists=None) -> Path:
    for i in ids:
        write_rgb(root / "GTA5" / "images" / f"{i:05d}.png", random_rgb(i))
        write_palette(root / "GTA5" / "labels" / f"{i:05d}.png", random_ids(100 + i, CS_IDS))
    for split, entries in (lists or {"train": list(ids)}).items():
        (root / "GTA5" / "list").mkdir(parents=True, exist_ok=True)
        (root / "GTA5" / "list" / f"{split}.txt").write_text("".join(f"{e}\n" for e in entries))
    return root


def make_synthia(root: Path, ids=(0, 1, 9000), lists=None) -> Path:
    for i in ids:
        write_rgb(root / "SYNTHIA" / "RGB" / f"{i:07d}.png", random_rgb(i))
        label = np.random.default_rng(200 + i).integers(0, 65536, (H, W, 3)).astype(np.uint16)
        label[:, :, 0] = random_ids(300 + i, list(range(23)))
        write_png16(root / "SYNTHIA" / "GT" / "LABELS" / f"{i:07d}.png", label, filters=(0, 1, 2, 3, 4))
    default = {"train": [i for i in ids if i < 9000], "val": [i for i in ids if i >= 9000]}
    for split, entries in (lists or default).items():
        (root / "SYNTHIA" / "list").mkdir(parents=True, exist_ok=True)
        (root / "SYNTHIA" / "list" / f"{split}.txt").write_text("".join(f"{e}\n" for e in entries))
    return root


CITYSCAPES_FRAMES = {
    "train": [("aachen", "000000_000019"), ("aachen", "000001_000019"), ("bremen", "000000_000019")],
    "val": [("frankfurt", "000000_000294")],
}


def make_cityscapes(root: Path, frames=None, write_lists: bool = True) -> Path:
    frames = frames or CITYSCAPES_FRAMES
    seed = 0
    for split, items in frames.items():
        entries = []
        for city, frame in items:
            base = f"{city}_{frame}"
            seed += 1
            write_rgb(root / "Cityscapes" / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", random_rgb(seed))
            write_gray(root / "Cityscapes" / "gtFine" / split / city / f"{base}_gtFine_labelIds.png",
                       random_ids(50 + seed, CS_IDS))
            entries.append(f"{split}_{base}")
        if write_lists:
            (root / "Cityscapes" / "list").mkdir(parents=True, exist_ok=True)
            (root / "Cityscapes" / "list" / f"{split}.txt").write_text("".join(f"{e}\n" for e in entries))
    return root


def make_nthu(root: Path, city: str = "Rome", train=("pano_00001_0_0", "pano_00002_0_180"),
              test=("pano_00010_2_0",), write_lists: bool = True) -> Path:
    base = root / "NTHU_Datasets" / city
    for k, name in enumerate(train):
        path = base / "Images" / "Train" / f"{name}.{'jpg' if k % 2 == 0 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_rgb(k)).save(path)
    for k, name in enumerate(test):
        path = base / "Images" / "Test" / f"{name}.png"
        write_rgb(path, random_rgb(10 + k))
        write_gray(base / "Labels" / "Test" / f"{name}_eval.png", random_ids(20 + k, CS_IDS))
    if write_lists:
        (base / "list").mkdir(parents=True, exist_ok=True)
        (base / "list" / "train.txt").write_text("".join(f"{n}\n" for n in train))
        (base / "list" / "test.txt").write_text("".join(f"{n}\n" for n in test))
    return root


# ---------------------------------------------------------------------------------------------
# Reading 16-bit PNGs


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_png16_reader_recovers_all_bits_with_every_filter(tmp_path, channels, interlace):
    array = np.random.default_rng(channels).integers(0, 65536, (11, 13, channels)).astype(np.uint16)
    path = tmp_path / "x.png"
    write_png16(path, array, filters=(0, 1, 2, 3, 4), interlace=interlace, idat_size=50)
    np.testing.assert_array_equal(read_png16_channels(path), array)
    np.testing.assert_array_equal(read_label_ids(path, multichannel=True), array[:, :, 0])


def test_pil_alone_loses_the_low_byte_of_16bit_rgb(tmp_path):
    """Why the library decodes 16-bit PNGs itself: PIL keeps only the high byte."""
    array = np.zeros((2, 2, 3), dtype=np.uint16)
    array[..., 0] = [[3, 21], [255, 1]]
    write_png16(tmp_path / "x.png", array)
    assert np.asarray(Image.open(tmp_path / "x.png"))[..., 0].max() == 0
    np.testing.assert_array_equal(read_label_ids(tmp_path / "x.png", multichannel=True), array[..., 0])


# ---------------------------------------------------------------------------------------------
# Items: shapes, preprocessing, label maps


@pytest.mark.parametrize("name", ["gta5", "synthia", "cityscapes", "nthu"])
def test_items_have_the_documented_shapes_and_dtypes(tmp_path, name):
    make_gta5(tmp_path), make_synthia(tmp_path), make_cityscapes(tmp_path), make_nthu(tmp_path)
    split = "val" if name == "nthu" else "train"
    ds = get_dataset(name, root=tmp_path, split=split, size=(6, 4))
    image, label, item_name = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 4, 6)
    assert label.dtype == torch.int64 and label.shape == (4, 6)
    expected_name = {"gta5": "00001", "synthia": "0000000", "cityscapes": "aachen_000000_000019",
                     "nthu": "pano_00010_2_0"}[name]
    assert item_name == expected_name
    assert label.min() >= -1 and label.max() < 19


def test_image_is_bgr_minus_mean_without_std(tmp_path):
    make_gta5(tmp_path, ids=(1,))
    rgb = random_rgb(1)
    image, _, _ = GTA5(tmp_path)[0]
    expected = rgb[:, :, ::-1].astype(np.float32).transpose(2, 0, 1) - MEAN_BGR[:, None, None]
    np.testing.assert_array_equal(image.numpy(), expected)
    # one known pixel, channel by channel: B first
    r, g, b = (float(v) for v in rgb[0, 0])
    assert image[:, 0, 0].tolist() == pytest.approx([b - 104.00698793, g - 116.66876762, r - 122.67891434], abs=1e-4)


def _all_ids_label() -> np.ndarray:
    return np.arange(256, dtype=np.uint8).reshape(16, 16)


@pytest.mark.parametrize("num_classes", [19, 16, 13, 10])
@pytest.mark.parametrize("writer", ["palette", "gray"])
def test_every_cityscapes_id_maps_as_documented(tmp_path, num_classes, writer):
    ids = _all_ids_label()
    write_rgb(tmp_path / "GTA5" / "images" / "00001.png", np.zeros((16, 16, 3), np.uint8))
    (write_palette if writer == "palette" else write_gray)(tmp_path / "GTA5" / "labels" / "00001.png", ids)
    (tmp_path / "GTA5" / "list").mkdir()
    (tmp_path / "GTA5" / "list" / "train.txt").write_text("1\n")
    _, label, _ = GTA5(tmp_path, num_classes=num_classes)[0]
    expected = np.vectorize(lambda i: expected_id(int(i), CITYSCAPES_TO_TRAIN19, num_classes))(ids)
    np.testing.assert_array_equal(label.numpy(), expected)
    assert (label >= 0).sum() == num_classes  # each class id appears exactly once


@pytest.mark.parametrize("num_classes", [19, 16, 13])
def test_every_synthia_id_maps_as_documented_and_large_ids_are_ignored(tmp_path, num_classes):
    raw = np.array([list(range(0, 12)), list(range(12, 23)) + [255], [256, 1000, 65535] + [3] * 9], dtype=np.uint16)
    label16 = np.stack([raw, np.full_like(raw, 4242), np.full_like(raw, 7)], axis=-1)
    write_rgb(tmp_path / "SYNTHIA" / "RGB" / "0000005.png", np.zeros((3, 12, 3), np.uint8))
    write_png16(tmp_path / "SYNTHIA" / "GT" / "LABELS" / "0000005.png", label16, filters=(4, 1, 3))
    (tmp_path / "SYNTHIA" / "list").mkdir()
    (tmp_path / "SYNTHIA" / "list" / "train.txt").write_text("5\n")
    _, label, name = SYNTHIA(tmp_path, num_classes=num_classes)[0]
    expected = np.vectorize(lambda i: expected_id(int(i), SYNTHIA_TO_TRAIN19, num_classes))(raw)
    assert name == "0000005"
    np.testing.assert_array_equal(label.numpy(), expected)
    assert (expected[2, :3] == -1).all() and expected[0, 3] == 0  # 256, 1000, 65535 ignored; 3 = road


def test_cityscapes_and_nthu_read_their_layouts(tmp_path):
    make_cityscapes(tmp_path), make_nthu(tmp_path)
    ds = Cityscapes(tmp_path, split="train", num_classes=19)
    assert [s.name for s in ds.samples] == ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"]
    raw = np.asarray(Image.open(ds.samples[2].label))
    expected = np.vectorize(lambda i: expected_id(int(i), CITYSCAPES_TO_TRAIN19, 19))(raw)
    np.testing.assert_array_equal(ds[2][1].numpy(), expected)
    for split in ("val", "test"):
        nthu = NTHU(tmp_path, split=split, city="rome", num_classes=13)
        raw = np.asarray(Image.open(tmp_path / "NTHU_Datasets/Rome/Labels/Test/pano_00010_2_0_eval.png"))
        expected = np.vectorize(lambda i: expected_id(int(i), CITYSCAPES_TO_TRAIN19, 13))(raw)
        np.testing.assert_array_equal(nthu[0][1].numpy(), expected)


def test_unlabelled_nthu_train_gives_all_ignore_and_reads_jpg_and_png(tmp_path):
    make_nthu(tmp_path)
    ds = NTHU(tmp_path, split="train", city="Rome", size=(4, 3), num_classes=13)
    assert not ds.labelled and len(ds) == 2
    assert [s.image.suffix for s in ds.samples] == [".jpg", ".png"]
    for k in range(2):
        image, label, _ = ds[k]
        assert image.shape == (3, 3, 4)
        assert label.shape == (3, 4) and (label == -1).all()
    assert NTHU(tmp_path, split="train", city="Rome", full_resolution_labels=True, size=(4, 3))[0][1].shape == (H, W)


def test_resize_matches_pil_bicubic_and_nearest(tmp_path):
    make_cityscapes(tmp_path)
    ds = Cityscapes(tmp_path, size=(5, 3))
    image, label, _ = ds[0]
    sample = ds.samples[0]
    rgb = np.asarray(Image.open(sample.image).resize((5, 3), Image.BICUBIC), dtype=np.float32)
    np.testing.assert_array_equal(image.numpy(), rgb[:, :, ::-1].transpose(2, 0, 1) - MEAN_BGR[:, None, None])
    raw = np.asarray(Image.open(sample.label).resize((5, 3), Image.NEAREST))
    expected = np.vectorize(lambda i: expected_id(int(i), CITYSCAPES_TO_TRAIN19, 19))(raw)
    np.testing.assert_array_equal(label.numpy(), expected)


@pytest.mark.parametrize("n_in,n_out", [(720, 55), (1914, 1280), (1052, 720), (7, 3), (3, 7), (2048, 1024)])
def test_nearest_label_resize_equals_pil_including_ties(n_in, n_out):
    # 720 -> 55 has exact ties that PIL resolves downward; a plain floor((i + 0.5) * s) would not.
    row = np.arange(n_in, dtype=np.int32)[None, :]
    pil = np.asarray(Image.fromarray(row).resize((n_out, 1), Image.NEAREST))[0]
    np.testing.assert_array_equal(nearest_indices(n_in, n_out), pil)
    np.testing.assert_array_equal(resize_label(row.T.astype(np.int64), (1, n_out))[:, 0], pil)


def test_full_resolution_and_explicit_label_sizes(tmp_path):
    make_gta5(tmp_path, ids=(1,))
    native = GTA5(tmp_path)[0][1]
    image, label, _ = GTA5(tmp_path, size=(4, 3), full_resolution_labels=True)[0]
    assert image.shape == (3, 3, 4)
    np.testing.assert_array_equal(label.numpy(), native.numpy())
    assert GTA5(tmp_path, size=(4, 3), label_size=(2, 2))[0][1].shape == (2, 2)
    assert GTA5(tmp_path, size=(4, 3), label_size="native")[0][1].shape == (H, W)


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_mirror_gives_the_flipped_unaugmented_item(tmp_path):
    make_gta5(tmp_path, ids=(1, 2))
    plain = GTA5(tmp_path, size=(6, 4))
    aug = GTA5(tmp_path, size=(6, 4), augment=True, blur_p=0.0, seed=3)
    outcomes = set()
    for epoch in range(12):
        aug.set_epoch(epoch)
        for index in range(2):
            image, label, _ = aug[index]
            ref_image, ref_label, _ = plain[index]
            flipped = bool(torch.equal(image, ref_image.flip(-1)) and torch.equal(label, ref_label.flip(-1)))
            same = bool(torch.equal(image, ref_image) and torch.equal(label, ref_label))
            assert flipped != same  # exactly one of the two (the random image is not symmetric)
            assert flipped == draw_augmentation(item_rng(3, epoch, index)).flip
            outcomes.add(flipped)
    assert outcomes == {True, False}


def test_blur_uses_the_drawn_radius_and_leaves_the_label(tmp_path):
    make_gta5(tmp_path, ids=(1,))
    ds = GTA5(tmp_path, augment=True, flip_p=0.0, blur_p=1.0, seed=5)
    ds.set_epoch(2)
    image, label, _ = ds[0]
    radius = draw_augmentation(item_rng(5, 2, 0), flip_p=0.0, blur_p=1.0).blur_radius
    assert 0.0 <= radius < 1.0
    blurred = np.asarray(Image.fromarray(random_rgb(1)).filter(ImageFilter.GaussianBlur(radius)), np.float32)
    np.testing.assert_array_equal(image.numpy(), blurred[:, :, ::-1].transpose(2, 0, 1) - MEAN_BGR[:, None, None])
    np.testing.assert_array_equal(label.numpy(), GTA5(tmp_path)[0][1].numpy())
    assert not torch.equal(image, GTA5(tmp_path)[0][0])


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    make_gta5(tmp_path, ids=(1, 2, 3))

    def items(seed, epoch, order):
        ds = GTA5(tmp_path, size=(6, 4), augment=True, seed=seed)
        ds.set_epoch(epoch)
        return {i: ds[i] for i in order}

    a = items(0, 1, [0, 1, 2])
    b = items(0, 1, [2, 0, 1, 1])  # other order, repeated access
    for i in range(3):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    draws = {(s, e, i): draw_augmentation(item_rng(s, e, i)) for s in (0, 1) for e in range(4) for i in range(3)}
    assert len(set(draws.values())) > 1  # different (seed, epoch, index) give different draws


def test_dataloader_worker_count_does_not_change_items(tmp_path):
    make_gta5(tmp_path, ids=(1, 2, 3, 4))
    ds = GTA5(tmp_path, size=(6, 4), augment=True, seed=9)
    ds.set_epoch(4)

    def run(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        return [batch for batch in loader]

    for (img0, lab0, names0), (img2, lab2, names2) in zip(run(0), run(2)):
        assert torch.equal(img0, img2) and torch.equal(lab0, lab2) and list(names0) == list(names2)


def test_item_cache_returns_what_a_fresh_read_returns_and_cannot_be_corrupted(tmp_path):
    make_gta5(tmp_path, ids=(1, 2, 3))
    cached = GTA5(tmp_path, size=(6, 4), augment=True, seed=2)
    uncached = GTA5(tmp_path, size=(6, 4), augment=True, seed=2, cache_bytes=0)
    for epoch in range(3):
        for ds in (cached, uncached):
            ds.set_epoch(epoch)
        for i in (0, 1, 2, 0):
            a, b = cached[i], uncached[i]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            a[0].add_(1000.0)  # a caller writing into what it got...
            a[1].fill_(-1)
    assert len(cached._cache) == 3 and not uncached._cache
    plain = GTA5(tmp_path, size=(6, 4), cache_bytes=0)
    cached.augment = False
    for i in range(3):  # ...changes nothing that is read later
        assert torch.equal(cached[i][0], plain[i][0]) and torch.equal(cached[i][1], plain[i][1])
    one_item = 6 * 4 * 3 + 6 * 4 * 8  # RGB bytes + int64 label
    small = GTA5(tmp_path, size=(6, 4), cache_bytes=2 * one_item)
    for i in range(3):
        small[i]
    assert sorted(small._cache) == [0, 1] and small._cached_bytes == 2 * one_item


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetError, match="dataset root not found") as err:
        GTA5(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "GTA5/images/00001.png" in str(err.value)
    with pytest.raises(DatasetError, match="SYNTHIA folder not found") as err:
        SYNTHIA(tmp_path)
    assert str(tmp_path / "SYNTHIA") in str(err.value) and "GT/LABELS/0000000.png" in str(err.value)


def test_missing_and_empty_list_files(tmp_path):
    make_gta5(tmp_path)
    with pytest.raises(DatasetError, match="list file not found") as err:
        GTA5(tmp_path, split="val")
    assert str(tmp_path / "GTA5" / "list" / "val.txt") in str(err.value)
    assert "lists found: ['train']" in str(err.value) and "write_gta5_lists" in str(err.value)
    (tmp_path / "GTA5" / "list" / "empty.txt").write_text("\n  \n")
    with pytest.raises(DatasetError, match="list file is empty"):
        GTA5(tmp_path, split="empty")


@pytest.mark.parametrize("which", ["images", "labels"])
def test_listed_file_missing_names_file_and_list_line(tmp_path, which):
    make_gta5(tmp_path)
    missing = tmp_path / "GTA5" / which / "00002.png"
    missing.unlink()
    with pytest.raises(DatasetError, match="1 file\\(s\\) named by") as err:
        GTA5(tmp_path)
    assert str(missing) in str(err.value) and "train.txt:2 ('2')" in str(err.value)


def test_bad_list_entries(tmp_path):
    make_gta5(tmp_path, lists={"train": ["1", "two"]})
    with pytest.raises(DatasetError, match=r"train.txt:2 \('two'\): not an integer id"):
        GTA5(tmp_path)
    make_cityscapes(tmp_path, write_lists=False)
    (tmp_path / "Cityscapes" / "list").mkdir()
    (tmp_path / "Cityscapes" / "list" / "train.txt").write_text("train_aachen_000000_000019\naachen\n")
    with pytest.raises(DatasetError, match=r"train.txt:2 \('aachen'\).*train_aachen_000000_000019"):
        Cityscapes(tmp_path)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    make_gta5(tmp_path), make_synthia(tmp_path)
    image = tmp_path / "GTA5" / "images" / "00001.png"
    image.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match="corrupt or truncated image file") as err:
        GTA5(tmp_path)[0]
    assert str(image) in str(err.value) and "train.txt:1" in str(err.value)
    label = tmp_path / "GTA5" / "labels" / "00002.png"
    label.write_bytes(label.read_bytes()[: len(label.read_bytes()) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated image file") as err:
        GTA5(tmp_path)[1]
    assert str(label) in str(err.value)
    label16 = tmp_path / "SYNTHIA" / "GT" / "LABELS" / "0000001.png"
    label16.write_bytes(label16.read_bytes()[:60])
    with pytest.raises(DatasetError, match="corrupt or truncated image file") as err:
        SYNTHIA(tmp_path)[1]
    assert str(label16) in str(err.value)
    data = bytearray((tmp_path / "SYNTHIA" / "GT" / "LABELS" / "0000000.png").read_bytes())
    data[45] ^= 0xFF  # inside the IDAT payload: the chunk CRC no longer matches
    (tmp_path / "SYNTHIA" / "GT" / "LABELS" / "0000000.png").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="bad CRC"):
        SYNTHIA(tmp_path)[0]


def test_image_label_size_mismatch(tmp_path, capsys):
    make_gta5(tmp_path, ids=(1,))
    label = tmp_path / "GTA5" / "labels" / "00001.png"
    write_palette(label, np.full((H - 1, W), 7))
    with pytest.raises(DatasetError, match="image and label sizes differ") as err:
        GTA5(tmp_path, allow_size_mismatch=False)[0]
    message = str(err.value)
    assert str(label) in message and str(tmp_path / "GTA5" / "images" / "00001.png") in message
    assert f"{W}x{H}" in message and f"{W}x{H - 1}" in message
    # The default is the authors' behaviour: both resized independently, reported once, counted.
    dataset = GTA5(tmp_path, size=(4, 3))
    _, out, _ = dataset[0]
    assert out.shape == (3, 4) and (out == 0).all()
    assert dataset.size_mismatches == {"00001"}
    native = GTA5(tmp_path, cache_bytes=0)
    native[0]
    native[0]
    _, out, _ = native[0]
    assert out.shape == (H, W)  # labels follow the image's size, as the authors resize them
    err_text = capsys.readouterr().err
    assert err_text.count("image and label sizes differ") == 2 and "resized independently" in err_text


def test_unsupported_label_encoding_and_unknown_names(tmp_path):
    make_gta5(tmp_path, ids=(1,))
    write_rgb(tmp_path / "GTA5" / "labels" / "00001.png", random_rgb(3))
    with pytest.raises(DatasetError, match="label image has mode 'RGB'"):
        GTA5(tmp_path)[0]
    with pytest.raises(DatasetError, match="unknown NTHU city 'Paris'.*Rome, Rio, Tokyo, Taipei"):
        NTHU(tmp_path, city="Paris")
    with pytest.raises(ValueError, match="city='Rome' only applies to the nthu dataset"):
        get_dataset("gta5", root=tmp_path, city="Rome")
    assert len(get_dataset("GTA5", root=tmp_path, city=None)) == 1
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        get_dataset("kitti", root=tmp_path)
    with pytest.raises(ValueError, match="no class set has 12 classes"):
        GTA5(tmp_path, num_classes=12)
