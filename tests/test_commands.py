"""The course's own commands (maxsq_lib.course.commands): registered by the core's command line
(tests/test_imports.py: never importing it back), stopping with one line when the course extra is
missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COURSE_EXTRA = ("matplotlib", "seaborn", "pandas", "papermill", "nbformat", "nbclient", "nbconvert",
                "jupyterlab", "ipywidgets", "ipykernel", "torchvision", "latex2mathml")


def _without_the_course_extra(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``maxsq <argv>`` in a process where every package only the course extra brings is missing."""
    code = ("import sys\n"
            f"sys.modules.update(dict.fromkeys({COURSE_EXTRA!r}))  # None: `import` fails as if absent\n"
            "from maxsq_lib.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_with_the_engine_extra_only_core_commands_work_and_course_ones_say_what_is_missing(tmp_path):
    helped = _without_the_course_extra("--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    listed = helped.stdout.split("positional arguments:")[1].split("options:")[0]
    for command in ("prepare", "data", "train-source", "adapt", "evaluate", "run", "reproduce", "course",
                    "figures", "summary", "doctor"):
        assert re.search(rf"^    {command}\s", listed, re.MULTILINE), command
    figures = _without_the_course_extra("figures", "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert (figures.returncode, figures.stdout) == (1, "")
    assert figures.stderr == ("maxsq figures: needs the 'course' extra (matplotlib is not installed): "
                              "pip install 'maxsq[course]'\n")
    missing = tmp_path / "none.pt"
    evaluated = _without_the_course_extra("evaluate", "--profile", "smoke", "--checkpoint", str(missing),
                                          "--data-root", str(tmp_path / "data"), cwd=tmp_path)
    assert evaluated.returncode == 2
    assert evaluated.stderr.strip() == (f"maxsq evaluate: error: checkpoint not found: {missing} (expected a "
                                        f"weight file: ours, or the authors' released .pth)")


def test_ctrl_c_in_a_course_command_counts_the_finished_runs_kept(tmp_path):
    from argparse import Namespace

    from maxsq_lib.course.commands import what_was_kept
    from maxsq_lib.engine.runs import FINISHED_MARKER

    for run, finished in (("maxsquare/seed0", True), ("maxsquare/seed1", False), ("source_multi/seed0", True)):
        folder = tmp_path / "smoke" / "minicity" / run
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
        if finished:
            (folder / FINISHED_MARKER).write_text("")
    kept = what_was_kept(Namespace(command="reproduce", runs=str(tmp_path), profile="smoke"))
    assert kept == (f"Kept: 2 finished runs under {tmp_path / 'smoke'}/ (an interrupted run keeps its last "
                    f"checkpoint, last.pt); run the same command again to reuse them and continue.")
    assert what_was_kept(Namespace(command="figures", runs=str(tmp_path), profile="smoke")) is None
