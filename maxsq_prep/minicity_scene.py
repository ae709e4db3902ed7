"""MiniCity scene layouts: a street scene sampled from a seed, as an instance map and a label map.

A layout is geometry and semantics only, no colours: a pinhole camera looks down a straight street
(sky, a distant skyline, a road with lane marks, sidewalks on both sides, building facades, trees,
fences, poles with signs, persons and cars). Everything is sampled first and then drawn far to near
on an instance canvas with PIL, so nearer objects occlude farther ones. Each instance is one *part*
(a car body, a car window, a facade, ...) and every part belongs to one of the ten MiniCity classes,
so the label map is ``PART_LABEL_IDS[parts][instance_map]``. How a layout looks is decided later by
:func:`maxsq_prep.minicity_style.render`; rendering one layout with different styles never changes its
labels.

World coordinates are metres: ``X`` to the right, ``Y`` up from the ground, ``Z`` forward from the
camera. Pixel coordinates follow PIL (pixel ``(i, j)`` is centred on ``x = i``, ``y = j``).

Introduced in notebook ``01_data``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from maxsq_lib.labels import CITYSCAPES_ID_TO_TRAIN19, MINICITY_10

_TRAIN19_TO_LABEL_ID = {train: label_id for label_id, train in CITYSCAPES_ID_TO_TRAIN19.items()}

CLASS_LABEL_IDS: dict[str, int] = {
    name: _TRAIN19_TO_LABEL_ID[train]
    for name, train in zip(MINICITY_10.class_names, MINICITY_10.train19_ids)
}
"""MiniCity class name -> Cityscapes label id (road 7, ..., car 26), as written on disk."""

UNLABELED_ID = 0
"""Cityscapes label id of pixels that belong to no class (MiniCity draws none, but it is allowed)."""


class Part(IntEnum):
    """What an instance is; decides its class (:data:`PART_CLASS`) and its colour family."""

    SKY = 0
    ROAD = 1
    SIDEWALK = 2
    FACADE = 3  # building wall along the street, with windows
    BUILDING_END = 4  # end wall of a block, no windows
    SKYLINE = 5  # distant building fronts at the end of the street
    TREE = 6
    TRUNK = 7
    HEDGE = 8
    TREELINE = 9
    LAWN = 10
    FENCE = 11
    POLE = 12
    SIGN = 13
    PERSON_TOP = 14
    PERSON_LEGS = 15
    PERSON_SKIN = 16
    CAR_BODY = 17
    CAR_GLASS = 18
    CAR_DARK = 19  # tyres and underbody
    CAR_LIGHT = 20


PART_CLASS: dict[Part, str] = {
    Part.SKY: "sky",
    Part.ROAD: "road",
    Part.SIDEWALK: "sidewalk",
    Part.FACADE: "building",
    Part.BUILDING_END: "building",
    Part.SKYLINE: "building",
    Part.TREE: "vegetation",
    Part.TRUNK: "vegetation",
    Part.HEDGE: "vegetation",
    Part.TREELINE: "vegetation",
    Part.LAWN: "vegetation",
    Part.FENCE: "fence",
    Part.POLE: "pole",
    Part.SIGN: "traffic sign",
    Part.PERSON_TOP: "person",
    Part.PERSON_LEGS: "person",
    Part.PERSON_SKIN: "person",
    Part.CAR_BODY: "car",
    Part.CAR_GLASS: "car",
    Part.CAR_DARK: "car",
    Part.CAR_LIGHT: "car",
}
"""Part -> MiniCity class name."""

PART_LABEL_IDS: np.ndarray = np.array(
    [CLASS_LABEL_IDS[PART_CLASS[p]] for p in Part], dtype=np.uint8
)
"""(num_parts,) uint8: part code -> Cityscapes label id."""

SKY_DEPTH = 1.0e4
"""Depth (m) given to sky pixels (for distance haze)."""

Z_NEAR = 0.5
"""Nearest depth (m) drawn; geometry in front of it is clipped."""

GEOM_WIDTH = 8
"""Number of floats describing an instance's surface (see :class:`Layout`)."""


@dataclass(frozen=True)
class Camera:
    """A level pinhole camera (no roll, no pitch) at ``height_m`` above a flat ground.

    Args:
        width, height: image size in pixels.
        focal: focal length in pixels.
        horizon: image row of the horizon (float).
        vanish_x: image column of the street's vanishing point (float).
        height_m: camera height above the ground in metres.
    """

    width: int
    height: int
    focal: float
    horizon: float
    vanish_x: float
    height_m: float

    def project(self, X, Y, Z) -> tuple[np.ndarray, np.ndarray]:
        """World points -> pixel coordinates.

        Args:
            X, Y, Z: arrays (or floats) of world coordinates, ``Z > 0``.
        Returns:
            ``(x, y)`` pixel coordinates, same shape.
        """
        Z = np.maximum(np.asarray(Z, dtype=np.float64), 1e-6)
        return self.vanish_x + self.focal * np.asarray(X) / Z, self.horizon + self.focal * (
            self.height_m - np.asarray(Y)
        ) / Z


