"""Every course notebook, executed end to end in the smoke profile through nbval (lax mode).

The smoke data and every run the notebooks read are made first in a temporary folder (in-process,
seconds each); then each notebook gets the smoke parameters injected by papermill
(``prepare_only``) and runs under ``pytest --nbval-lax``, which fails on any cell error. Also
checks that the stored notebooks carry no outputs and keep their ``parameters`` cell.
"""

from __future__ import annotations

from dataclasses import replace

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["00_setup", "01_data", "02_source_pretraining", "03_gradient_analysis",
            "04_adaptation", "05_evaluation", "06_cross_city", "07_explorer", "08_lab",
            "09_appendix_paper_scale"]
SMOKE_VARIANTS = {"04_adaptation": {"method": "maxsquare_iw_multi"}, "06_cross_city": {"city": "Rome"}}


def test_the_course_has_every_notebook():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} is stored with outputs"
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters'"
    first = "".join(code[0]["source"])
    assert "OMP_WAIT_POLICY" in first, f"{path.name}: the first code cell must set OMP_WAIT_POLICY"
    solutions = [c for c in code if "solution" in c.get("metadata", {}).get("tags", [])]
    assert solutions, f"{path.name}: the exercises have no solution cells"
    assert all(c["metadata"].get("jupyter", {}).get("source_hidden") for c in solutions), \
        f"{path.name}: a solution cell is not collapsed in JupyterLab (metadata jupyter.source_hidden)"
    params = "".join(code[tagged[0]]["source"])
    for name in ("profile", "runs_root", "data_root", "seed", "device"):
        assert f"{name} =" in params, f"{path.name}: parameter {name} missing"


@pytest.fixture(scope="module")
def smoke_course(tmp_path_factory):
    """Smoke data and every run of the course, trained in-process."""
    from maxsq_prep.minicity import generate_minicity
    from maxsq_lib.cli import main as maxsq
    from maxsq_lib.config import save
    from maxsq_lib.course.runner import plan_course_jobs

    base = tmp_path_factory.mktemp("course")
    data, runs = base / "minicity-smoke", base / "runs"
    generate_minicity(root=data, profile="smoke", seed=0, progress=False, workers=1)
    for job in plan_course_jobs("smoke", str(runs), str(data), [0]):
        spec = save(replace(job.config, threads=1), job.run_dir / "job.yaml")
        assert maxsq(["run", "--config", str(spec), "--stage", job.stage, "--no-progress"]) == 0, job.name
    return base, data, runs


@pytest.mark.slow
def test_notebooks_run_in_the_smoke_profile(smoke_course):
    import papermill as pm

    base, data, runs = smoke_course
    prepared = base / "notebooks"
    prepared.mkdir()
    for path in NOTEBOOKS:
        params = {"profile": "smoke", "runs_root": str(runs), "data_root": str(data), "seed": 0,
                  "seeds": [0], **SMOKE_VARIANTS.get(path.stem, {})}
        pm.execute_notebook(str(path), str(prepared / path.name), parameters=params,
                            prepare_only=True, kernel_name="python3", progress_bar=False)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(prepared), "--nbval-cell-timeout", "300", str(prepared)],
                         capture_output=True, text=True, cwd=str(prepared), env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_course_runner_executes_notebooks_in_parallel_and_names_a_failure(tmp_path):
    import nbformat

    from maxsq_lib.course.runner import NotebookFailed, NotebookRun, execute_notebooks

    folder = tmp_path / "notebooks"
    folder.mkdir()
    cells = {"a": ["x = 1", "open('a.txt', 'w').write(str(x + offset))"],
             "b": ["open('b.txt', 'w').write(str(offset))"],
             "c": ["y = 2", "raise ValueError('broken on purpose')"]}
    for name, sources in cells.items():
        params = nbformat.v4.new_code_cell("offset = 0")
        params.metadata["tags"] = ["parameters"]
        nb = nbformat.v4.new_notebook(cells=[params] + [nbformat.v4.new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    out = tmp_path / "out"

    plan = [NotebookRun("a", "a-10", {"offset": 10}), NotebookRun("b", "b")]
    done = dict((run.output, seconds) for run, seconds in
                execute_notebooks(plan, out, {"offset": 5}, tmp_path, parallel=2))
    assert set(done) == {"a-10", "b"} and all(s > 0 for s in done.values())
    assert (tmp_path / "a.txt").read_text() == "11" and (tmp_path / "b.txt").read_text() == "5"
    assert (out / "a-10.ipynb").is_file() and (out / "b.ipynb").is_file()

    with pytest.raises(NotebookFailed, match=r"c\.ipynb failed in cell 3 \(ValueError: broken on purpose\)"):
        list(execute_notebooks([NotebookRun("b", "b2"), NotebookRun("c", "c")], out, {}, tmp_path,
                               parallel=2))


def test_notebook_paths_are_the_project_roots_wherever_the_kernel_starts(tmp_path, monkeypatch, capsys):
    from maxsq_lib import course

    root = course.project_root()
    monkeypatch.chdir(root / "notebooks")  # JupyterLab's working folder
    cfg = course.config_for("smoke", runs_root="runs")
    assert cfg.runs_root == str(root / "runs") and cfg.data.root == str(root / "datasets/minicity-smoke")
    course.setup(cfg)
    assert Path.cwd() == root / "notebooks"  # set-up no longer moves the process
    assert f"project root: {root}" in capsys.readouterr().out
    assert course.config_for("smoke", runs_root=str(tmp_path)).runs_root == str(tmp_path)
