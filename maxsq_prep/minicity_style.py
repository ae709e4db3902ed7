"""MiniCity appearance: styles and the renderer that turns a layout into an RGB image.

The source domain (MiniGTA) looks like a simple game: flat colours per class, some colour variation
between instances, light shading, almost no noise. The target domain (MiniCityscapes) looks like a
worn camera image of the same palette: surfaces carry strong low- and high-frequency texture
(lighting, dirt, grain), the image is blurred and carries sensor noise and per-image variation —
the factors a BatchNorm re-estimate cannot undo (see :data:`TARGET_STYLE`). One number, ``shift`` in [0, 1], moves every appearance factor linearly from the source
style (0) to the full target style (1): :func:`style_for`. The four NTHU-layout cities add a fixed
local twist (colour cast, haze, contrast, ...) on top of the target style: theirs is a colour shift.

:func:`render` draws all of its random numbers in a fixed order whatever the style, so one layout
rendered with one seed at several shifts differs only by the style: labels never change, and the
images move away from the source rendering as the shift grows.

Introduced in notebook ``01_data``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, fields, replace

import numpy as np

from .minicity_scene import Layout, Part

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Style:
    """Appearance factors of a domain; every field interpolates linearly between two styles.

    Args:
        hue_deg: rotation of the palette's hue (degrees, in YIQ colour space).
        saturation: palette saturation multiplier.
        value: palette brightness multiplier (< 1 darkens).
        instance_jitter: std of the per-instance colour variation (relative).
        shading: strength of the directional and vertical shading.
        low_freq: amplitude of the smooth multiplicative texture (lighting, dirt).
        high_freq: amplitude of the per-pixel surface texture.
        blur: Gaussian blur sigma in pixels for a 128-pixel-wide image (scaled with the width).
        brightness, contrast, gamma: global tone curve.
        cast: per-channel gain offsets (R, G, B), a colour cast.
        noise: sensor noise std (intensity in [0, 1]).
        per_image: std of the per-image variation of brightness, contrast, gamma and cast.
        haze: strength of distance haze towards ``haze_color``.
        haze_color: RGB colour of the haze.
    """

    hue_deg: float = 0.0
    saturation: float = 1.0
    value: float = 1.0
    instance_jitter: float = 0.06
    shading: float = 0.12
    low_freq: float = 0.0
    high_freq: float = 0.0
    blur: float = 0.0
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    cast: RGB = (0.0, 0.0, 0.0)
    noise: float = 0.004
    per_image: float = 0.02
    haze: float = 0.0
    haze_color: RGB = (0.78, 0.80, 0.82)

    def lerp(self, other: Style, t: float) -> Style:
        """The style a fraction ``t`` of the way from ``self`` to ``other``.

        Args:
            other: the style reached at ``t = 1``.
            t: interpolation weight (0 gives ``self``).
        Returns:
            the interpolated :class:`Style`.
        """
        values = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, tuple):
                values[f.name] = tuple(float(x + t * (y - x)) for x, y in zip(a, b))
            else:
                values[f.name] = float(a + t * (b - a))
        return Style(**values)


SOURCE_STYLE = Style()
"""The source look (MiniGTA): flat colours, light shading, almost no noise."""

TARGET_STYLE = Style(
    instance_jitter=0.10,
    shading=0.22,
    low_freq=0.70,
    high_freq=0.60,
    blur=2.8,
    noise=0.116,
    per_image=0.08,
)
"""The full-strength target look (MiniCityscapes, ``shift = 1``): the source's palette and tone,
strong surface texture, blur and sensor noise.