@dataclass(frozen=True)
class LayoutStats:
    """Distributions of one domain's scene layout (ranges are uniform ``(low, high)``).

    Args:
        horizon: horizon row as a fraction of the image height.
        focal: focal length as a fraction of the image width.
        vanish_dx: maximal vanishing-point offset from the centre, fraction of the width.
        camera_height: metres.
        lanes: inclusive range of the number of lanes.
        lane_width, sidewalk_width: metres.
        street_length: metres of street lined with buildings.
        block_length, building_height: metres, per block.
        gap_prob: probability that the next stretch of street has no building.
        setback_prob: probability that a block stands back from the sidewalk.
        skyline_height: metres of distant buildings at the end of the street.
        skyline_gap_prob: probability of a gap in the skyline.
        treeline_prob: probability of a line of trees at the horizon.
        lawn_prob: probability that the ground beyond a sidewalk is vegetation (else pavement).
        trees_per_100m: mean street trees per 100 m per side.
        hedge_prob: probability of a hedge per side.
        fence_prob: probability of a fence per side.
        poles_per_100m: mean poles per 100 m per side.
        sign_prob: probability that a pole carries a sign.
        persons: mean number of persons on the sidewalks.
        cars: mean number of moving cars on the road.
        parked_cars: mean number of parked cars per side.
    """

    horizon: tuple[float, float] = (0.36, 0.46)
    focal: tuple[float, float] = (0.55, 0.70)
    vanish_dx: float = 0.10
    camera_height: tuple[float, float] = (1.4, 1.8)
    lanes: tuple[int, int] = (2, 4)
    lane_width: tuple[float, float] = (3.0, 3.6)
    sidewalk_width: tuple[float, float] = (2.5, 4.5)
    street_length: tuple[float, float] = (60.0, 180.0)
    block_length: tuple[float, float] = (10.0, 30.0)
    building_height: tuple[float, float] = (5.0, 15.0)
    gap_prob: float = 0.35
    setback_prob: float = 0.3
    skyline_height: tuple[float, float] = (8.0, 30.0)
    skyline_gap_prob: float = 0.3
    treeline_prob: float = 0.5
    lawn_prob: float = 0.3
    trees_per_100m: float = 3.0
    hedge_prob: float = 0.25
    fence_prob: float = 0.6
    poles_per_100m: float = 3.5
    sign_prob: float = 0.6
    persons: float = 5.0
    cars: float = 3.5
    parked_cars: float = 2.0


SOURCE_LAYOUT = LayoutStats()
"""Layout statistics of the source domain (MiniGTA)."""

TARGET_LAYOUT = replace(
    SOURCE_LAYOUT,
    horizon=(0.40, 0.50),
    focal=(0.60, 0.75),
    street_length=(50.0, 150.0),
    building_height=(6.0, 17.0),
    gap_prob=0.3,
    treeline_prob=0.7,
    lawn_prob=0.4,
    trees_per_100m=5.0,
    hedge_prob=0.4,
    fence_prob=0.5,
    poles_per_100m=4.0,
    persons=6.0,
    cars=4.0,
    parked_cars=2.5,
)
"""Layout statistics of the target domain (MiniCityscapes): lower horizon, more vegetation,
more cars and persons."""

CITY_LAYOUTS: dict[str, LayoutStats] = {
    "Rome": replace(
        TARGET_LAYOUT, building_height=(6.0, 14.0), lanes=(1, 3), persons=9.0,
        trees_per_100m=3.0, sidewalk_width=(2.0, 3.5), skyline_height=(8.0, 30.0),
    ),
    "Rio": replace(
        TARGET_LAYOUT, horizon=(0.36, 0.46), trees_per_100m=9.0, hedge_prob=0.6, lawn_prob=0.6,
        treeline_prob=0.9, skyline_height=(25.0, 80.0), gap_prob=0.4,
    ),
    "Tokyo": replace(
        TARGET_LAYOUT, building_height=(12.0, 35.0), gap_prob=0.12, trees_per_100m=1.5,
        poles_per_100m=6.0, sign_prob=0.8, persons=9.0, sidewalk_width=(1.8, 3.0),
        lanes=(1, 3), treeline_prob=0.3, lawn_prob=0.1,
    ),
    "Taipei": replace(
        TARGET_LAYOUT, cars=6.0, parked_cars=3.5, poles_per_100m=5.0, sign_prob=0.75,
        building_height=(9.0, 26.0), fence_prob=0.6, trees_per_100m=3.0,
    ),
}
"""Layout statistics of the four NTHU-layout cities (target statistics with a local twist)."""


