"""Class sets and label-id lookup tables, as data in one place.

Every class set used by the course and by the paper's benchmarks is declared here:

=============  =======  ==================================================================
name           classes  where it is used
=============  =======  ==================================================================
cityscapes19   19       GTA5 -> Cityscapes (the Cityscapes train ids)
synthia16      16       SYNTHIA -> Cityscapes (19 minus terrain, truck, train)
nthu13         13       Cityscapes -> NTHU cross-city (19 minus wall, fence, pole, terrain,
                        truck, train)
minicity10     10       the embedded MiniCity benchmark (road, sidewalk, building, fence, pole,
                        traffic sign, vegetation, sky, person, car)
=============  =======  ==================================================================

Every set is a subset of the 19 Cityscapes train ids, listed in ascending order, so that a set's
own id ``k`` is the position of its ``k``-th train id. The Cityscapes label ids, train ids, names
and colours are the Cityscapes definitions (:data:`CITYSCAPES_LABELS`), checked against
``cityscapesscripts`` in the tests.

**Ignore value.** Pixels that belong to no class of the active set are labelled
:data:`IGNORE_INDEX` = -1, as in the authors' code (``CrossEntropyLoss(ignore_index=-1)``,
``0 <= gt < C`` in their evaluation). Lookup tables therefore map unknown ids to -1.

mIoU* (SYNTHIA): the 13 classes of the 16-class space that exclude wall, fence and pole, given by
:data:`MIOU_STAR_13_OF_16` as indices into ``synthia16``.

Introduced in notebook ``01_data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

IGNORE_INDEX = -1
"""Label value of pixels excluded from losses and metrics (the authors' convention)."""

CITYSCAPES_LABELS: tuple[tuple[int, str, int, tuple[int, int, int]], ...] = (
    (0, "unlabeled", 255, (0, 0, 0)), (1, "ego vehicle", 255, (0, 0, 0)),
    (2, "rectification border", 255, (0, 0, 0)), (3, "out of roi", 255, (0, 0, 0)),
    (4, "static", 255, (0, 0, 0)), (5, "dynamic", 255, (111, 74, 0)), (6, "ground", 255, (81, 0, 81)),
    (7, "road", 0, (128, 64, 128)), (8, "sidewalk", 1, (244, 35, 232)), (9, "parking", 255, (250, 170, 160)),
    (10, "rail track", 255, (230, 150, 140)), (11, "building", 2, (70, 70, 70)), (12, "wall", 3, (102, 102, 156)),
    (13, "fence", 4, (190, 153, 153)), (14, "guard rail", 255, (180, 165, 180)), (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)), (17, "pole", 5, (153, 153, 153)), (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)), (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)), (22, "terrain", 9, (152, 251, 152)), (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)), (25, "rider", 12, (255, 0, 0)), (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)), (28, "bus", 15, (0, 60, 100)), (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)), (31, "train", 16, (0, 80, 100)), (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
)
"""The Cityscapes label definitions: ``(label id, name, train id (255: not evaluated), RGB colour)``
for ids 0..33, as the Cityscapes dataset defines them (Cordts et al. 2016; the benchmark's own
``helpers/labels.py`` is the oracle of ``tests/test_labels.py``). Also the GTA5 and NTHU encoding."""

# Cityscapes train ids that are evaluated (0..18), in train-id order.
_CS_EVAL_LABELS = sorted((lab for lab in CITYSCAPES_LABELS if lab[2] < 255), key=lambda lab: lab[2])
assert [lab[2] for lab in _CS_EVAL_LABELS] == list(range(19))

CITYSCAPES_TRAIN_NAMES: tuple[str, ...] = tuple(lab[1] for lab in _CS_EVAL_LABELS)
"""The 19 Cityscapes train-id class names, index = train id."""

CITYSCAPES_TRAIN_COLORS: tuple[tuple[int, int, int], ...] = tuple(lab[3] for lab in _CS_EVAL_LABELS)
"""RGB colours of the 19 train ids (the standard Cityscapes palette)."""

CITYSCAPES_ID_TO_TRAIN19: dict[int, int] = {lab[0]: lab[2] for lab in _CS_EVAL_LABELS}
"""Cityscapes label id -> 19-class train id (7->0 road, ..., 33->18 bicycle). Also GTA5 and NTHU."""

SYNTHIA_ID_TO_TRAIN19: dict[int, int] = {1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11,
                                          11: 18, 12: 17, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3}
"""SYNTHIA-RAND-CITYSCAPES label id -> 19-class train id (ids 0, 13, 14, 22 are ignored).

Source: the authors' ``synthia_Dataset.py`` id map (docs/authors_code.md §6.3).
"""

CITYSCAPES_LABEL_IDS: frozenset[int] = frozenset(lab[0] for lab in CITYSCAPES_LABELS)
"""Label ids a Cityscapes-encoded label may hold (0..33); also GTA5 and NTHU."""

