"""Class sets and id maps against the facts of docs/authors_code.md §6.3."""

import numpy as np
import pytest

from maxsq_lib import labels as L

# §6.3, written out here as the test's independent statement of the authors' maps.
CITYSCAPES_TO_19 = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA_TO_19 = {1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18, 12: 17,
                 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3}


def test_cityscapes19_lut_matches_authors_map():
    lut = L.CITYSCAPES_19.cityscapes_id_lut
    for label_id in range(256):
        assert lut[label_id] == CITYSCAPES_TO_19.get(label_id, -1), label_id


def test_synthia16_renumbering_and_dropped_classes():
    cs = L.SYNTHIA_16
    assert cs.class_names == ("road", "sidewalk", "building", "wall", "fence", "pole",
                              "traffic light", "traffic sign", "vegetation", "sky", "person",
                              "rider", "car", "bus", "motorcycle", "bicycle")
    lut = cs.synthia_id_lut
    keep = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
    for sid in range(256):
        t19 = SYNTHIA_TO_19.get(sid)
        expected = keep.index(t19) if t19 in keep else -1
        assert lut[sid] == expected, sid
    # terrain (16), truck (18), train (20) and the ignored ids 0, 13, 14, 22 are dropped
    assert all(lut[i] == -1 for i in (0, 13, 14, 16, 18, 20, 22))
    # the Cityscapes labels are mapped into the same 16-class space
    assert cs.cityscapes_id_lut[22] == -1 and cs.cityscapes_id_lut[23] == 9


def test_nthu13_and_miou_star():
    assert L.NTHU_13.class_names == ("road", "sidewalk", "building", "traffic light",
                                     "traffic sign", "vegetation", "sky", "person", "rider",
                                     "car", "bus", "motorcycle", "bicycle")
    star = [L.SYNTHIA_16.class_names[i] for i in L.MIOU_STAR_13_OF_16]
    assert set(L.SYNTHIA_16.class_names) - set(star) == {"wall", "fence", "pole"}
    assert len(star) == 13


def test_minicity10_is_a_subset_in_train_id_order():
    cs = L.MINICITY_10
    assert cs.num_classes == 10
    assert cs.class_names == ("road", "sidewalk", "building", "fence", "pole", "traffic sign",
                              "vegetation", "sky", "person", "car")
    # Cityscapes label id of car (26) maps to MiniCity id 9; wall (12) is not in the set
    assert cs.cityscapes_id_lut[26] == 9 and cs.cityscapes_id_lut[12] == -1


def test_the_cityscapes_table_is_the_benchmark_s_own():
    """Our label table against cityscapesscripts, the oracle: every id, name, train id, colour."""
    from cityscapesscripts.helpers import labels as cs

    theirs = {lab.id: (lab.name, lab.trainId if 0 <= lab.trainId < 255 and not lab.ignoreInEval else 255,
                       tuple(lab.color)) for lab in cs.labels if lab.id >= 0}
    ours = {i: (name, train, color) for i, name, train, color in L.CITYSCAPES_LABELS}
    assert ours == theirs
    assert L.CITYSCAPES_LABEL_IDS == frozenset(range(34))


def test_the_core_label_tables_need_no_cityscapesscripts():
    import subprocess
    import sys

    code = ("import sys; sys.modules['cityscapesscripts'] = None\n"
            "import maxsq_lib.labels, maxsq_lib.losses, maxsq_lib.metrics, maxsq_lib.models\n"
            "import maxsq_prep.minicity\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_palette_from_cityscapesscripts_and_colorize_ignore():
    assert L.CITYSCAPES_TRAIN_COLORS[0] == (128, 64, 128)  # road
    assert L.CITYSCAPES_TRAIN_COLORS[10] == (70, 130, 180)  # sky
    lab = np.array([[0, 9, -1], [255, 3, 10]])
    rgb = L.colorize(lab, 10)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128)
    assert tuple(rgb[0, 1]) == L.MINICITY_10.colors[9]
    assert tuple(rgb[0, 2]) == tuple(rgb[1, 0]) == tuple(rgb[1, 2]) == L.IGNORE_COLOR


def test_class_set_lookup_errors():
    assert L.class_set_for(16) is L.SYNTHIA_16
    assert L.class_set_for("nthu13") is L.NTHU_13
    with pytest.raises(ValueError, match="no class set has 7 classes"):
        L.class_set_for(7)
    with pytest.raises(ValueError, match="unknown class set"):
        L.class_set_for("cityscapes")
    with pytest.raises(ValueError, match="ascending"):
        L.ClassSet("bad", (3, 1))


def test_luts_are_read_only():
    with pytest.raises(ValueError):
        L.CITYSCAPES_19.cityscapes_id_lut[7] = 5
