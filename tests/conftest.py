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
