"""MiniCity generator: real layouts, determinism, class bands, the shift knob, skip-if-complete."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from maxsq_prep.minicity import (
    CITIES,
    DEFAULT_SHIFT,
    EXPECTED_CLASS_BANDS,
    MANIFEST_NAME,
    PROFILES,
    TARGET_CITIES,
    Profile,
    generate_minicity,
    make_layout,
    make_scene,
    render_with_shift,
)
from maxsq_prep.minicity_scene import CLASS_LABEL_IDS, UNLABELED_ID
from maxsq_prep.minicity_style import style_for
from maxsq_lib.labels import CITYSCAPES_ID_TO_TRAIN19, MINICITY_10

SMOKE = PROFILES["smoke"]
TINY = Profile("tiny", (64, 32), 3, 1, 2, 1, 1, 1)
ALLOWED_IDS = set(CLASS_LABEL_IDS.values()) | {UNLABELED_ID}


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("minicity") / "datasets"
    summary = generate_minicity(root, "smoke", seed=0, progress=False)
    assert not summary["skipped"]
    assert {d["action"] for d in summary["datasets"].values()} == {"generated"}
    return root


def label_files(root: Path, domain: str) -> list[Path]:
    if domain == "source":
        return sorted((root / "GTA5" / "labels").glob("*.png"))
    if domain == "target":
        return sorted((root / "Cityscapes" / "gtFine").rglob("*_gtFine_labelIds.png"))
    return sorted((root / "NTHU_Datasets").glob("*/Labels/Test/*_eval.png"))


# ---- tables ----------------------------------------------------------------------------------


def test_class_label_ids_come_from_the_cityscapes_table():
    expected = {"road": 7, "sidewalk": 8, "building": 11, "fence": 13, "pole": 17, "traffic sign": 20,
                "vegetation": 21, "sky": 23, "person": 24, "car": 26}
    assert CLASS_LABEL_IDS == expected
    # and they map onto MiniCity's own ids 0..9 in order
    own_ids = [MINICITY_10.cityscapes_id_lut[CLASS_LABEL_IDS[n]] for n in MINICITY_10.class_names]
    assert own_ids == list(range(10))
    assert all(CITYSCAPES_ID_TO_TRAIN19[i] in MINICITY_10.train19_ids for i in expected.values())


def test_band_table_covers_every_class_and_is_ordered():
    for domain, bands in EXPECTED_CLASS_BANDS.items():
        assert set(bands) == set(MINICITY_10.class_names), domain
        for name, (lo, hi) in bands.items():
            assert 0.0 <= lo < hi <= 1.0, (domain, name)


# ---- layouts on disk ---------------------------------------------------------------------------


def test_gta5_layout_lists_and_palette_labels(smoke_root):
    gta = smoke_root / "GTA5"
    n = SMOKE.source_train + SMOKE.source_val
    assert sorted(p.name for p in (gta / "images").iterdir()) == [f"{i:05d}.png" for i in range(1, n + 1)]
    assert sorted(p.name for p in (gta / "labels").iterdir()) == [f"{i:05d}.png" for i in range(1, n + 1)]
    train = (gta / "list" / "train.txt").read_text()
    val = (gta / "list" / "val.txt").read_text()
    assert train == "".join(f"{i}\n" for i in range(1, SMOKE.source_train + 1))
    assert val == "".join(f"{i}\n" for i in range(SMOKE.source_train + 1, n + 1))
    assert (gta / "list" / "all.txt").read_text() == train + val
    image = Image.open(gta / "images" / "00001.png")
    assert image.mode == "RGB" and image.size == SMOKE.size
    label = Image.open(gta / "labels" / "00001.png")
    assert label.mode == "P" and label.size == SMOKE.size
    palette = np.array(label.getpalette()[: 3 * 34]).reshape(34, 3)
    for lab in cs_labels.labels:
        if 0 <= lab.id < 34:
            assert tuple(palette[lab.id]) == tuple(lab.color), lab.name
    # the indices (not the colours) are the label ids
    assert set(np.unique(np.asarray(label)).tolist()) <= ALLOWED_IDS


def test_cityscapes_layout_and_lists(smoke_root):
    cs = smoke_root / "Cityscapes"
    pattern = re.compile(r"^(train|val)_([a-z]+)_(\d{6})_(\d{6})$")
    for split, count in (("train", SMOKE.target_train), ("val", SMOKE.target_val)):
        entries = (cs / "list" / f"{split}.txt").read_text().splitlines()
        assert len(entries) == count == len(set(entries))
        for entry in entries:
            m = pattern.match(entry)
            assert m and m.group(1) == split and m.group(2) in TARGET_CITIES[split], entry
            city, base = m.group(2), entry[len(split) + 1 :]
            image = Image.open(cs / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png")
            label = Image.open(cs / "gtFine" / split / city / f"{base}_gtFine_labelIds.png")
            assert image.mode == "RGB" and label.mode == "L"
            assert image.size == label.size == SMOKE.size
    assert not set(TARGET_CITIES["train"]) & set(TARGET_CITIES["val"])
    assert all("_" not in c for cities in TARGET_CITIES.values() for c in cities)
    # dev and test split val in two halves, alternating: disjoint, together all of val
    val = (cs / "list" / "val.txt").read_text().splitlines()
    dev = (cs / "list" / "dev.txt").read_text().splitlines()
    test = (cs / "list" / "test.txt").read_text().splitlines()
    assert dev == val[0::2] and test == val[1::2] and not set(dev) & set(test)


def test_nthu_layout_and_lists(smoke_root):
    for city in CITIES:
        folder = smoke_root / "NTHU_Datasets" / city
        train = (folder / "list" / "train.txt").read_text().splitlines()
        test = (folder / "list" / "test.txt").read_text().splitlines()
        assert len(train) == SMOKE.city_train and len(test) == SMOKE.city_test
        assert all(re.fullmatch(r"pano_\d{5}_\d_(0|90|180|270)", i) for i in train + test)
        assert not set(train) & set(test)
        assert sorted(p.stem for p in (folder / "Images" / "Train").iterdir()) == sorted(train)
        assert sorted(p.stem for p in (folder / "Images" / "Test").iterdir()) == sorted(test)
        labels = sorted(p.name for p in (folder / "Labels" / "Test").iterdir())
        assert labels == sorted(f"{i}_eval.png" for i in test)
        label = Image.open(folder / "Labels" / "Test" / f"{test[0]}_eval.png")
        assert label.mode == "L" and label.size == SMOKE.size
        assert not (folder / "Labels" / "Train").exists()


def test_manifests_and_no_leftover_temporary_files(smoke_root):
    files = all_files(smoke_root)
    assert not [f for f in files if Path(f).name.startswith(".")]
    for name in ("GTA5", "Cityscapes", "NTHU_Datasets"):
        manifest = json.loads((smoke_root / name / MANIFEST_NAME).read_text())
        assert manifest["complete"] is True and manifest["profile"] == "smoke" and manifest["seed"] == 0
        listed = [f for f in files if f.startswith(name + "/") and not f.endswith(MANIFEST_NAME)]
        assert manifest["files"] == len(listed)
        assert manifest["shift"] == (None if name == "GTA5" else DEFAULT_SHIFT)
    # PNGs carry no timestamp or text chunk that would break byte-identical regeneration
    sample = files["GTA5/images/00001.png"]
    assert b"tIME" not in sample and b"tEXt" not in sample


def test_only_minicity_label_ids_and_every_class_present(smoke_root):
    for domain in ("source", "target", "cities"):
        seen: set[int] = set()
        for path in label_files(smoke_root, domain):
            seen |= set(np.unique(np.asarray(Image.open(path))).tolist())
        assert seen <= ALLOWED_IDS, (domain, seen - ALLOWED_IDS)
        assert set(CLASS_LABEL_IDS.values()) <= seen, (domain, set(CLASS_LABEL_IDS.values()) - seen)


@pytest.mark.parametrize("domain", ["source", "target", "cities"])
def test_class_pixel_fractions_within_bands(smoke_root, domain):
    counts = np.zeros(256, np.int64)
    paths = label_files(smoke_root, domain)
    assert len(paths) >= 16
    for path in paths:
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    fractions = counts / counts.sum()
    outside = {
        name: round(float(fractions[CLASS_LABEL_IDS[name]]), 4)
        for name, (lo, hi) in EXPECTED_CLASS_BANDS[domain].items()
        if not lo <= fractions[CLASS_LABEL_IDS[name]] <= hi
    }
    assert not outside, f"{domain}: classes outside their bands: {outside}"
    # the imbalance the benchmark is about: large stuff classes, rare thin things
    big = min(fractions[CLASS_LABEL_IDS[n]] for n in ("road", "building"))
    thin = max(fractions[CLASS_LABEL_IDS[n]] for n in ("pole", "traffic sign", "person"))
    assert big > 10 * thin


# ---- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(smoke_root, tmp_path):
    generate_minicity(tmp_path, "smoke", seed=0, progress=False)
    assert all_files(tmp_path) == all_files(smoke_root)


def test_worker_count_does_not_change_the_bytes(tmp_path):
    generate_minicity(tmp_path / "one", TINY, seed=3, progress=False, workers=1)
    generate_minicity(tmp_path / "two", TINY, seed=3, progress=False, workers=2)
    assert all_files(tmp_path / "one") == all_files(tmp_path / "two")


def test_different_seed_gives_different_images(tmp_path):
    a = generate_minicity(tmp_path / "a", TINY, seed=1, progress=False)
    b = generate_minicity(tmp_path / "b", TINY, seed=2, progress=False)
    for name in ("GTA5", "Cityscapes", "NTHU_Datasets"):
        assert a["datasets"][name]["content_sha256"] != b["datasets"][name]["content_sha256"]
    first_a = np.asarray(Image.open(tmp_path / "a" / "GTA5" / "labels" / "00001.png"))
    first_b = np.asarray(Image.open(tmp_path / "b" / "GTA5" / "labels" / "00001.png"))
    assert (first_a != first_b).mean() > 0.05


def test_files_match_make_scene(smoke_root):
    image, label = make_scene("target", "val", 1, seed=0, size=SMOKE.size, shift=DEFAULT_SHIFT)
    entry = (smoke_root / "Cityscapes" / "list" / "val.txt").read_text().splitlines()[1]
    _, city, rest = entry.split("_", 2)
    folder = smoke_root / "Cityscapes"
    written_image = Image.open(folder / "leftImg8bit" / "val" / city / f"{city}_{rest}_leftImg8bit.png")
    written_label = Image.open(folder / "gtFine" / "val" / city / f"{city}_{rest}_gtFine_labelIds.png")
    np.testing.assert_array_equal(np.asarray(written_image), image)
    np.testing.assert_array_equal(np.asarray(written_label), label)


# ---- the shift knob ----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["target", "Tokyo"])
def test_shift_changes_appearance_not_labels(domain):
    shifts = [0.0, 0.25, 0.5, 0.75, 1.0]
    distances = np.zeros(len(shifts))
    for index in range(4):
        images, label = render_with_shift(shifts, domain=domain, index=index, seed=5)
        np.testing.assert_array_equal(label, make_layout(domain, "train", index, seed=5).label_map)
        for k, s in enumerate(shifts):
            # the generator writes exactly these pixels, and the labels never depend on the shift
            written_image, written_label = make_scene(domain, "train", index, seed=5, shift=s)
            np.testing.assert_array_equal(written_image, images[k])
            np.testing.assert_array_equal(written_label, label)
            distances[k] += np.abs(images[k].astype(float) - images[0].astype(float)).mean() / 4
    assert distances[0] == 0.0
    assert distances[-1] > 25.0, distances  # full target look is far from the source look
    assert np.all(np.diff(distances) > 1.0), distances  # and the distance grows with the shift


def test_source_is_flat_and_target_is_textured():
    """Within large flat regions (road), the source has almost no noise, the target a lot."""
    def road_roughness(shift: float) -> float:
        stds = []
        for index in range(4):
            (image,), label = render_with_shift([shift], index=index, seed=9)
            road = label == CLASS_LABEL_IDS["road"]
            grey = image.astype(float).mean(axis=2)
            # local variation: difference to the right neighbour, inside the road only; the
            # median ignores the edges of lane marks
            inside = road[:, 1:] & road[:, :-1]
            stds.append(np.median(np.abs(np.diff(grey, axis=1))[inside]))
        return float(np.mean(stds))

    assert road_roughness(0.0) < 1.0
    assert road_roughness(1.0) > 4 * road_roughness(0.0)


def test_shift_outside_unit_interval_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="shift"):
        style_for(1.5)
    with pytest.raises(ValueError, match="shift"):
        generate_minicity(tmp_path, TINY, shift=-0.1, progress=False)
    with pytest.raises(ValueError, match="profile"):
        generate_minicity(tmp_path, "huge", progress=False)
    with pytest.raises(ValueError, match="city"):
        style_for(0.5, "Atlantis")


# ---- skip if complete --------------------------------------------------------------------------


def test_second_run_skips_and_a_deleted_file_is_regenerated(smoke_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(smoke_root, root)
    before = mtimes(root)
    summary = generate_minicity(root, "smoke", seed=0, progress=False)
    assert summary["skipped"] and {d["action"] for d in summary["datasets"].values()} == {"skipped"}
    assert mtimes(root) == before

    victim = root / "Cityscapes" / "gtFine" / "train" / TARGET_CITIES["train"][0]
    victim = sorted(victim.iterdir())[0]
    original = victim.read_bytes()
    victim.unlink()
    summary = generate_minicity(root, "smoke", seed=0, progress=False)
    actions = {k: v["action"] for k, v in summary["datasets"].items()}
    assert actions == {"GTA5": "skipped", "Cityscapes": "regenerated", "NTHU_Datasets": "skipped"}
    assert "missing file" in summary["datasets"]["Cityscapes"]["reason"]
    assert victim.read_bytes() == original
    assert all_files(root) == all_files(smoke_root)


def test_changed_shift_regenerates_only_the_shifted_domains(tmp_path):
    generate_minicity(tmp_path, TINY, seed=0, progress=False)
    source_before = mtimes(tmp_path / "GTA5")
    summary = generate_minicity(tmp_path, TINY, seed=0, shift=0.2, progress=False)
    actions = {k: v["action"] for k, v in summary["datasets"].items()}
    assert actions == {"GTA5": "skipped", "Cityscapes": "regenerated", "NTHU_Datasets": "regenerated"}
    assert "shift" in summary["datasets"]["Cityscapes"]["reason"]
    assert mtimes(tmp_path / "GTA5") == source_before
    assert json.loads((tmp_path / "Cityscapes" / MANIFEST_NAME).read_text())["shift"] == 0.2


def test_interrupted_generation_is_detected_and_redone(tmp_path):
    generate_minicity(tmp_path, TINY, seed=0, progress=False)
    reference = all_files(tmp_path)
    manifest_path = tmp_path / "GTA5" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    # what a run killed half-way leaves: an incomplete manifest, some files missing
    manifest_path.write_text(json.dumps({**manifest, "complete": False}))
    (tmp_path / "GTA5" / "images" / "00002.png").unlink()
    (tmp_path / "GTA5" / "images" / "stale.png").write_bytes(b"junk")
    summary = generate_minicity(tmp_path, TINY, seed=0, progress=False)
    assert summary["datasets"]["GTA5"]["action"] == "regenerated"
    assert "incomplete" in summary["datasets"]["GTA5"]["reason"]
    assert all_files(tmp_path) == reference


def test_force_rewrites_a_complete_dataset(tmp_path):
    generate_minicity(tmp_path, TINY, seed=0, progress=False)
    summary = generate_minicity(tmp_path, TINY, seed=0, force=True, progress=False)
    assert {d["action"] for d in summary["datasets"].values()} == {"regenerated"}


def test_refuses_to_overwrite_a_real_dataset(tmp_path):
    real = tmp_path / "GTA5" / "images"
    real.mkdir(parents=True)
    (real / "00001.png").write_bytes(b"a real GTA5 image")
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path / "GTA5"))):
        generate_minicity(tmp_path, TINY, progress=False)
    assert (real / "00001.png").read_bytes() == b"a real GTA5 image"
    assert not (tmp_path / "Cityscapes").exists()  # nothing written before the refusal


# ---- the real loaders read it ------------------------------------------------------------------


def test_real_loaders_read_the_smoke_output(smoke_root):
    data = pytest.importorskip("maxsq_lib.data")
    size = SMOKE.size
    cases = [
        (data.GTA5(smoke_root, "train", size=size, num_classes=10), SMOKE.source_train, True),
        (data.GTA5(smoke_root, "val", size=size, num_classes=10), SMOKE.source_val, True),
        (data.Cityscapes(smoke_root, "train", size=size, num_classes=10), SMOKE.target_train, True),
        (data.Cityscapes(smoke_root, "val", size=size, num_classes=10), SMOKE.target_val, True),
        (data.NTHU(smoke_root, "val", size=size, num_classes=10, city="Rome"), SMOKE.city_test, True),
        (data.NTHU(smoke_root, "train", size=size, num_classes=10, city="Rome"), SMOKE.city_train, False),
    ]
    for dataset, count, labelled in cases:
        assert len(dataset) == count
        seen: set[int] = set()
        for k in range(len(dataset)):
            image, label, name = dataset[k]
            image, label = np.asarray(image), np.asarray(label)
            assert image.shape == (3, size[1], size[0]) and image.dtype == np.float32
            assert label.shape == (size[1], size[0])
            seen |= set(np.unique(label).tolist())
        assert seen <= set(range(10)) | {-1}
        if labelled:
            assert -1 not in seen and len(seen) >= 8
        else:
            assert seen == {-1}
    # the loader's train ids are the label file's ids through the MiniCity table
    _, label, name = data.GTA5(smoke_root, "train", size=size, num_classes=10)[0]
    raw = np.asarray(Image.open(smoke_root / "GTA5" / "labels" / f"{name}.png"))
    np.testing.assert_array_equal(np.asarray(label), MINICITY_10.cityscapes_id_lut[raw])


def test_smoke_profile_is_small():
    total = (SMOKE.source_train + SMOKE.source_val + SMOKE.target_train + SMOKE.target_val
             + len(CITIES) * (SMOKE.city_train + SMOKE.city_test))
    assert 24 <= total <= 100


def test_candidate_looks_change_one_factor_at_a_time_and_look_table_scores_each():
    import torch
    from dataclasses import fields

    from maxsq_prep.calibrate_shift import candidate_looks, look_table
    from maxsq_prep.minicity_style import COLOUR_TARGET_STYLE, SOURCE_STYLE
    from maxsq_lib.models import deeplabv2_from_preset

    looks = candidate_looks()
    assert len(looks) == 8 and looks["g: b + all four (version 2)"] == style_for(DEFAULT_SHIFT)
    v1, b = looks["a: version 1"], looks["b: source tone"]
    assert v1 == SOURCE_STYLE.lerp(COLOUR_TARGET_STYLE, DEFAULT_SHIFT)
    changed = {f.name for f in fields(v1) if getattr(v1, f.name) != getattr(b, f.name)}
    assert changed == {"hue_deg", "saturation", "value", "brightness", "contrast", "gamma", "cast"}
    c = looks["c: b + low_freq 0.35"]
    assert {f.name for f in fields(b) if getattr(b, f.name) != getattr(c, f.name)} == {"low_freq"}
    torch.manual_seed(0)
    model = deeplabv2_from_preset("minicity", 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    two = {k: looks[k] for k in ("a: version 1", "b: source tone")}
    table = look_table(model, two, val_images=3, train_images=4, render_size=(64, 32), input_size=(64, 32),
                       batch_size=2)
    assert set(table) == set(two)
    assert all(0.0 <= v[k] <= 1.0 for v in table.values() for k in ("source_only", "adabn"))
    # AdaBN works on a copy: the model given is unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
