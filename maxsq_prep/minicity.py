"""MiniCity: the embedded two-domain street-scene benchmark, written in the real dataset layouts.

:func:`generate_minicity` writes, under a root folder (default ``datasets/``):

=================  ==================  ========================================================
folder             plays the role of   files
=================  ==================  ========================================================
``GTA5/``          source (MiniGTA)    ``images/00001.png`` RGB, ``labels/00001.png`` palette PNG
                                       whose indices are Cityscapes label ids, ``list/{train,
                                       val,all}.txt`` (lines ``1``, ``2``, ...)
``Cityscapes/``    target              ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit
                   (MiniCityscapes)    .png``, ``gtFine/<split>/<city>/..._gtFine_labelIds.png`` (8-bit
                                       label ids), ``list/{train,val}.txt`` (``train_<city>_<seq>_
                                       <frame>``)
``NTHU_Datasets/`` four cities         ``<City>/Images/{Train,Test}/<id>.png``, ``<City>/Labels/Test/
                                       <id>_eval.png``, ``<City>/list/{train,test}.txt`` (ids like
                                       ``pano_00002_0_180``)
=================  ==================  ========================================================

so that the real-dataset loaders of :mod:`maxsq_lib.data` read it unchanged. Every image is made from
its own seed ``(seed, domain, split, index)``: a layout (:mod:`maxsq_prep.minicity_scene`) decides the
labels, a style (:mod:`maxsq_prep.minicity_style`) decides the look. The source is rendered in the
source style; the target in the style at ``shift`` (0 = source look, 1 = full target look); the
cities in the target style at ``shift`` plus a city twist.

Each dataset folder gets a ``MANIFEST.json`` (generator version, seed, profile, shift, counts, a
content hash). A folder whose manifest is complete, whose parameters match and whose files are all
there is not rewritten. Interrupted runs leave an incomplete manifest and are redone.

Command line: ``python -m maxsq_prep.minicity --data-root datasets --profile cpu --seed 0``.
Introduced in notebook ``01_data``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from maxsq_lib.config import CITIES as REGISTRY_CITIES
from maxsq_lib.files import write_bytes_atomic
from maxsq_lib.labels import CITYSCAPES_LABELS

from .minicity_scene import (
    CITY_LAYOUTS,
    CLASS_LABEL_IDS,
    SOURCE_LAYOUT,
    TARGET_LAYOUT,
    UNLABELED_ID,
    Layout,
    LayoutStats,
    sample_layout,
)
from .minicity_style import Style, render, style_for

__all__ = [
    "CITIES",
    "DEFAULT_SHIFT",
    "EXPECTED_CLASS_BANDS",
    "GENERATOR_VERSION",
    "GTA5_LABEL_PALETTE",
    "MINICITY_LABEL_IDS",
    "PROFILES",
    "Profile",
    "UNLABELED_ID",
    "generate_minicity",
    "image_rngs",
    "layout_stats_for",
    "make_layout",
    "make_scene",
    "render_with_shift",
    "render_with_styles",
    "resolve_profile",
    "style_for_domain",
]

GENERATOR_VERSION = "2"
"""Bumped whenever the pixels a seed produces change; part of every manifest."""

DEFAULT_SHIFT = 0.5
"""Default target appearance shift (0 = source look, 1 = full target look).

At 0.5 (generator version 2, :data:`~maxsq_prep.minicity_style.TARGET_STYLE`), measured on one
cpu-profile source model (3,000 iterations, seed 0; source val 67.3 mIoU): source-only 34.3 on
MiniCityscapes val, 42.1 after AdaBN, so 25.3 points remain that BatchNorm cannot remove (the
rule: at least 10). Chance ≈ 10. :mod:`maxsq_prep.calibrate_shift` draws the curve over the shift.
"""

CITIES: tuple[str, ...] = REGISTRY_CITIES
"""The NTHU-layout cities, as the real benchmark names them."""

DOMAIN_CODES: dict[str, int] = {"source": 0, "target": 1, "Rome": 2, "Rio": 3, "Tokyo": 4, "Taipei": 5}
"""Domain -> integer that enters every image's seed."""

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}

TARGET_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("ashford", "brookvale", "corwen", "dunmore"),
    "val": ("elmsworth", "fairhaven"),
}
"""Made-up MiniCityscapes city folders per split (no underscores: list entries split on ``_``)."""

CITYSCAPES_FRAME = 19
"""Frame number in MiniCityscapes file names (the annotated frame of real Cityscapes sequences)."""

