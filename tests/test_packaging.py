"""The project's install files agree with each other: the conda environment, pyproject and Makefile."""

from __future__ import annotations

import os
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
    assert "-c constraints.txt" in pip_block
    (entry,) = [e for e in pip_block if e.startswith("-e .")]
    extras = set(re.fullmatch(r"-e \.\[(.*)\]", entry).group(1).split(","))
    assert extras == {"course", "dev"} <= set(project["optional-dependencies"])


def test_ranges_in_the_package_pins_in_the_course():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["torch>=2.13", "numpy>=1.24"]
    assert not any("==" in d for extra in project["optional-dependencies"].values() for d in extra)
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    # every package the extras name is pinned for the course
    named = {re.split(r"[<>=\[]", d)[0].lower() for extra in project["optional-dependencies"].values()
             for d in extra if not d.startswith("maxsq")} | {"torch", "numpy"}
    assert named == {p.lower() for p in pins}
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()


def test_omp_policy_is_set_by_the_entry_points():
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


@pytest.mark.slow
def test_the_package_installs_beside_another_torch_and_its_core_imports_alone(tmp_path):
    """A researcher's environment with torch 2.13 (the CPU wheel on this machine's disk): installing
    the package keeps that torch, and the core imports with no extra installed."""
    import shutil
    import subprocess
    import sys
    import venv

    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    venv.create(tmp_path / "env", with_pip=True)
    py = str(tmp_path / "env" / "bin" / "python")
    got = subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0"], capture_output=True, text=True,
                         env=env, timeout=600)
    if got.returncode != 0:
        pytest.skip(f"no torch 2.13.0 wheel to install here: {got.stderr.strip().splitlines()[-1:]}")
    src = tmp_path / "src"  # a copy: pip builds in the source tree
    for name in ("maxsq_lib", "maxsq_prep"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    done = subprocess.run([py, "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    code = ("import importlib.util, torch, maxsq_lib.losses, maxsq_lib.models, maxsq_lib.metrics\n"
            "logits = torch.randn(2, 19, 8, 8)\n"
            "print(torch.__version__, float(maxsq_lib.losses.max_square(logits)) < 0,\n"
            "      [m for m in ('omegaconf', 'PIL', 'matplotlib', 'cityscapesscripts', 'torchvision')\n"
            "       if importlib.util.find_spec(m)])")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.stdout.split(" ", 2) == ["2.13.0+cpu", "True", "[]\n"], out.stderr
    cli = subprocess.run([str(tmp_path / "env" / "bin" / "maxsq"), "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert cli.returncode == 1 and "pip install 'maxsq[engine]'" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