@dataclass(frozen=True)
class Layout:
    """One sampled scene.

    Args:
        camera: the camera.
        instance_map: (H, W) int32 instance index per pixel (0 = sky).
        parts: (N,) uint8 :class:`Part` code per instance.
        geom: (N, GEOM_WIDTH) float32 surface description per instance, used for textures:
            facades ``[X_plane, Z0, Z1, height, sx, sy, wx, wy]`` (window spacings ``sx`` along the
            wall and ``sy`` per floor, window fractions ``wx``, ``wy``); skyline
            ``[Z_plane, X0, X1, height, sx, sy, wx, wy]``; fences and hedges ``[X_plane, Z0, Z1,
            height, 0, 0, 0, 0]``; zeros otherwise.
        depth: (N,) float32 representative depth in metres (NaN where it varies over the surface:
            ground and facades, computed per pixel by :meth:`depth_map`).
        marks: (K, 5) float32 painted lines ``[X_centre, width, period, dash, part]`` (period 0 =
            solid line) on the ground part ``part`` (road lane marks, sidewalk kerbs).
    Shape:
        instance_map (H, W); label_map (H, W).
    """

    camera: Camera
    instance_map: np.ndarray
    parts: np.ndarray
    geom: np.ndarray
    depth: np.ndarray
    marks: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) in pixels."""
        return self.camera.width, self.camera.height

    @property
    def label_map(self) -> np.ndarray:
        """(H, W) uint8 Cityscapes label ids."""
        return PART_LABEL_IDS[self.parts][self.instance_map]

    @property
    def part_map(self) -> np.ndarray:
        """(H, W) uint8 :class:`Part` code per pixel."""
        return self.parts[self.instance_map]

    def depth_map(self) -> np.ndarray:
        """(H, W) float32 depth in metres: analytic for ground and facades, per instance otherwise."""
        cam = self.camera
        ys, xs = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32)
        depth = self.depth[self.instance_map].astype(np.float32)
        part = self.part_map
        ground = np.isin(part, (Part.ROAD, Part.SIDEWALK, Part.LAWN))
        below = np.maximum(ys - cam.horizon, 0.05)
        depth = np.where(ground, cam.focal * cam.height_m / below, depth)
        facade = np.isin(part, (Part.FACADE, Part.FENCE, Part.HEDGE))  # planes X = const
        plane_x = self.geom[self.instance_map, 0]
        dx = xs - cam.vanish_x
        same_side = (dx * plane_x) > 0
        facade_z = cam.focal * np.abs(plane_x) / np.maximum(np.abs(dx), 0.05)
        depth = np.where(facade & same_side, facade_z, depth)
        return np.nan_to_num(depth, nan=50.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Drawing on an instance canvas


class _Canvas:
    """Instance canvas: each drawn part gets a new instance index; later draws occlude earlier."""

    def __init__(self, camera: Camera):
        self.camera = camera
        self.image = Image.new("I", (camera.width, camera.height), 0)
        self._draw = ImageDraw.Draw(self.image)
        self.parts: list[int] = [int(Part.SKY)]
        self.geom: list[tuple[float, ...]] = [(0.0,) * GEOM_WIDTH]
        self.depth: list[float] = [SKY_DEPTH]

    def new(self, part: Part, depth: float = math.nan, geom: tuple[float, ...] | None = None) -> int:
        """Register an instance and return its index."""
        self.parts.append(int(part))
        self.depth.append(float(depth))
        g = tuple(geom) if geom is not None else ()
        self.geom.append(g + (0.0,) * (GEOM_WIDTH - len(g)))
        return len(self.parts) - 1

    def polygon(self, inst: int, xs: list[float], ys: list[float]) -> None:
        """Fill a polygon given in pixel coordinates."""
        self._draw.polygon(list(zip(xs, ys)), fill=inst)

    def world_polygon(self, inst: int, X: list[float], Y: list[float], Z: list[float]) -> None:
        """Fill a polygon given by world corners (all with ``Z >= Z_NEAR``)."""
        cam = self.camera
        # Plain Python: these polygons have 3-4 corners, where numpy's call overhead dominates.
        pts = [(cam.vanish_x + cam.focal * x / z, cam.horizon + cam.focal * (cam.height_m - y) / z)
               for x, y, z in zip(X, Y, Z)]
        self._draw.polygon(pts, fill=inst)

    def rect_px(self, inst: int, x0: float, y0: float, x1: float, y1: float, min_w: float = 0.0) -> None:
        """Fill an axis-aligned rectangle in pixels, at least ``min_w`` wide (thin poles stay visible)."""
        if x1 - x0 < min_w:
            cx = 0.5 * (x0 + x1)
            x0, x1 = cx - 0.5 * min_w, cx + 0.5 * min_w
        self.polygon(inst, [x0, x1, x1, x0], [y0, y0, y1, y1])

    def upright_rect(self, inst: int, X0: float, X1: float, Y0: float, Y1: float, Z: float,
                     min_w: float = 0.0) -> None:
        """Fill a rectangle facing the camera at depth ``Z``."""
        cam = self.camera
        k = cam.focal / Z
        self.rect_px(inst, cam.vanish_x + k * X0, cam.horizon + k * (cam.height_m - Y1),
                     cam.vanish_x + k * X1, cam.horizon + k * (cam.height_m - Y0), min_w)

    def ellipse(self, inst: int, X: float, Y: float, Z: float, rx_m: float, ry_m: float) -> None:
        """Fill an ellipse facing the camera, centred on a world point."""
        cam = self.camera
        k = cam.focal / Z
        cx, cy = cam.vanish_x + k * X, cam.horizon + k * (cam.height_m - Y)
        rx, ry = max(k * rx_m, 0.45), max(k * ry_m, 0.45)
        self._draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=inst)

    def to_layout(self, marks: list[tuple[float, ...]]) -> Layout:
        return Layout(
            camera=self.camera,
            instance_map=np.asarray(self.image, dtype=np.int32),
            parts=np.asarray(self.parts, dtype=np.uint8),
            geom=np.asarray(self.geom, dtype=np.float32),
            depth=np.asarray(self.depth, dtype=np.float32),
            marks=np.asarray(marks, dtype=np.float32).reshape(-1, 5),
        )


# --------------------------------------------------------------------------------------------
# Street geometry


@dataclass(frozen=True)
class _Street:
    """Lateral structure of the street (metres): road from ``road_left`` to ``road_right``."""

    road_left: float
    road_right: float
    walk_left: float  # sidewalk widths
    walk_right: float
    lane_width: float
    lanes: int
    length: float

    def road_edge(self, side: int) -> float:
        return self.road_right if side > 0 else self.road_left

    def outer_edge(self, side: int) -> float:
        return self.road_right + self.walk_right if side > 0 else self.road_left - self.walk_left

    def walk_width(self, side: int) -> float:
        return self.walk_right if side > 0 else self.walk_left


class _Sampler:
    """Scalar random draws for layout sampling, taken from a NumPy generator in blocks.

    A layout needs a few hundred scalars; one NumPy call per scalar would cost more than all the
    drawing. The sequence is fixed by the generator's seed, so layouts stay reproducible.
    """

    _BLOCK = 512

    def __init__(self, rng: _Sampler):
        self._rng = rng
        self._pool: list[float] = []
        self._next = 0

    def random(self) -> float:
        """Uniform in [0, 1)."""
        if self._next == len(self._pool):
            self._pool = self._rng.random(self._BLOCK).tolist()
            self._next = 0
        value = self._pool[self._next]
        self._next += 1
        return value

    def uniform(self, low: float, high: float) -> float:
        """Uniform in [low, high)."""
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return min(low + int((high - low) * self.random()), high - 1)

    def normal(self, mean: float, std: float) -> float:
        """Gaussian (Box-Muller)."""
        radius = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return mean + std * radius * math.cos(2.0 * math.pi * self.random())

    def poisson(self, lam: float) -> int:
        """Poisson count (Knuth's product of uniforms; the means here are small)."""
        limit, k, product = math.exp(-lam), 0, self.random()
        while product > limit:
            k += 1
            product *= self.random()
        return k


def _sample_camera(rng: _Sampler, size: tuple[int, int], stats: LayoutStats) -> Camera:
    width, height = size
    return Camera(
        width=width,
        height=height,
        focal=rng.uniform(*stats.focal) * width,
        horizon=rng.uniform(*stats.horizon) * height,
        vanish_x=width * (0.5 + rng.uniform(-stats.vanish_dx, stats.vanish_dx)),
        height_m=rng.uniform(*stats.camera_height),
    )


def _sample_street(rng: _Sampler, stats: LayoutStats) -> _Street:
    lanes = rng.integers(stats.lanes[0], stats.lanes[1] + 1)
    lane_width = rng.uniform(*stats.lane_width)
    ego_lane = rng.integers(0, lanes)
    road_left = -(ego_lane + 0.5) * lane_width
    return _Street(
        road_left=road_left,
        road_right=road_left + lanes * lane_width,
        walk_left=rng.uniform(*stats.sidewalk_width),
        walk_right=rng.uniform(*stats.sidewalk_width),
        lane_width=lane_width,
        lanes=lanes,
        length=rng.uniform(*stats.street_length),
    )


def _draw_background(canvas: _Canvas, rng: _Sampler, street: _Street,
                     stats: LayoutStats) -> None:
    """Distant skyline, tree line and the ground beyond the sidewalks."""
    cam = canvas.camera
    z_sky = rng.uniform(150.0, 300.0)
    x_left = (-2.0 - cam.vanish_x) * z_sky / cam.focal
    x_right = (cam.width + 2.0 - cam.vanish_x) * z_sky / cam.focal
    X = x_left
    while X < x_right:
        w = rng.uniform(12.0, 45.0)
        h = rng.uniform(*stats.skyline_height)
        gap = rng.random() < stats.skyline_gap_prob
        sx, sy = rng.uniform(3.0, 5.0), rng.uniform(3.0, 4.0)
        if not gap:
            inst = canvas.new(Part.SKYLINE, z_sky, (z_sky, X, X + w, h, sx, sy, 0.5, 0.5))
            canvas.world_polygon(inst, [X, X + w, X + w, X], [0, 0, h, h], [z_sky] * 4)
        X += w
    if rng.random() < stats.treeline_prob:
        inst = canvas.new(Part.TREELINE, z_sky * 0.8)
        n = rng.integers(3, 9)
        centre = rng.uniform(x_left, x_right)
        spread = rng.uniform(0.1, 0.5) * (x_right - x_left)
        for _ in range(n):
            X = centre + rng.normal(0.0, spread)
            r = rng.uniform(6.0, 16.0)
            canvas.ellipse(inst, X, r * 0.5, z_sky * 0.8, r * 1.3, r)
    # The ground beyond the sidewalks, seen through gaps between the buildings.
    for side in (-1, 1):
        part = Part.LAWN if rng.random() < stats.lawn_prob else Part.SIDEWALK
        inst = canvas.new(part)
        X0, X1 = street.outer_edge(side), street.outer_edge(side) + side * 400.0
        canvas.world_polygon(inst, [X0, X1, X1, X0], [0] * 4, [Z_NEAR, Z_NEAR, 2000.0, 2000.0])


def _draw_ground(canvas: _Canvas, rng: _Sampler, street: _Street) -> list[tuple[float, ...]]:
    """Road and sidewalks; returns the painted marks ``[X, width, period, dash, part]``."""
    z = [Z_NEAR, Z_NEAR, 2000.0, 2000.0]
    road = canvas.new(Part.ROAD)
    X0, X1 = street.road_left, street.road_right
    canvas.world_polygon(road, [X0, X1, X1, X0], [0] * 4, z)
    for side in (-1, 1):
        walk = canvas.new(Part.SIDEWALK)
        X0, X1 = street.road_edge(side), street.outer_edge(side)
        canvas.world_polygon(walk, [X0, X1, X1, X0], [0] * 4, z)
    marks: list[tuple[float, ...]] = []
    period, dash = rng.uniform(8.0, 12.0), rng.uniform(2.5, 4.0)
    for k in range(1, street.lanes):
        marks.append((street.road_left + k * street.lane_width, 0.15, period, dash, float(Part.ROAD)))
    if rng.random() < 0.6:  # solid edge lines
        for side in (-1, 1):
            marks.append((street.road_edge(side) - side * 0.3, 0.15, 0.0, 0.0, float(Part.ROAD)))
    for side in (-1, 1):  # kerb stones along the road edge
        marks.append((street.road_edge(side) + side * 0.12, 0.25, 0.0, 0.0, float(Part.SIDEWALK)))
    return marks


def _draw_buildings(canvas: _Canvas, rng: _Sampler, street: _Street,
                    stats: LayoutStats) -> list[tuple[int, float, float]]:
    """Facade blocks on both sides, far to near; returns gaps ``(side, Z0, Z1)`` without building."""
    blocks: list[tuple[float, ...]] = []
    gaps: list[tuple[int, float, float]] = []
    for side in (-1, 1):
        Z = rng.uniform(-8.0, 4.0)
        while Z < street.length:
            if rng.random() < stats.gap_prob:
                length = rng.uniform(5.0, 18.0)
                gaps.append((side, Z, Z + length))
            else:
                length = rng.uniform(*stats.block_length)
                height = rng.uniform(*stats.building_height)
                setback = rng.uniform(0.5, 3.0) if rng.random() < stats.setback_prob else 0.0
                X = street.outer_edge(side) + side * setback
                win = (rng.uniform(2.5, 4.0), rng.uniform(2.8, 3.6),
                       rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6))
                blocks.append((Z, Z + length, height, X, side) + win)
            Z += length
    for Z0, Z1, height, X, side, *win in sorted(blocks, key=lambda b: -b[0]):
        if Z1 <= Z_NEAR:
            continue
        z0 = max(Z0, Z_NEAR)
        if Z0 > 1.0:  # the block's end wall, visible where the nearer neighbour is lower or absent
            end = canvas.new(Part.BUILDING_END, Z0)
            X_out = X + side * 25.0
            canvas.world_polygon(end, [X, X_out, X_out, X], [0, 0, height, height], [Z0] * 4)
        facade = canvas.new(Part.FACADE, math.nan, (X, Z0, Z1, height, *win))
        canvas.world_polygon(facade, [X] * 4, [0, 0, height, height], [z0, Z1, Z1, z0])
    return gaps


