"""Dataset checks, the list writers (round trip through the loaders) and the notebook statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_data import (
    CITYSCAPES_FRAMES,
    H,
    W,
    make_cityscapes,
    make_gta5,
    make_nthu,
    make_synthia,
    random_rgb,
    write_gray,
    write_palette,
    write_png16,
    write_rgb,
)

from maxsq_prep.lists import write_cityscapes_lists, write_gta5_lists, write_nthu_lists, write_synthia_lists
from maxsq_lib.data import GTA5, NTHU, SYNTHIA, Cityscapes, DatasetError, check_dataset
from maxsq_lib.course.plots.data import class_frequency_figure, sample_grid
from maxsq_lib.course.stats import class_counts, class_frequencies
from maxsq_lib.labels import CITYSCAPES_19, MINICITY_10
from maxsq_lib.course.style import save_figure

# ---------------------------------------------------------------------------------------------
# check_dataset


def test_clean_dataset_checks_ok(tmp_path):
    make_gta5(tmp_path, ids=(1, 2, 3, 4), lists={"train": [1, 2, 3], "val": [4]})
    report = check_dataset("gta5", tmp_path, progress=False)
    assert report.ok, report.format()
    assert set(report.splits) == {"train", "val"}
    assert report.splits["train"].entries == 3 and report.splits["train"].checked == 3
    assert report.splits["train"].image_sizes == {f"{W}x{H}": 3}
    assert report.splits["val"].labelled_pixels == W * H
    # ids 0..33 are all Cityscapes ids: nothing unknown; the ignored share is the unmapped ids'
    assert report.splits["train"].unknown_label_ids == {}
    labels = [np.asarray(Image.open(tmp_path / "GTA5" / "labels" / f"{i:05d}.png")) for i in (1, 2, 3)]
    unmapped = sum(int(np.isin(lab, [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]).sum()) for lab in labels)
    assert report.splits["train"].ignored_pixels == unmapped
    assert "Result: OK" in report.format()


def test_check_finds_injected_problems(tmp_path):
    make_gta5(tmp_path, ids=(1, 2, 3, 4, 5, 6), lists={"train": [1, 2, 3, 4, 5, 7]})
    gta = tmp_path / "GTA5"
    (gta / "images" / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
    write_palette(gta / "labels" / "00002.png", np.full((H + 2, W), 7))  # size mismatch
    ids = np.full((H, W), 7)
    ids[0, :3] = 200  # not a Cityscapes id
    write_palette(gta / "labels" / "00003.png", ids)
    (gta / "labels" / "00005.png").unlink()  # listed image without its label
    write_rgb(gta / "images" / "00009.png", random_rgb(9))  # image without label, not listed
    # 00006 is a complete pair that no list names; entry 7 has no files at all

    report = check_dataset("gta5", tmp_path, split="train", progress=False)
    train = report.splits["train"]
    assert not report.ok
    assert len(train.unreadable) == 1 and str(gta / "images" / "00001.png") in train.unreadable[0]
    assert len(train.size_mismatch) == 1 and str(gta / "labels" / "00002.png") in train.size_mismatch[0]
    assert f"{W}x{H + 2}" in train.size_mismatch[0]
    assert train.unknown_label_ids == {200: 3}
    assert any(str(gta / "labels" / "00005.png") in m and "train.txt:5" in m for m in train.missing)
    assert any(str(gta / "images" / "00007.png") in m and "train.txt:6" in m for m in train.missing)
    assert len(train.missing) == 3  # 5's label, 7's image and label
    assert train.checked == 4  # entries 5 and 7 could not be read
    partners = "\n".join(report.missing_partners)
    assert str(gta / "images" / "00005.png") in partners and str(gta / "images" / "00009.png") in partners
    assert str(gta / "images" / "00006.png") in report.unlisted and str(gta / "labels" / "00006.png") in report.unlisted
    text = report.format()
    for needle in ("unreadable or corrupt", "sizes differ", "200: 3 px", "missing files", "without their partner",
                   "no list names", "problem(s)"):
        assert needle in text
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def test_a_size_mismatch_alone_is_listed_not_failed(tmp_path):
    make_gta5(tmp_path, ids=(1, 2))
    write_palette(tmp_path / "GTA5" / "labels" / "00002.png", np.full((H + 2, W), 7))
    report = check_dataset("gta5", tmp_path, split="train", progress=False)
    assert report.ok and len(report.splits["train"].size_mismatch) == 1
    text = report.format()
    assert "sizes differ" in text and "as the authors' code does" in text and "Result: OK" in text


def test_check_reports_missing_dataset_and_lists(tmp_path):
    report = check_dataset("cityscapes", tmp_path / "nowhere", progress=False)
    assert not report.ok and "dataset root not found" in report.errors[0]
    make_gta5(tmp_path)
    report = check_dataset("gta5", tmp_path, split="val", progress=False)
    assert not report.ok and "list file not found" in report.errors[0]
    assert "Result:" in report.format() and "ERROR" in report.format()


def test_check_synthia_16bit_ids_and_nthu_unlabelled_split(tmp_path):
    make_synthia(tmp_path, ids=(0, 1))
    label = np.zeros((H, W, 3), np.uint16)
    label[..., 0] = 3
    label[1, 1, 0] = 300
    label[2, 2, 0] = 22  # lane marking: a SYNTHIA id, mapped to ignore
    write_png16(tmp_path / "SYNTHIA" / "GT" / "LABELS" / "0000001.png", label)
    report = check_dataset("synthia", tmp_path, num_classes=16, progress=False)
    assert report.splits["train"].unknown_label_ids == {300: 1}
    assert report.splits["train"].labelled_pixels == 2 * W * H
    assert not report.ok

    make_nthu(tmp_path, city="Tokyo")
    report = check_dataset("nthu", tmp_path, city="tokyo", num_classes=13, progress=False)
    assert report.ok, report.format()
    assert report.city == "Tokyo" and set(report.splits) == {"train", "test"}
    assert report.splits["train"].labelled_pixels == 0 and report.splits["train"].checked == 2


def test_check_limit_and_threads_give_the_same_counts(tmp_path):
    make_cityscapes(tmp_path)
    full = check_dataset("cityscapes", tmp_path, progress=False, workers=2)
    assert full.ok and full.splits["train"].checked == 3
    assert check_dataset("cityscapes", tmp_path, progress=False).to_dict() == full.to_dict()
    assert check_dataset("cityscapes", tmp_path, split="train", limit=1, progress=False).splits["train"].checked == 1


# ---------------------------------------------------------------------------------------------
# List writers: round trip through the loaders


def test_cityscapes_lists_round_trip(tmp_path):
    make_cityscapes(tmp_path, write_lists=False)
    counts = write_cityscapes_lists(tmp_path)
    assert counts == {"train": 3, "val": 1, "trainval": 4}
    lines = (tmp_path / "Cityscapes" / "list" / "train.txt").read_text().splitlines()
    assert lines == ["train_aachen_000000_000019", "train_aachen_000001_000019", "train_bremen_000000_000019"]
    names = [ds_name for _, _, ds_name in Cityscapes(tmp_path, split="trainval")]
    expected = [f"{c}_{f}" for split in ("train", "val") for c, f in CITYSCAPES_FRAMES[split]]
    assert names == expected
    assert not list((tmp_path / "Cityscapes" / "list").glob(".*"))  # no temporary files left


def test_synthia_lists_round_trip_and_report_gaps(tmp_path):
    make_synthia(tmp_path, ids=(0, 2, 9000, 9500), lists={})
    write_rgb(tmp_path / "SYNTHIA" / "RGB" / "0000001.png", random_rgb(1))  # image without label
    with pytest.warns(UserWarning) as record:
        counts = write_synthia_lists(tmp_path)
    messages = "\n".join(str(w.message) for w in record)
    assert "8998 of ids 0-8999" in messages and "399 of ids 9000-9399" in messages
    assert "outside 0-9399 are not listed: 9500" in messages and "but not both: 1" in messages
    assert counts == {"train": 2, "val": 1}
    assert [n for _, _, n in SYNTHIA(tmp_path, split="train")] == ["0000000", "0000002"]
    assert [n for _, _, n in SYNTHIA(tmp_path, split="val")] == ["0009000"]


def test_nthu_lists_round_trip(tmp_path):
    make_nthu(tmp_path, city="Taipei", write_lists=False)
    assert write_nthu_lists(tmp_path, "taipei") == {"train": 2, "test": 1}
    assert [n for _, _, n in NTHU(tmp_path, split="train", city="Taipei")] == ["pano_00001_0_0", "pano_00002_0_180"]
    assert [n for _, _, n in NTHU(tmp_path, split="val", city="Taipei")] == ["pano_00010_2_0"]


def test_gta5_lists_from_disk_and_from_split_mat(tmp_path):
    from scipy.io import savemat

    make_gta5(tmp_path, ids=(1, 2, 3, 4, 10), lists={})
    (tmp_path / "GTA5" / "labels" / "00010.png").unlink()
    with pytest.warns(UserWarning, match="not listed in all.txt: 10"):
        assert write_gta5_lists(tmp_path) == {"all": 4}
    assert [n for _, _, n in GTA5(tmp_path, split="all")] == ["00001", "00002", "00003", "00004"]
    split_file = tmp_path / "split.mat"
    savemat(split_file, {"trainIds": np.array([[3], [1]]), "valIds": np.array([[2]]), "testIds": np.array([[4]])})
    (tmp_path / "GTA5" / "images" / "00010.png").unlink()
    counts = write_gta5_lists(tmp_path, split_file)
    assert counts == {"all": 4, "train": 2, "val": 1, "test": 1, "trainval": 3}
    assert [n for _, _, n in GTA5(tmp_path, split="trainval")] == ["00003", "00001", "00002"]
    savemat(split_file, {"trainIds": np.array([[1], [5]]), "valIds": np.array([[2]]), "testIds": np.array([[4]])})
    with pytest.warns(UserWarning, match="GTA5 train: 1 listed ids have no image/label pair on disk: 5"):
        write_gta5_lists(tmp_path, split_file)
    savemat(split_file, {"trainIds": np.array([[1]])})
    with pytest.raises(DatasetError, match="lacks \\['valIds', 'testIds'\\]"):
        write_gta5_lists(tmp_path, split_file)


def test_list_writers_name_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match="folder not found: .*Cityscapes/leftImg8bit"):
        write_cityscapes_lists(tmp_path)
    with pytest.raises(DatasetError, match="folder not found: .*GTA5/images"):
        write_gta5_lists(tmp_path)


# ---------------------------------------------------------------------------------------------
# Statistics and figures for notebook 01_data


def _fixed_gta5(tmp_path):
    """Two images whose labels hold known numbers of road (7), sky (23) and ignore (0) pixels."""
    first = np.full((H, W), 7)
    first[:2] = 23
    second = np.full((H, W), 0)
    second[0, :4] = 26  # car
    for k, ids in enumerate((first, second), start=1):
        write_rgb(tmp_path / "GTA5" / "images" / f"{k:05d}.png", random_rgb(k))
        write_gray(tmp_path / "GTA5" / "labels" / f"{k:05d}.png", ids)
    (tmp_path / "GTA5" / "list").mkdir(parents=True)
    (tmp_path / "GTA5" / "list" / "train.txt").write_text("1\n2\n")


def test_class_frequencies_are_pixel_shares_over_labelled_pixels(tmp_path):
    _fixed_gta5(tmp_path)
    ds = GTA5(tmp_path)
    counts = class_counts(ds)
    assert counts[0] == 4 * W and counts[10] == 2 * W and counts[13] == 4 and counts.sum() == 6 * W + 4
    freqs = class_frequencies(ds)
    assert freqs.shape == (19,) and freqs.sum() == pytest.approx(1.0)
    assert freqs[0] == pytest.approx(32 / 52) and freqs[13] == pytest.approx(4 / 52)
    assert class_frequencies(ds, limit=1)[13] == 0.0
    mini = class_frequencies(GTA5(tmp_path, num_classes=10), 10)
    assert mini[MINICITY_10.train19_ids.index(13)] == pytest.approx(4 / 52)
    make_nthu(tmp_path)
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_frequencies(NTHU(tmp_path, split="train"))


def test_figures_show_the_data_and_save(tmp_path):
    _fixed_gta5(tmp_path)
    freqs = {"source": class_frequencies(GTA5(tmp_path)), "target": np.full(19, 1 / 19)}
    fig = class_frequency_figure(freqs, CITYSCAPES_19)
    bars = fig.axes[0].patches
    assert len(bars) == 38
    assert bars[0].get_height() == pytest.approx(100 * 32 / 52) and bars[19].get_height() == pytest.approx(100 / 19)
    assert fig.axes[0].get_yscale() == "log"
    assert save_figure(fig, tmp_path / "freq.png").stat().st_size > 0
    with pytest.raises(ValueError, match="expected \\(19,\\)"):
        class_frequency_figure({"x": np.ones(3)}, 19)

    make_cityscapes(tmp_path)
    grid = sample_grid({"GTA5": GTA5(tmp_path), "Cityscapes": Cityscapes(tmp_path)}, n=2)
    assert len(grid.axes) == 2 * 4
    shown = grid.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), random_rgb(1))  # denormalised back to RGB
    colours = np.asarray(grid.axes[1].images[0].get_array())
    assert tuple(colours[H - 1, 0]) == CITYSCAPES_19.colors[0]  # road pixel of the first label
    assert save_figure(grid, tmp_path / "grid.png").stat().st_size > 0