MANIFEST_NAME = "MANIFEST.json"

MINICITY_LABEL_IDS: tuple[int, ...] = tuple(sorted(CLASS_LABEL_IDS.values()))
"""The Cityscapes label ids MiniCity writes (plus :data:`UNLABELED_ID` if a pixel had no class)."""


@dataclass(frozen=True)
class Profile:
    """Image size and image counts of one MiniCity size.

    Args:
        name: profile name (recorded in the manifests).
        size: ``(W, H)`` in pixels.
        source_train, source_val: MiniGTA images.
        target_train, target_val: MiniCityscapes images.
        city_train, city_test: images per NTHU-layout city (train unlabelled, test labelled).
    """

    name: str
    size: tuple[int, int]
    source_train: int
    source_val: int
    target_train: int
    target_val: int
    city_train: int
    city_test: int

    def __post_init__(self) -> None:
        counts = (self.source_train, self.source_val, self.target_train, self.target_val,
                  self.city_train, self.city_test)
        if min(counts) < 1 or min(self.size) < 8:
            raise ValueError(f"profile {self.name!r}: every count must be >= 1 and the size >= 8x8")


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", (128, 64), 16, 4, 12, 4, 3, 4),
    "cpu": Profile("cpu", (128, 64), 2000, 200, 1000, 200, 300, 50),
    "gpu": Profile("gpu", (256, 128), 4000, 400, 2000, 500, 600, 100),
}
"""MiniCity sizes: ``smoke`` for tests (seconds), ``cpu`` the course default, ``gpu`` larger."""

EXPECTED_CLASS_BANDS: dict[str, dict[str, tuple[float, float]]] = {
    "source": {
        "road": (0.22, 0.44), "sidewalk": (0.05, 0.18), "building": (0.20, 0.40),
        "fence": (0.0003, 0.04), "pole": (0.006, 0.026), "traffic sign": (0.001, 0.011),
        "vegetation": (0.04, 0.17), "sky": (0.05, 0.14), "person": (0.003, 0.027),
        "car": (0.02, 0.12),
    },
    "target": {
        "road": (0.18, 0.40), "sidewalk": (0.045, 0.17), "building": (0.19, 0.41),
        "fence": (0.0003, 0.043), "pole": (0.007, 0.032), "traffic sign": (0.001, 0.013),
        "vegetation": (0.065, 0.23), "sky": (0.05, 0.14), "person": (0.003, 0.026),
        "car": (0.022, 0.13),
    },
    "cities": {
        "road": (0.14, 0.40), "sidewalk": (0.045, 0.19), "building": (0.21, 0.50),
        "fence": (0.0003, 0.05), "pole": (0.008, 0.035), "traffic sign": (0.002, 0.019),
        "vegetation": (0.045, 0.22), "sky": (0.025, 0.095), "person": (0.005, 0.036),
        "car": (0.025, 0.135),
    },
}
"""Allowed pixel fraction ``(min, max)`` of each class over any set of at least 16 images of a
domain ("cities" pools the four cities' labelled test images), at any seed. Measured: the 0.1% and
99.9% quantiles of 16-image sets from 500 layouts per domain, widened by about a quarter. Road,
building and sky are large, pole, traffic sign and person rare and thin, as in the real datasets."""

# Cityscapes label colours as the palette of the GTA5-style label PNGs (index = label id).
_GTA5_PALETTE = bytearray(256 * 3)
for _id, _name, _train, _color in CITYSCAPES_LABELS:
    _GTA5_PALETTE[3 * _id : 3 * _id + 3] = bytes(_color)
GTA5_LABEL_PALETTE: bytes = bytes(_GTA5_PALETTE)
"""768-byte PNG palette: entry ``i`` is the Cityscapes colour of label id ``i``."""


# --------------------------------------------------------------------------------------------
# One image


def layout_stats_for(domain: str) -> LayoutStats:
    """The layout statistics of a domain ("source", "target" or a city name)."""
    if domain == "source":
        return SOURCE_LAYOUT
    if domain == "target":
        return TARGET_LAYOUT
    if domain in CITY_LAYOUTS:
        return CITY_LAYOUTS[domain]
    raise ValueError(f"unknown MiniCity domain {domain!r}; expected one of {sorted(DOMAIN_CODES)}")


def style_for_domain(domain: str, shift: float) -> Style:
    """The look of a domain: source style for "source", else the style at ``shift`` (+ city twist)."""
    layout_stats_for(domain)  # validates the name
    if domain == "source":
        return style_for(0.0)
    return style_for(shift, None if domain == "target" else domain)