# Objects: each is (sort depth, draw function); sampled first, drawn far to near.
_Drawable = tuple[float, Callable[[_Canvas], None]]


def _tree(rng: _Sampler, X: float, Z: float, scale: float = 1.0) -> _Drawable:
    trunk_h = rng.uniform(1.8, 3.2) * scale
    r = rng.uniform(1.4, 2.8) * scale
    blobs = [(X + rng.normal(0, 0.35 * r), trunk_h + r * rng.uniform(0.5, 1.1),
              r * rng.uniform(0.65, 1.0), r * rng.uniform(0.6, 0.95))
             for _ in range(rng.integers(2, 5))]

    def draw(c: _Canvas) -> None:
        trunk = c.new(Part.TRUNK, Z)
        c.upright_rect(trunk, X - 0.15 * scale, X + 0.15 * scale, 0.0, trunk_h + r * 0.5, Z, 1.0)
        crown = c.new(Part.TREE, Z)
        for bx, by, rx, ry in blobs:
            c.ellipse(crown, bx, by, Z, rx, ry)

    return Z, draw


def _strip(part: Part, X: float, Z0: float, Z1: float, height: float, piece: float) -> list[_Drawable]:
    """A low wall-like strip in the plane ``X`` (fence, hedge) from ``Z0`` to ``Z1``, as pieces of
    length ``piece`` that sort on their own depth, so that cars and poles occlude it correctly.
    All pieces share one instance."""
    instance: list[int] = []  # created by the first piece drawn, the farthest one
    out: list[_Drawable] = []
    for za in np.arange(Z0, Z1, piece):
        zb = min(za + piece, Z1)
        if zb <= Z_NEAR:
            continue

        def draw(c: _Canvas, za: float = float(max(za, Z_NEAR)), zb: float = float(zb)) -> None:
            if not instance:
                instance.append(c.new(part, math.nan, (X, Z0, Z1, height)))
            c.world_polygon(instance[0], [X] * 4, [0, 0, height, height], [za, zb, zb, za])

        out.append((0.5 * (za + zb), draw))
    return out