Why no colour shift: a palette rotation, a colour cast or a tone curve changes per-channel
statistics, which BatchNorm re-estimated on target images (the ``adabn`` control) removes. The
first MiniCity target (generator version 1: hue +28°, saturation 0.45, value 0.78, cast, contrast
0.72, gamma 1.25 at full strength, with weaker texture) left only 7.1 mIoU points of the gap after
AdaBN, too little for a target loss to act on. Rule, stated before measuring the losses: keep the
factors BatchNorm cannot undo (texture, blur, noise) and leave at least 10 points after AdaBN.
Measured on one cpu source model (source val 67.3) at ``shift`` 0.5, gap after AdaBN: version 1
7.1; source tone 4.2; + low_freq 0.35 19.2; + high_freq 0.30 9.2; + blur 1.4 6.9; + noise 0.06
5.2; + all four 25.3 (this look); version 1's tone + all four 30.2.
"""

COLOUR_TARGET_STYLE = Style(
    hue_deg=28.0, saturation=0.45, value=0.78, instance_jitter=0.10, shading=0.22, low_freq=0.22,
    high_freq=0.16, blur=0.9, brightness=0.92, contrast=0.72, gamma=1.25, cast=(0.04, 0.07, -0.06),
    noise=0.035, per_image=0.08,
)
"""Generator version 1's target look (a colour and tone shift, weak texture), for comparison:
``render(layout, SOURCE_STYLE.lerp(COLOUR_TARGET_STYLE, shift), rng)``."""


@dataclass(frozen=True)
class CityTwist:
    """A city's change of the target look, applied after the shift interpolation.

    Args:
        hue_deg: extra hue rotation (degrees).
        saturation, brightness, contrast, gamma: multipliers.
        cast: added to the colour cast.
        haze: distance haze strength.
        haze_color: RGB of the haze.
    """

    hue_deg: float = 0.0
    saturation: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    cast: RGB = (0.0, 0.0, 0.0)
    haze: float = 0.0
    haze_color: RGB = (0.78, 0.80, 0.82)

    def apply(self, style: Style) -> Style:
        """The style with this twist applied."""
        return replace(
            style,
            hue_deg=style.hue_deg + self.hue_deg,
            saturation=style.saturation * self.saturation,
            brightness=style.brightness * self.brightness,
            contrast=style.contrast * self.contrast,
            gamma=style.gamma * self.gamma,
            cast=tuple(a + b for a, b in zip(style.cast, self.cast)),
            haze=style.haze + self.haze,
            haze_color=self.haze_color,
        )


CITY_TWISTS: dict[str, CityTwist] = {
    "Rome": CityTwist(hue_deg=-14.0, saturation=1.35, brightness=1.12, cast=(0.10, 0.03, -0.10),
                      haze=0.10, haze_color=(0.92, 0.84, 0.68)),
    "Rio": CityTwist(hue_deg=10.0, saturation=1.5, contrast=1.15, cast=(-0.04, 0.06, 0.02),
                     haze=0.22, haze_color=(0.86, 0.90, 0.92)),
    "Tokyo": CityTwist(hue_deg=22.0, saturation=0.8, contrast=1.2, gamma=0.9,
                       cast=(-0.08, -0.01, 0.12)),
    "Taipei": CityTwist(saturation=0.75, brightness=0.92, contrast=0.8, gamma=1.1,
                        cast=(0.0, 0.05, 0.0), haze=0.35, haze_color=(0.70, 0.72, 0.70)),
}
"""Appearance twist of each NTHU-layout city on top of the target look."""


def style_for(shift: float, city: str | None = None) -> Style:
    """The style at a given domain shift, optionally with a city's twist.

    Args:
        shift: 0 = source look, 1 = full target look (values in between interpolate every factor).
        city: one of :data:`CITY_TWISTS` or None.
    Returns:
        the :class:`Style`.
    """
    if not 0.0 <= float(shift) <= 1.0:
        raise ValueError(f"shift must lie in [0, 1], got {shift}")
    style = SOURCE_STYLE.lerp(TARGET_STYLE, float(shift))
    if city is not None:
        if city not in CITY_TWISTS:
            raise ValueError(f"unknown city {city!r}; expected one of {sorted(CITY_TWISTS)}")
        style = CITY_TWISTS[city].apply(style)
    return style


# --------------------------------------------------------------------------------------------
# Palette (source colours, RGB in [0, 1]); each instance picks one entry of its part's list.

PART_COLORS: dict[Part, tuple[RGB, ...]] = {
    Part.SKY: ((0.42, 0.62, 0.92), (0.50, 0.68, 0.94), (0.58, 0.72, 0.90)),
    Part.ROAD: ((0.34, 0.33, 0.36), (0.38, 0.37, 0.39), (0.30, 0.31, 0.34)),
    Part.SIDEWALK: ((0.64, 0.60, 0.55), (0.70, 0.68, 0.63), (0.58, 0.55, 0.56)),
    Part.FACADE: ((0.80, 0.71, 0.56), (0.64, 0.38, 0.29), (0.62, 0.62, 0.64), (0.86, 0.84, 0.78),
                  (0.77, 0.59, 0.40), (0.55, 0.50, 0.46)),
    Part.BUILDING_END: ((0.70, 0.62, 0.50), (0.56, 0.35, 0.28), (0.55, 0.55, 0.58)),
    Part.SKYLINE: ((0.58, 0.60, 0.67), (0.66, 0.64, 0.62), (0.52, 0.55, 0.62)),
    Part.TREE: ((0.24, 0.45, 0.14), (0.19, 0.38, 0.12), (0.32, 0.49, 0.17)),
    Part.TRUNK: ((0.36, 0.27, 0.18), (0.30, 0.24, 0.18)),
    Part.HEDGE: ((0.21, 0.40, 0.15), (0.26, 0.44, 0.16)),
    Part.TREELINE: ((0.27, 0.42, 0.24), (0.23, 0.38, 0.22)),
    Part.LAWN: ((0.36, 0.53, 0.20), (0.30, 0.48, 0.18)),
    Part.FENCE: ((0.56, 0.50, 0.40), (0.42, 0.45, 0.48), (0.30, 0.42, 0.32)),
    Part.POLE: ((0.46, 0.46, 0.48), (0.38, 0.40, 0.42), (0.52, 0.50, 0.46)),
    Part.SIGN: ((0.10, 0.30, 0.78), (0.82, 0.12, 0.10), (0.96, 0.80, 0.10), (0.93, 0.93, 0.93)),
    Part.PERSON_TOP: ((0.75, 0.15, 0.15), (0.15, 0.30, 0.65), (0.86, 0.86, 0.80), (0.20, 0.20, 0.22),
                      (0.30, 0.55, 0.30), (0.86, 0.60, 0.15)),
    Part.PERSON_LEGS: ((0.15, 0.18, 0.32), (0.12, 0.12, 0.12), (0.40, 0.38, 0.35)),
    Part.PERSON_SKIN: ((0.88, 0.68, 0.55), (0.64, 0.46, 0.33), (0.42, 0.29, 0.21)),
    Part.CAR_BODY: ((0.72, 0.08, 0.08), (0.12, 0.22, 0.56), (0.90, 0.90, 0.90), (0.10, 0.10, 0.11),
                    (0.66, 0.67, 0.69), (0.15, 0.36, 0.21), (0.86, 0.70, 0.15)),
    Part.CAR_GLASS: ((0.12, 0.15, 0.20), (0.18, 0.21, 0.26)),
    Part.CAR_DARK: ((0.06, 0.06, 0.06),),
    Part.CAR_LIGHT: ((0.86, 0.10, 0.08), (0.95, 0.45, 0.10)),
}
"""Source colours per part; each instance picks one and jitters it."""

MARK_COLOR: RGB = (0.92, 0.92, 0.88)
KERB_COLOR: RGB = (0.80, 0.79, 0.76)
GLASS_COLOR: RGB = (0.20, 0.25, 0.33)
LIT_COLOR: RGB = (0.95, 0.86, 0.56)
SKY_HORIZON_COLOR: RGB = (0.86, 0.89, 0.93)

# How strongly the high-frequency texture shows on each part (asphalt grain, foliage, ...).
_TEXTURE_WEIGHT = np.zeros(len(Part), dtype=np.float32)
for _part, _w in {
    Part.SKY: 0.15, Part.ROAD: 1.0, Part.SIDEWALK: 0.8, Part.FACADE: 0.7, Part.BUILDING_END: 0.7,
    Part.SKYLINE: 0.4, Part.TREE: 1.8, Part.TRUNK: 0.8, Part.HEDGE: 1.6, Part.TREELINE: 1.2,
    Part.LAWN: 1.4, Part.FENCE: 0.6, Part.POLE: 0.4, Part.SIGN: 0.3, Part.PERSON_TOP: 0.5,
    Part.PERSON_LEGS: 0.5, Part.PERSON_SKIN: 0.3, Part.CAR_BODY: 0.3, Part.CAR_GLASS: 0.3,
    Part.CAR_DARK: 0.3, Part.CAR_LIGHT: 0.2,
}.items():
    _TEXTURE_WEIGHT[_part] = _w

_LIT_WINDOW_PER_1024 = 70


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _palette_matrix(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    """3x3 matrix acting on RGB rows: hue rotation and saturation scaling in YIQ, then darkening.

    Returns:
        (3, 3) float32 ``M`` such that ``rgb @ M.T`` is the transformed colour.
    """
    a = math.radians(hue_deg)
    c, s = saturation * math.cos(a), saturation * math.sin(a)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return (value * _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).astype(np.float32)


def _band_coverage(t: np.ndarray, dt: np.ndarray, period: np.ndarray, duty: np.ndarray) -> np.ndarray:
    """Fraction of ``[t - dt/2, t + dt/2]`` covered by bands of width ``duty*period`` repeating
    every ``period`` (a box-filtered stripe pattern, so far windows and dashes fade instead of
    flickering)."""
    width = duty * period

    def cumulative(s: np.ndarray) -> np.ndarray:
        whole = np.floor(s / period)  # np.mod is several times slower than this
        return whole * width + np.minimum(s - whole * period, width)

    dt = np.maximum(dt, 1e-4)
    return (cumulative(t + dt / 2) - cumulative(t - dt / 2)) / dt


def _interval_coverage(t: np.ndarray, dt: np.ndarray, lo, hi) -> np.ndarray:
    """Fraction of ``[t - dt/2, t + dt/2]`` inside ``[lo, hi]``."""
    dt = np.maximum(dt, 1e-4)
    return np.clip(np.minimum(t + dt / 2, hi) - np.maximum(t - dt / 2, lo), 0.0, None) / dt


def _window_alpha(layout: Layout, lit_salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel window coverage on facades and the skyline, and which windows are lit.

    Returns:
        ``(alpha, lit)``: (H, W) float32 coverage in [0, 1] and (H, W) bool.
    """
    cam = layout.camera
    inst = layout.instance_map
    part = layout.parts[inst]
    alpha = np.zeros(inst.shape, np.float32)
    lit = np.zeros(inst.shape, bool)
    ys, xs = np.nonzero((part == Part.FACADE) | (part == Part.SKYLINE))
    if ys.size == 0:
        return alpha, lit
    k = inst[ys, xs]
    g = layout.geom[k].astype(np.float64)
    dx = xs - cam.vanish_x
    dy = ys - cam.horizon
    facade = layout.parts[k] == Part.FACADE
    # Facades lie in planes X = const: depth from the column; skyline in planes Z = const.
    plane = g[:, 0]
    safe_dx = np.where(np.abs(dx) < 0.05, 0.05, dx)
    depth = np.where(facade, np.abs(cam.focal * plane / safe_dx), plane)
    u = np.where(facade, depth - g[:, 1], dx * depth / cam.focal - g[:, 1])
    du = np.where(facade, depth**2 / (cam.focal * np.maximum(np.abs(plane), 0.1)), depth / cam.focal)
    v = cam.height_m - dy * depth / cam.focal
    dv = depth / cam.focal
    sx, sy, wx, wy = g[:, 4], g[:, 5], g[:, 6], g[:, 7]
    # Shift the bands so that windows sit in the middle of each bay and floor.
    u0 = u + (1 - wx) * sx / 2
    v0 = v - 0.6 + (1 - wy) * sy / 2
    grid = _band_coverage(u0, du, sx, wx) * _band_coverage(v0, dv, sy, wy)
    # no windows on the ground floor, under the roof or at the ends of a block
    inside = (_interval_coverage(v, dv, 2.6, g[:, 3] - 0.8)
              * _interval_coverage(u, du, 0.4, g[:, 2] - g[:, 1] - 0.4))
    a = grid * inside
    alpha[ys, xs] = a
    bay = np.floor(u0 / sx).astype(np.int64)
    floor = np.floor(v0 / sy).astype(np.int64)
    h = (bay * 73856093) ^ (floor * 19349663) ^ (k.astype(np.int64) * 83492791) ^ lit_salt
    lit[ys, xs] = (h & 1023) < _LIT_WINDOW_PER_1024
    return alpha, lit