def image_rngs(seed: int, domain: str, split: str,
               index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two generators of one image: layout and rendering, from ``(seed, domain, split, index)``.

    The per-image seed makes the output independent of the number of worker processes; the two
    separate streams let the same layout be rendered in several styles.

    Returns:
        ``(layout_rng, render_rng)``.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}")
    root = np.random.SeedSequence([int(seed), DOMAIN_CODES[domain], SPLIT_CODES[split], int(index)])
    layout_seq, render_seq = root.spawn(2)
    return np.random.default_rng(layout_seq), np.random.default_rng(render_seq)


def make_layout(domain: str, split: str, index: int, *, seed: int = 0,
                size: tuple[int, int] = (128, 64)) -> Layout:
    """The layout of one MiniCity image (what :func:`generate_minicity` draws for it)."""
    layout_rng, _ = image_rngs(seed, domain, split, index)
    return sample_layout(layout_rng, size, layout_stats_for(domain))


def make_scene(domain: str, split: str, index: int, *, seed: int = 0, size: tuple[int, int] = (128, 64),
               shift: float = DEFAULT_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """One MiniCity image and its labels, exactly as :func:`generate_minicity` writes them.

    Args:
        domain: "source", "target" or a city of :data:`CITIES`.
        split: "train", "val" or "test".
        index: 0-based position within the split.
        seed: the dataset seed.
        size: ``(W, H)``.
        shift: target appearance shift (ignored for the source).
    Shape:
        image (H, W, 3); label (H, W).
    Returns:
        ``(image, label)``: RGB uint8 and Cityscapes label ids uint8.
    """
    layout_rng, render_rng = image_rngs(seed, domain, split, index)
    layout = sample_layout(layout_rng, size, layout_stats_for(domain))
    return render(layout, style_for_domain(domain, shift), render_rng), layout.label_map


def render_with_styles(styles: Sequence[Style], *, domain: str = "target", split: str = "train",
                       index: int = 0, seed: int = 0,
                       size: tuple[int, int] = (128, 64)) -> tuple[list[np.ndarray], np.ndarray]:
    """Render one MiniCity layout in several styles (for calibrating the target look).

    The layout and the render seed are those of :func:`make_scene`, so the style is the only
    difference between the images, and the label map is shared.

    Args:
        styles: the looks to render.
        domain, split, index, seed, size: which image (see :func:`make_scene`).
    Shape:
        each image (H, W, 3); label (H, W).
    Returns:
        ``(images, label)``: a list of RGB uint8 images, one per style, and the label ids.
    """
    layout = make_layout(domain, split, index, seed=seed, size=size)
    images = []
    for style in styles:
        _, render_rng = image_rngs(seed, domain, split, index)
        images.append(render(layout, style, render_rng))
    return images, layout.label_map


def render_with_shift(shifts: float | Sequence[float], *, domain: str = "target", split: str = "train",
                      index: int = 0, seed: int = 0,
                      size: tuple[int, int] = (128, 64)) -> tuple[list[np.ndarray], np.ndarray]:
    """Render one MiniCity layout at several shifts (:func:`render_with_styles` of
    :func:`~maxsq_prep.minicity_style.style_for` at each shift; a city adds its twist).

    Args:
        shifts: one shift or several, each in [0, 1].
        domain: "target" or a city.
        split, index, seed, size: which image (see :func:`make_scene`).
    Returns:
        ``(images, label)``: a list of RGB uint8 images, one per shift, and the label ids.
    """
    shift_list = [float(shifts)] if np.isscalar(shifts) else [float(s) for s in shifts]
    if domain == "source":
        raise ValueError("the source domain has no shift; use domain='target' or a city")
    city = None if domain == "target" else domain
    return render_with_styles([style_for(s, city) for s in shift_list], domain=domain, split=split,
                              index=index, seed=seed, size=size)


# --------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class _Job:
    """One image to write: which scene, and where (paths relative to the root)."""

    domain: str
    split: str
    index: int
    image_path: str
    label_path: str  # "" for unlabelled images
    label_mode: str  # "P" (GTA5 palette PNG) or "L"


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # No text chunks or timestamps: same pixels, same bytes. Level 1: several times faster than
    # the default for noisy images, files about 10% larger.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)


def _label_image(label: np.ndarray, mode: str) -> Image.Image:
    """An 8-bit label PNG: "L" (grey = label id) or "P" (index = label id, Cityscapes colours)."""
    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    if mode == "P":
        image.putpalette(GTA5_LABEL_PALETTE)  # turns the L image into P, keeping the values
    return image


def _run_jobs(root: str, jobs: Sequence[_Job], seed: int, size: tuple[int, int],
              shift: float) -> list[tuple[str, str, int]]:
    """Make and write a batch of images; returns ``(relative path, sha256, bytes)`` per file."""
    written = []
    for job in jobs:
        image, label = make_scene(job.domain, job.split, job.index, seed=seed, size=size, shift=shift)
        files = [(job.image_path, _png_bytes(Image.fromarray(image)))]
        if job.label_path:
            files.append((job.label_path, _png_bytes(_label_image(label, job.label_mode))))
        for rel, data in files:
            _write_atomic(Path(root) / rel, data)
            written.append((rel, hashlib.sha256(data).hexdigest(), len(data)))
    return written


@dataclass(frozen=True)
class _DatasetPlan:
    """Everything one dataset folder holds: images to render and list files."""

    name: str  # folder under the root
    owned: tuple[str, ...]  # sub-paths removed before regenerating
    jobs: tuple[_Job, ...]
    lists: dict[str, str]  # relative path -> text
    params: dict


def _cityscapes_base(split: str, k: int) -> tuple[str, str]:
    cities = TARGET_CITIES[split]
    city = cities[k % len(cities)]
    return city, f"{city}_{k // len(cities):06d}_{CITYSCAPES_FRAME:06d}"


def _nthu_id(split: str, k: int) -> str:
    heading = (0, 90, 180, 270)[k % 4]
    first = 2 if split == "train" else 90001
    return f"pano_{first + k:05d}_0_{heading}"


def _lines(items: Iterable[str]) -> str:
    return "".join(f"{item}\n" for item in items)


def _plan_source(p: Profile, seed: int) -> _DatasetPlan:
    jobs, ids = [], {"train": [], "val": []}
    next_id = 1
    for split, count in (("train", p.source_train), ("val", p.source_val)):
        for k in range(count):
            name = f"{next_id:05d}.png"
            jobs.append(_Job("source", split, k, f"GTA5/images/{name}", f"GTA5/labels/{name}", "P"))
            ids[split].append(str(next_id))
            next_id += 1
    lists = {
        "GTA5/list/train.txt": _lines(ids["train"]),
        "GTA5/list/val.txt": _lines(ids["val"]),
        "GTA5/list/all.txt": _lines(ids["train"] + ids["val"]),
    }
    params = {"profile": p.name, "size": list(p.size), "seed": seed, "shift": None,
              "counts": {"train": p.source_train, "val": p.source_val}}
    return _DatasetPlan("GTA5", ("images", "labels", "list"), tuple(jobs), lists, params)


def _plan_target(p: Profile, seed: int, shift: float) -> _DatasetPlan:
    jobs, entries = [], {"train": [], "val": []}
    for split, count in (("train", p.target_train), ("val", p.target_val)):
        for k in range(count):
            city, base = _cityscapes_base(split, k)
            jobs.append(_Job(
                "target", split, k,
                f"Cityscapes/leftImg8bit/{split}/{city}/{base}_leftImg8bit.png",
                f"Cityscapes/gtFine/{split}/{city}/{base}_gtFine_labelIds.png", "L",
            ))
            entries[split].append(f"{split}_{base}")
    lists = {f"Cityscapes/list/{s}.txt": _lines(e) for s, e in entries.items()}
    # val split in two, alternating: `dev` chooses (λ, iterations), `test` reports
    lists["Cityscapes/list/dev.txt"] = _lines(entries["val"][0::2])
    lists["Cityscapes/list/test.txt"] = _lines(entries["val"][1::2])
    params = {"profile": p.name, "size": list(p.size), "seed": seed, "shift": shift,
              "counts": {"train": p.target_train, "val": p.target_val}}
    return _DatasetPlan("Cityscapes", ("leftImg8bit", "gtFine", "list"), tuple(jobs), lists, params)


def _plan_cities(p: Profile, seed: int, shift: float) -> _DatasetPlan:
    jobs, lists = [], {}
    for city in CITIES:
        folder = f"NTHU_Datasets/{city}"
        train_ids = [_nthu_id("train", k) for k in range(p.city_train)]
        test_ids = [_nthu_id("test", k) for k in range(p.city_test)]
        jobs += [_Job(city, "train", k, f"{folder}/Images/Train/{i}.png", "", "")
                 for k, i in enumerate(train_ids)]
        jobs += [_Job(city, "test", k, f"{folder}/Images/Test/{i}.png",
                      f"{folder}/Labels/Test/{i}_eval.png", "L") for k, i in enumerate(test_ids)]
        lists[f"{folder}/list/train.txt"] = _lines(train_ids)
        lists[f"{folder}/list/test.txt"] = _lines(test_ids)
    params = {"profile": p.name, "size": list(p.size), "seed": seed, "shift": shift,
              "counts": {"train": p.city_train, "test": p.city_test}, "cities": list(CITIES)}
    return _DatasetPlan("NTHU_Datasets", CITIES, tuple(jobs), lists, params)


def _expected_files(plan: _DatasetPlan) -> list[str]:
    files = [j.image_path for j in plan.jobs] + [j.label_path for j in plan.jobs if j.label_path]
    return sorted(files + list(plan.lists))


def _content_hash(records: Iterable[tuple[str, str, int]]) -> str:
    digest = hashlib.sha256()
    for rel, sha, _ in sorted(records):
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # MiniCity writes its manifests atomically: an unreadable one is not ours
    return manifest if isinstance(manifest, dict) else None


def _manifest_header(plan: _DatasetPlan) -> dict:
    return {"generator": "minicity", "version": GENERATOR_VERSION, "dataset": plan.name, **plan.params}


def _check_existing(root: Path, plan: _DatasetPlan) -> tuple[str, str]:
    """Decide what to do with a dataset folder: ``("skip" | "generate" | "regenerate", reason)``.

    Raises:
        FileExistsError: the folder holds files that MiniCity did not write (a real dataset).
    """
    folder = root / plan.name
    if not folder.exists() or not any(folder.iterdir()):
        return "generate", "missing"
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("generator") != "minicity":
        raise FileExistsError(
            f"{folder} exists and has no MiniCity {MANIFEST_NAME}: it looks like a real {plan.name} "
            f"dataset, which MiniCity will not overwrite. Choose another data root for MiniCity."
        )
    if not manifest.get("complete", False):
        return "regenerate", "incomplete (an earlier run was interrupted)"
    header = _manifest_header(plan)
    changed = [k for k, v in header.items() if manifest.get(k) != v]
    if changed:
        return "regenerate", "different parameters: " + ", ".join(changed)
    total = 0
    for rel in _expected_files(plan):
        path = root / rel
        if not path.is_file():
            return "regenerate", f"missing file {rel}"
        total += path.stat().st_size
    if total != manifest.get("bytes"):
        return "regenerate", "file sizes differ from the manifest"
    return "skip", "complete, same parameters"


def _default_workers(n_jobs: int) -> int:
    if n_jobs < 200:
        return 1  # starting processes costs more than it saves
    return max(1, min(os.cpu_count() or 1, 8))


def _start_pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: safe when the caller already runs threads (torch, Jupyter), unlike fork.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _render_all(root: Path, plan: _DatasetPlan, seed: int, size: tuple[int, int], shift: float,
                pool: ProcessPoolExecutor | None, progress: bool) -> list[tuple[str, str, int]]:
    """Write every image of a plan, in this process or on ``pool``; returns the file records."""
    from tqdm.auto import tqdm

    records: list[tuple[str, str, int]] = []
    chunks = [plan.jobs[i : i + 25] for i in range(0, len(plan.jobs), 25)]
    with tqdm(total=len(plan.jobs), desc=f"MiniCity {plan.name}", unit="img", disable=not progress,
              leave=False) as bar:
        if pool is None:
            for chunk in chunks:
                records += _run_jobs(str(root), chunk, seed, size, shift)
                bar.update(len(chunk))
        else:
            futures = [pool.submit(_run_jobs, str(root), c, seed, size, shift) for c in chunks]
            for chunk, future in zip(chunks, futures):
                records += future.result()
                bar.update(len(chunk))
    return records


def _generate_dataset(root: Path, plan: _DatasetPlan, seed: int, size: tuple[int, int], shift: float,
                      pool: ProcessPoolExecutor | None, progress: bool) -> dict:
    folder = root / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    # Mark the folder as ours and incomplete before writing anything, and remove what an earlier
    # MiniCity run left, so that a stale image never survives a change of parameters.
    _write_atomic(folder / MANIFEST_NAME,
                  (json.dumps({**_manifest_header(plan), "complete": False}, indent=2) + "\n").encode())
    for sub in plan.owned:
        shutil.rmtree(folder / sub, ignore_errors=True)
    records = _render_all(root, plan, seed, size, shift, pool, progress)
    for rel, text in plan.lists.items():
        data = text.encode()
        _write_atomic(root / rel, data)
        records.append((rel, hashlib.sha256(data).hexdigest(), len(data)))
    manifest = {
        **_manifest_header(plan),
        "files": len(records),
        "bytes": sum(r[2] for r in records),
        "content_sha256": _content_hash(records),
        "complete": True,
    }
    _write_atomic(folder / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def resolve_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` from its name (see :data:`PROFILES`) or itself."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown MiniCity profile {profile!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[profile]


def generate_minicity(root: str | os.PathLike = "datasets", profile: str | Profile = "cpu", seed: int = 0,
                      shift: float | None = None, force: bool = False, progress: bool = True,
                      workers: int | None = None) -> dict:
    """Write MiniCity (source, target and four cities) under ``root`` in the real dataset layouts.

    A dataset folder whose manifest says it is complete, with the same parameters and all files
    present, is left alone (unless ``force``). Same seed, same bytes, whatever ``workers``.

    Args:
        root: data root; ``GTA5/``, ``Cityscapes/`` and ``NTHU_Datasets/`` are written inside.
        profile: "smoke", "cpu", "gpu" (see :data:`PROFILES`) or a :class:`Profile`.
        seed: decides every image.
        shift: target appearance shift in [0, 1]; None = :data:`DEFAULT_SHIFT`.
        force: regenerate even complete datasets.
        progress: show progress bars and say what was done.
        workers: processes; None = all cores for large sets, 1 for small ones.
    Returns:
        a summary: ``root``, ``profile``, ``seed``, ``shift``, ``size``, ``seconds``, ``skipped``
        (True when nothing was written) and per dataset ``path``, ``action`` ("generated",
        "regenerated", "skipped"), ``reason``, ``counts``, ``files``, ``content_sha256``, ``seconds``.
    Raises:
        FileExistsError: a dataset folder holds data MiniCity did not write.
    """
    started = time.perf_counter()
    p = resolve_profile(profile)
    shift = DEFAULT_SHIFT if shift is None else float(shift)
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must lie in [0, 1], got {shift}")
    seed = int(seed)
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    plans = [_plan_source(p, seed), _plan_target(p, seed, shift), _plan_cities(p, seed, shift)]
    decisions = [_check_existing(root_path, plan) for plan in plans]  # refuse before writing anything
    summary: dict = {"root": str(root_path), "profile": p.name, "seed": seed, "shift": shift,
                     "size": list(p.size), "datasets": {}}
    if force:
        decisions = [("regenerate", "forced") if a == "skip" else (a, r) for a, r in decisions]
    to_write = sum(len(plan.jobs) for plan, (a, _) in zip(plans, decisions) if a != "skip")
    n_workers = workers if workers is not None else _default_workers(to_write)
    # One pool for all datasets: starting worker processes costs about a second each time.
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(_start_pool(n_workers)) if n_workers > 1 and to_write else None
        for plan, (action, reason) in zip(plans, decisions):
            t0 = time.perf_counter()
            if action == "skip":
                manifest = _read_manifest(root_path / plan.name) or {}
            else:
                manifest = _generate_dataset(root_path, plan, seed, p.size, shift, pool, progress)
            entry = {
                "path": str(root_path / plan.name),
                "action": {"skip": "skipped", "generate": "generated", "regenerate": "regenerated"}[action],
                "reason": reason,
                "counts": plan.params["counts"],
                "files": manifest.get("files"),
                "content_sha256": manifest.get("content_sha256"),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            summary["datasets"][plan.name] = entry
            if progress:
                print(f"MiniCity {plan.name}: {entry['action']} ({reason}) in {entry['seconds']:.1f} s"
                      f" -> {entry['path']}")
    summary["skipped"] = all(d["action"] == "skipped" for d in summary["datasets"].values())
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m maxsq_prep.minicity [--data-root DIR] [--profile P] [--seed N] ...``."""
    parser = argparse.ArgumentParser(
        description="Generate the MiniCity benchmark in the real dataset layouts.")
    parser.add_argument("--data-root", default="datasets")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    summary = generate_minicity(args.data_root, args.profile, args.seed, args.shift, args.force,
                                progress=True, workers=args.workers)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