def _pole(rng: _Sampler, X: float, Z: float, side: int, sign_prob: float) -> _Drawable:
    height = rng.uniform(3.5, 8.0)
    width = rng.uniform(0.10, 0.18)
    arm = rng.uniform(1.0, 2.5) if (height > 5.5 and rng.random() < 0.6) else 0.0
    has_sign = rng.random() < sign_prob
    sign_y = rng.uniform(2.0, min(3.2, height - 0.4))
    sign_size = rng.uniform(0.5, 0.9)
    shape = rng.integers(0, 3)  # 0 rectangle, 1 disc, 2 triangle
    second_sign = has_sign and rng.random() < 0.25

    def draw(c: _Canvas) -> None:
        pole = c.new(Part.POLE, Z)
        c.upright_rect(pole, X - width / 2, X + width / 2, 0.0, height, Z, 1.0)
        if arm:
            c.upright_rect(pole, X - side * arm, X, height - 0.15, height, Z, 0.0)
        if has_sign:
            for k in range(2 if second_sign else 1):
                sign = c.new(Part.SIGN, Z - 0.05)
                y = sign_y - k * (sign_size + 0.15)
                s = sign_size / 2
                if shape == 1:
                    c.ellipse(sign, X, y, Z - 0.05, s, s)
                elif shape == 2:
                    c.world_polygon(sign, [X - s, X + s, X], [y + s, y + s, y - s], [Z - 0.05] * 3)
                else:
                    c.upright_rect(sign, X - s * 1.2, X + s * 1.2, y - s, y + s, Z - 0.05, 1.0)

    return Z, draw


