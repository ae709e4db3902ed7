"""The project's install files agree with each other: the conda environment, pyproject and Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]


def test_conda_environment_installs_this_project_with_existing_extras():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    version = tuple(int(x) for x in python.split("=")[-1].split(".")[:2])
    minimum = tuple(int(x) for x in re.findall(r"\d+", project["requires-python"])[:2])
    assert version >= minimum, f"environment.yml asks for {python}, pyproject needs {project['requires-python']}"
    pip_block = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "pip" in deps
    (entry,) = [e for e in pip_block if e.startswith("-e .")]
    extras = set(re.fullmatch(r"-e \.\[(.*)\]", entry).group(1).split(","))
    assert extras == {"course", "dev"} <= set(project["optional-dependencies"])


def test_torch_pins_and_omp_policy_are_where_the_guide_says():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
    assert "export OMP_WAIT_POLICY := PASSIVE" in (REPO / "Makefile").read_text()
    assert "OMP_WAIT_POLICY=PASSIVE" in (REPO / ".ci" / "run").read_text()


def test_a_new_venv_on_a_full_disk_stops_with_one_line_before_pip(tmp_path):
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "venv", f"VENV={venv}", "VENV_MIN_FREE_MB=999999999"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert f"make: {venv} needs about 999999999 MB of free disk" in done.stdout
    assert not venv.exists(), "the check runs before the venv is created"