def _ground_marks(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel coverage of painted lines: lane marks on the road and kerb stones on sidewalks.

    Returns:
        ``(lane_alpha, kerb_alpha)``, each (H, W) float32 in [0, 1].
    """
    cam = layout.camera
    part = layout.part_map
    lane = np.zeros(part.shape, np.float32)
    kerb = np.zeros(part.shape, np.float32)
    for target, out in ((Part.ROAD, lane), (Part.SIDEWALK, kerb)):
        marks = layout.marks[layout.marks[:, 4] == target]
        if marks.size == 0:
            continue
        ys, xs = np.nonzero((part == target) & (np.arange(part.shape[0])[:, None] > cam.horizon + 0.3))
        below = ys - cam.horizon
        depth = cam.focal * cam.height_m / below
        X = (xs - cam.vanish_x) * depth / cam.focal
        dX = depth / cam.focal
        dZ = depth**2 / (cam.focal * cam.height_m)
        best = np.zeros(ys.shape, np.float64)
        for xc, width, period, dash, _ in marks.astype(np.float64):
            cover = _interval_coverage(X, dX, xc - width / 2, xc + width / 2)
            if period > 0:
                on = np.flatnonzero(cover)  # dashes only matter where the line is
                cover[on] *= _band_coverage(depth[on], dZ[on], period, dash / period)
            np.maximum(best, cover, out=best)
        out[ys, xs] = best
    return lane, kerb


def _fence_alpha(layout: Layout) -> np.ndarray:
    """(H, W) float32 coverage of fence slats (the rest of a fence is darker gaps)."""
    cam = layout.camera
    inst = layout.instance_map
    alpha = np.zeros(inst.shape, np.float32)
    ys, xs = np.nonzero(layout.parts[inst] == Part.FENCE)
    if ys.size == 0:
        return alpha
    k = inst[ys, xs]
    plane = layout.geom[k, 0].astype(np.float64)
    dx = xs - cam.vanish_x
    depth = np.abs(cam.focal * plane / np.where(np.abs(dx) < 0.05, 0.05, dx))
    du = depth**2 / (cam.focal * np.maximum(np.abs(plane), 0.1))
    v = cam.height_m - (ys - cam.horizon) * depth / cam.focal
    slats = _band_coverage(depth, du, np.full_like(depth, 0.3), np.full_like(depth, 0.45))
    rail = _interval_coverage(v, depth / cam.focal, layout.geom[k, 3] - 0.12, 10.0)
    alpha[ys, xs] = np.clip(slats + rail, 0.0, 1.0)
    return alpha


@dataclass(frozen=True)
class _Draws:
    """All random numbers of one rendering, drawn in a fixed order whatever the style."""

    choice: np.ndarray  # (N,) uniform: palette entry per instance
    tone: np.ndarray  # (N,) normal: brightness jitter per instance
    chroma: np.ndarray  # (N, 3) normal: colour jitter per instance
    sun: float  # +-1: which side of the street is lit
    tone_curve: np.ndarray  # (7,) normal: brightness, contrast, gamma, cast (3), spare
    low_freq: np.ndarray  # (H/8 + 3, W/8 + 3, 2) normal: smooth texture (luminance, chroma)
    high_freq: np.ndarray  # (H, W) normal: surface texture
    sensor: np.ndarray  # (3, H, W) normal: sensor noise
    lit_salt: int


_LOW_FREQ_CELL = 8  # pixels per cell of the smooth texture's coarse grid


def _draw_randoms(rng: np.random.Generator, n: int, height: int, width: int) -> _Draws:
    f32 = np.float32
    coarse = (height // _LOW_FREQ_CELL + 3, width // _LOW_FREQ_CELL + 3, 2)
    return _Draws(
        choice=rng.random(n),
        tone=rng.standard_normal(n, dtype=f32),
        chroma=rng.standard_normal((n, 3), dtype=f32),
        sun=1.0 if rng.random() < 0.5 else -1.0,
        tone_curve=rng.standard_normal(7),
        low_freq=rng.standard_normal(coarse, dtype=f32),
        high_freq=rng.standard_normal((height, width), dtype=f32),
        sensor=rng.standard_normal((3, height, width), dtype=f32),
        lit_salt=int(rng.integers(0, 2**30)),
    )


def _palette_table() -> tuple[np.ndarray, np.ndarray]:
    """:data:`PART_COLORS` as arrays: (num_parts, max_choices, 3) colours and (num_parts,) counts."""
    most = max(len(c) for c in PART_COLORS.values())
    table = np.zeros((len(Part), most, 3), np.float32)
    counts = np.zeros(len(Part), np.int64)
    for p, choices in PART_COLORS.items():
        table[p, : len(choices)] = choices
        counts[p] = len(choices)
    return table, counts


_PALETTE_TABLE, _PALETTE_COUNTS = _palette_table()


def _instance_colors(layout: Layout, draws: _Draws, jitter: float) -> np.ndarray:
    """(N, 3) float32 source colours: a palette entry per instance, jittered."""
    parts = layout.parts.astype(np.int64)
    pick = (draws.choice * _PALETTE_COUNTS[parts]).astype(np.int64)
    colors = _PALETTE_TABLE[parts, pick]
    colors = colors * (1.0 + jitter * draws.tone)[:, None]
    colors = colors + 0.5 * jitter * draws.chroma * colors.mean(axis=1, keepdims=True)
    return np.clip(colors, 0.0, 1.0)


@lru_cache(maxsize=16)
def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix that enlarges a coarse noise axis smoothly: output pixel ``i``
    is a Gaussian-weighted mean (sigma = one cell) of the coarse cells around its position
    (one cell per ``_LOW_FREQ_CELL`` pixels, starting one cell in)."""
    pos = np.linspace(1.0, 1.0 + n_out / _LOW_FREQ_CELL, n_out)[:, None]
    weights = np.exp(-0.5 * (pos - np.arange(n_in)[None, :]) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """A cloudy texture: coarse noise enlarged with Gaussian weights, rescaled to unit std.

    Shape:
        coarse (h, w) -> (height, width) float32.
    """
    field = _upsample_matrix(height, coarse.shape[0]) @ coarse @ _upsample_matrix(width, coarse.shape[1]).T
    return field / max(float(field.std()), 1e-6)


@lru_cache(maxsize=32)
def _gauss_weights(sigma: float) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights for offsets ``-r..r``, ``r = ceil(2 sigma)``."""
    radius = max(1, int(math.ceil(2.0 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return tuple(float(w) for w in weights / weights.sum())


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the last two axes, edges replicated.

    Shifted sums of slices: at these sizes several times faster than
    ``scipy.ndimage.gaussian_filter``, and free of BLAS threads (worker processes stay single-threaded).

    Shape:
        (..., H, W) -> same.
    """
    if sigma <= 0.0:
        return image
    weights = _gauss_weights(round(float(sigma), 4))
    radius = len(weights) // 2
    for axis in (-2, -1):
        n = image.shape[axis]
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        out = np.zeros_like(image)
        for k, w in enumerate(weights):
            index = [slice(None)] * image.ndim
            index[axis] = slice(k, k + n)
            out += np.float32(w) * padded[tuple(index)]
        image = out
    return image


def _apply_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """``image ** gamma`` for values in [0, 1], through a 4096-entry table (pow is slow)."""
    if gamma == 1.0:
        return image
    table = np.linspace(0.0, 1.0, 4096, dtype=np.float32) ** np.float32(gamma)
    return table[(image * 4095.0 + 0.5).astype(np.int32)]


def render(layout: Layout, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Render a layout in a style.

    Args:
        layout: the scene (decides the labels).
        style: the appearance (see :func:`style_for`).
        rng: decides colours picked, jitters, textures and noise; the same seed gives the same
            random numbers for every style.
    Shape:
        returns (H, W, 3).
    Returns:
        RGB uint8 image.
    """
    cam = layout.camera
    height, width = cam.height, cam.width
    draws = _draw_randoms(rng, len(layout.parts), height, width)
    inst = layout.instance_map
    part = layout.parts[inst]
    ys = np.arange(height, dtype=np.float32)[:, None]
    palette = _palette_matrix(style.hue_deg, style.saturation, style.value)

    def recolor(rgb) -> np.ndarray:
        """Palette transform; a single colour comes back as (3, 1, 1) to broadcast on images."""
        out = np.clip(np.asarray(rgb, np.float32) @ palette.T, 0.0, 1.0)
        return out if out.ndim == 2 else out[:, None, None]

    def blend(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return image + (rgb - image) * alpha

    # Images are channel-first (3, H, W) here: broadcasting over a trailing axis of 3 is slow.
    colors = recolor(_instance_colors(layout, draws, style.instance_jitter))
    image = np.ascontiguousarray(colors.T)[:, inst]

    # Sky brightens towards the horizon.
    rows = min(int(cam.horizon) + 1, height)  # the sky ends at the horizon
    towards_horizon = (ys[:rows] / max(cam.horizon, 1.0)) ** 2
    image[:, :rows] = blend(image[:, :rows], recolor(SKY_HORIZON_COLOR),
                            0.6 * towards_horizon * (part[:rows] == Part.SKY))

    # Painted details: windows, lane marks, kerbs, fence slats (appearance only).
    windows, lit = _window_alpha(layout, draws.lit_salt)
    image = blend(image, np.where(lit, recolor(LIT_COLOR), recolor(GLASS_COLOR)), windows)
    lane, kerb = _ground_marks(layout)
    image = blend(image, recolor(MARK_COLOR), lane)
    image = blend(image, recolor(KERB_COLOR), kerb)
    slats = _fence_alpha(layout)

    # Shading: the sun lights one side of the street; surfaces darken towards the bottom.
    side = np.sign(layout.geom[inst, 0])
    facing = np.where(part == Part.FACADE, -side * draws.sun, 0.0)
    facing = np.where(part == Part.BUILDING_END, -0.6, facing)
    vertical = np.where(part == Part.SKY, 0.0, (0.5 - ys / height) * 0.8)
    gain = 1.0 + style.shading * (facing + vertical)
    gain = gain * np.where(part == Part.FENCE, 0.55 + 0.45 * slats, 1.0)  # gaps between slats

    # Low-frequency texture (smooth brightness and colour variation) and high-frequency texture
    # (strongest on foliage and asphalt).
    # (Skipped when off: the random numbers were drawn above either way.)
    if style.low_freq > 0:
        lum = _smooth_field(draws.low_freq[..., 0], height, width)
        gain = gain * (1.0 + style.low_freq * lum)
    if style.high_freq > 0:
        grain = _blur(draws.high_freq, 0.6) * 1.8
        gain = gain * (1.0 + style.high_freq * _TEXTURE_WEIGHT[part] * grain)
    image = image * gain
    if style.low_freq > 0:
        chroma = _smooth_field(draws.low_freq[..., 1], height, width)
        red_vs_rest = np.array([1.0, -0.5, -0.5], np.float32)[:, None, None]
        image = image * (1.0 + 0.2 * style.low_freq * chroma * red_vs_rest)

    if style.haze > 0:
        depth = layout.depth_map()
        image = blend(image, np.asarray(style.haze_color, np.float32)[:, None, None],
                      style.haze * (1.0 - np.exp(-depth / 60.0)))

    image = _blur(image, style.blur * width / 128.0)

    # Tone curve with per-image variation, colour cast, sensor noise.
    t = [float(v) * style.per_image for v in draws.tone_curve]
    brightness = style.brightness * math.exp(t[0])
    contrast = style.contrast * math.exp(t[1])
    gamma = style.gamma * math.exp(0.5 * t[2])
    cast = 1.0 + np.asarray(style.cast, np.float32) + 0.5 * np.asarray(t[3:6], np.float32)
    image = np.clip(image, 0.0, 1.0)
    image = np.clip(((image - 0.5) * contrast + 0.5) * brightness, 0.0, 1.0)
    image = _apply_gamma(image, gamma)
    image = image * cast[:, None, None] + style.noise * draws.sensor
    return np.ascontiguousarray(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0))