def _person(rng: _Sampler, X: float, Z: float) -> _Drawable:
    height = rng.uniform(1.55, 1.9)
    width = rng.uniform(0.42, 0.55)
    stride = rng.uniform(0.0, 0.25)

    def draw(c: _Canvas) -> None:
        legs = c.new(Part.PERSON_LEGS, Z)
        leg_top = 0.47 * height
        # two legs as one trapezoid opening by the stride
        c.world_polygon(legs, [X - 0.12 - stride / 2, X + 0.12 + stride / 2, X + 0.14, X - 0.14],
                        [0, 0, leg_top, leg_top], [Z] * 4)
        top = c.new(Part.PERSON_TOP, Z)
        c.world_polygon(top, [X - width / 2, X + width / 2, X + width * 0.42, X - width * 0.42],
                        [leg_top, leg_top, 0.84 * height, 0.84 * height], [Z] * 4)
        head = c.new(Part.PERSON_SKIN, Z)
        c.ellipse(head, X, 0.92 * height, Z, 0.1 * height, 0.08 * height)

    return Z, draw


def _car(rng: _Sampler, X: float, Z: float) -> _Drawable:
    """A car seen from behind (or the front: the silhouette is the same), near face at depth ``Z``."""
    w = rng.uniform(1.7, 1.95)
    length = rng.uniform(3.9, 4.8)
    belt = rng.uniform(0.85, 1.05)
    roof = rng.uniform(1.35, 1.6)
    clear = 0.18

    def draw(c: _Canvas) -> None:
        # Side face towards the camera axis, drawn first (it is behind the near face).
        if abs(X) > w / 2 + 0.1:
            xs = X - math.copysign(w / 2, X)
            zf, zb = Z, Z + length
            body = c.new(Part.CAR_BODY, Z + length / 2)
            c.world_polygon(body, [xs] * 4, [clear, clear, belt, belt], [zf, zb, zb, zf])
            c.world_polygon(body, [xs] * 4, [belt, belt, roof, roof],
                            [zf + 0.25 * length, zb - 0.2 * length, zb - 0.3 * length, zf + 0.35 * length])
            glass = c.new(Part.CAR_GLASS, Z + length / 2)
            c.world_polygon(glass, [xs] * 4, [belt + 0.05, belt + 0.05, roof - 0.07, roof - 0.07],
                            [zf + 0.29 * length, zb - 0.24 * length, zb - 0.32 * length, zf + 0.37 * length])
            dark = c.new(Part.CAR_DARK, Z + length / 2)
            for zc in (zf + 0.7, zb - 0.7):
                z_wheel = [zc - 0.35, zc + 0.35, zc + 0.35, zc - 0.35]
                c.world_polygon(dark, [xs] * 4, [0, 0, 0.6, 0.6], z_wheel)
        # Near face.
        body = c.new(Part.CAR_BODY, Z)
        c.upright_rect(body, X - w / 2, X + w / 2, clear, belt, Z)
        c.world_polygon(body, [X - w / 2, X + w / 2, X + 0.38 * w, X - 0.38 * w],
                        [belt, belt, roof, roof], [Z + 0.6] * 4)
        glass = c.new(Part.CAR_GLASS, Z + 0.6)
        c.world_polygon(glass, [X - 0.44 * w, X + 0.44 * w, X + 0.34 * w, X - 0.34 * w],
                        [belt + 0.06, belt + 0.06, roof - 0.08, roof - 0.08], [Z + 0.6] * 4)
        dark = c.new(Part.CAR_DARK, Z)
        c.upright_rect(dark, X - w / 2, X + w / 2, 0.0, clear, Z)
        c.upright_rect(dark, X - w / 2, X - w / 2 + 0.3, 0.0, 0.42, Z)
        c.upright_rect(dark, X + w / 2 - 0.3, X + w / 2, 0.0, 0.42, Z)
        light = c.new(Part.CAR_LIGHT, Z - 0.01)
        ly = belt - 0.2
        c.upright_rect(light, X - w / 2 + 0.08, X - w / 2 + 0.38, ly - 0.08, ly + 0.08, Z - 0.01)
        c.upright_rect(light, X + w / 2 - 0.38, X + w / 2 - 0.08, ly - 0.08, ly + 0.08, Z - 0.01)

    return Z, draw


