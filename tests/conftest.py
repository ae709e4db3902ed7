"""Shared fixtures: the golden reference values of the authors' implementation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_dir() -> Path:
    """Where the golden files are: $MAXSQ_GOLDEN_DIR, else ../shared/reference/golden/."""
    env = os.environ.get("MAXSQ_GOLDEN_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "reference" / "golden"


@pytest.fixture(scope="session")
def golden():
    """(scalars dict, arrays npz, key list) of the authors' implementation, or skip with the path."""
    d = golden_dir()
    files = [d / "golden_seed0.json", d / "golden_seed0.npz", d / "deeplabv2_r101_keys_c19.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"golden reference files not found: {missing} (set MAXSQ_GOLDEN_DIR)")
    scalars = json.loads(files[0].read_text())
    arrays = dict(np.load(files[1]))
    keys = json.loads(files[2].read_text())
    return scalars, arrays, keys


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """A smoke-profile MiniCity, generated once for the engine and weight-file tests."""
    from maxsq_prep.minicity import generate_minicity

    root = tmp_path_factory.mktemp("minicity") / "minicity-smoke"
    generate_minicity(root=root, profile="smoke", seed=0, progress=False, workers=1)
    return root


def smoke_cfg(root, runs, method=None, **over):
    """The smoke profile's config on ``root``'s MiniCity, runs under ``runs``, one thread."""
    from maxsq_lib import config as C

    overrides = {"runs_root": str(runs), "data": {"root": str(root)}, "threads": 1}
    C.deep_update(overrides, over)
    return C.resolve("smoke", "minicity", method, overrides)