SYNTHIA_LABEL_IDS: frozenset[int] = frozenset(range(23))
"""Label ids a SYNTHIA label (channel 0) may hold: 0 (void) .. 22 (lane marking)."""

IGNORE_COLOR: tuple[int, int, int] = (255, 255, 255)
"""Colour drawn for ignored pixels (and pseudo-labels not kept): white.

Not Cityscapes' black for "unlabeled": black is hard to tell from building (70, 70, 70) and truck
(0, 0, 70). No class is white, and the nearest class colour, terrain (152, 251, 152), is about
146 RGB units away."""


@dataclass(frozen=True)
class ClassSet:
    """A set of evaluated classes, as a subset of the 19 Cityscapes train ids.

    Args:
        name: registry key, e.g. ``"cityscapes19"``.
        train19_ids: the Cityscapes train ids in this set, ascending; position = this set's id.
    """

    name: str
    train19_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        ids = list(self.train19_ids)
        if ids != sorted(set(ids)) or not all(0 <= i < 19 for i in ids):
            raise ValueError(f"class set {self.name!r}: train ids must be ascending, unique, in 0..18")

    @property
    def num_classes(self) -> int:
        return len(self.train19_ids)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(CITYSCAPES_TRAIN_NAMES[i] for i in self.train19_ids)

    @property
    def colors(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(CITYSCAPES_TRAIN_COLORS[i] for i in self.train19_ids)

    @cached_property
    def train19_lut(self) -> np.ndarray:
        """Lookup table (19,) int64: Cityscapes train id -> this set's id, -1 if not in the set."""
        lut = np.full(19, IGNORE_INDEX, dtype=np.int64)
        lut[list(self.train19_ids)] = np.arange(self.num_classes)
        return lut

    def _lut_from(self, id_to_train19: dict[int, int]) -> np.ndarray:
        lut = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for label_id, train_id in id_to_train19.items():
            lut[label_id] = self.train19_lut[train_id]
        lut.setflags(write=False)
        return lut

    @cached_property
    def cityscapes_id_lut(self) -> np.ndarray:
        """Lookup table (256,) int64: Cityscapes/GTA5/NTHU label id -> this set's id (or -1)."""
        return self._lut_from(CITYSCAPES_ID_TO_TRAIN19)

    @cached_property
    def synthia_id_lut(self) -> np.ndarray:
        """Lookup table (256,) int64: SYNTHIA label id -> this set's id (or -1)."""
        return self._lut_from(SYNTHIA_ID_TO_TRAIN19)

    @cached_property
    def palette(self) -> np.ndarray:
        """(num_classes + 1, 3) uint8 RGB; the last row is the ignore colour, so
        ``palette[label]`` colours a label map that uses -1 for ignore."""
        return np.array(list(self.colors) + [IGNORE_COLOR], dtype=np.uint8)


CITYSCAPES_19 = ClassSet("cityscapes19", tuple(range(19)))
SYNTHIA_16 = ClassSet("synthia16", (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18))
NTHU_13 = ClassSet("nthu13", (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18))
MINICITY_10 = ClassSet("minicity10", (0, 1, 2, 4, 5, 7, 8, 10, 11, 13))

CLASS_SETS: dict[str, ClassSet] = {cs.name: cs for cs in (CITYSCAPES_19, SYNTHIA_16, NTHU_13, MINICITY_10)}
"""All class sets by name."""

MIOU_STAR_13_OF_16: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
"""Indices into ``synthia16`` that make mIoU* (drops wall, fence, pole), as the authors' eval."""


def class_set_for(num_classes: int | str) -> ClassSet:
    """The class set for a number of model outputs (19, 16, 13, 10) or a set name.

    Args:
        num_classes: 19, 16, 13 or 10, or a key of :data:`CLASS_SETS`.
    Returns:
        the :class:`ClassSet`.
    """
    if isinstance(num_classes, str):
        if num_classes not in CLASS_SETS:
            raise ValueError(f"unknown class set {num_classes!r}; expected one of {sorted(CLASS_SETS)}")
        return CLASS_SETS[num_classes]
    for cs in CLASS_SETS.values():
        if cs.num_classes == num_classes:
            return cs
    sizes = sorted(cs.num_classes for cs in CLASS_SETS.values())
    raise ValueError(f"no class set has {num_classes} classes; expected one of {sizes}")


def colorize(label: np.ndarray, class_set: ClassSet | int | str) -> np.ndarray:
    """Colour a label map with the Cityscapes palette of a class set.

    Args:
        label: integer array (..., H, W) of this set's ids, -1 (or any out-of-range id) = ignore.
        class_set: the set, or its size or name.
    Shape:
        label (H, W) -> (H, W, 3) uint8.
    Returns:
        RGB uint8 image; ignored pixels in :data:`IGNORE_COLOR` (white).
    """
    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    label = np.asarray(label).astype(np.int64)
    idx = np.where((label >= 0) & (label < cs.num_classes), label, cs.num_classes)
    return cs.palette[idx]