def _sample_cars(rng: _Sampler, street: _Street, stats: LayoutStats) -> list[_Drawable]:
    """Moving cars in the lanes and parked cars at both road edges, without overlaps."""
    placed: list[tuple[float, float]] = []  # (X, Z)
    out: list[_Drawable] = []

    def free(X: float, Z: float) -> bool:
        return all(abs(X - x) > 2.2 or abs(Z - z) > 6.5 for x, z in placed)

    for _ in range(rng.poisson(stats.cars)):
        lane = rng.integers(0, street.lanes)
        X = street.road_left + (lane + 0.5) * street.lane_width + rng.normal(0, 0.2)
        Z = rng.uniform(5.0 if abs(X) > 1.5 else 7.0, 70.0)
        if free(X, Z):
            placed.append((X, Z))
            out.append(_car(rng, X, Z))
    for side in (-1, 1):
        for _ in range(rng.poisson(stats.parked_cars)):
            X = street.road_edge(side) - side * rng.uniform(1.0, 1.3)
            Z = rng.uniform(3.0, 60.0)
            if free(X, Z):
                placed.append((X, Z))
                out.append(_car(rng, X, Z))
    return out


def _sample_objects(rng: _Sampler, street: _Street, stats: LayoutStats,
                    gaps: list[tuple[int, float, float]]) -> list[_Drawable]:
    objects: list[_Drawable] = []
    length = street.length
    for side in (-1, 1):
        edge, outer, walk = street.road_edge(side), street.outer_edge(side), street.walk_width(side)
        for _ in range(rng.poisson(stats.trees_per_100m * length / 100.0)):
            X = outer - side * rng.uniform(0.6, min(1.4, walk * 0.6))
            objects.append(_tree(rng, X, rng.uniform(3.0, length)))
        if rng.random() < stats.hedge_prob:
            z0 = rng.uniform(0.0, length * 0.6)
            z1, height = z0 + rng.uniform(8.0, 30.0), rng.uniform(0.7, 1.3)
            objects += _strip(Part.HEDGE, outer - side * 0.3, z0, z1, height, 2.5)
        if rng.random() < stats.fence_prob:
            z0 = rng.uniform(0.0, length * 0.5)
            z1, height = z0 + rng.uniform(10.0, 40.0), rng.uniform(0.9, 1.3)
            objects += _strip(Part.FENCE, edge + side * 0.2, z0, z1, height, 2.0)
        for _ in range(rng.poisson(stats.poles_per_100m * length / 100.0)):
            X = edge + side * rng.uniform(0.4, 0.8)
            objects.append(_pole(rng, X, rng.uniform(5.0, length), side, stats.sign_prob))
    for side, z0, z1 in gaps:  # trees in the gaps between blocks
        if rng.random() < 0.5 and z1 > 2.0:
            X = street.outer_edge(side) + side * rng.uniform(1.0, 6.0)
            objects.append(_tree(rng, X, rng.uniform(max(z0, 2.0), max(z1, 2.5)), 1.5))
    for _ in range(rng.poisson(stats.persons)):
        side = -1 if rng.random() < 0.5 else 1
        edge, walk = street.road_edge(side), street.walk_width(side)
        X = edge + side * rng.uniform(0.4, max(walk - 0.4, 0.5))
        objects.append(_person(rng, X, rng.uniform(3.0, 45.0)))
    objects += _sample_cars(rng, street, stats)
    return objects


def sample_layout(rng: np.random.Generator, size: tuple[int, int],
                  stats: LayoutStats = SOURCE_LAYOUT) -> Layout:
    """Sample one street scene.

    Args:
        rng: the generator that decides everything (consumed in a fixed order).
        size: ``(W, H)`` in pixels.
        stats: the domain's layout statistics.
    Shape:
        the layout's maps are (H, W).
    Returns:
        the :class:`Layout`.
    """
    width, height = size
    if width < 8 or height < 8:
        raise ValueError(f"MiniCity image size must be at least 8x8, got {size}")
    draws = _Sampler(rng)
    camera = _sample_camera(draws, size, stats)
    street = _sample_street(draws, stats)
    canvas = _Canvas(camera)
    _draw_background(canvas, draws, street, stats)
    marks = _draw_ground(canvas, draws, street)
    gaps = _draw_buildings(canvas, draws, street, stats)
    objects = _sample_objects(draws, street, stats, gaps)
    # Far to near; ties keep their sampling order (a stable sort), so drawing is deterministic.
    for _, draw in sorted(objects, key=lambda o: -o[0]):
        draw(canvas)
    return canvas.to_layout(marks)
