"""What a researcher meets: one writer per run folder (two processes, waiting, a killed holder,
Ctrl-C), the recipe flags, provenance, paths that follow the user, notebook overrides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maxsq_lib.engine.runlock import LOCK_NAME, RunLockedError, run_lock

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")


def _train_source(root, runs, *extra):
    return subprocess.Popen([sys.executable, "-m", "maxsq_lib", "train-source", "--profile", "smoke",
                             "--data-root", str(root), "--runs", str(runs), "--no-progress",
                             "--set", "threads=1", "--set", "source.iterations=12",
                             "--set", "source.schedule_horizon=12", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_a_second_writer_is_told_who_holds_the_run(smoke_root, tmp_path):
    first, second = _train_source(smoke_root, tmp_path), _train_source(smoke_root, tmp_path)
    outs = [p.communicate(timeout=300) + (p.returncode,) for p in (first, second)]
    codes = sorted(rc for _out, _err, rc in outs)
    assert codes == [0, 2], outs
    _out, err, _rc = next(o for o in outs if o[2] == 2)
    assert "is being written by pid" in err and "train-source" in err and "--wait" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    log = (tmp_path / "smoke/minicity/source_multi/seed0/train.log").read_text()
    assert log.count("initialised from scratch") == 1 and log.count("finished:") == 1


def test_waiting_writer_reuses_the_run_it_waited_for(smoke_root, tmp_path):
    first = _train_source(smoke_root, tmp_path)
    time.sleep(0.3)
    second = _train_source(smoke_root, tmp_path, "--wait")
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "waiting for" in out2 + err2
    # both report the one run; it was trained once
    assert out1.strip().splitlines()[-1] == out2.strip().splitlines()[-1]
    log = (tmp_path / "smoke/minicity/source_multi/seed0/train.log").read_text()
    assert log.count("finished:") == 1


def test_a_lock_left_by_a_killed_process_is_recovered(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; from maxsq_lib.engine.runlock import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid} on .* since"):
        with run_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    notes = []
    with run_lock(tmp_path, log=notes.append) as waited:
        assert waited is False
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "no longer runs" in notes[0]
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly: nothing to recover next time
    with run_lock(tmp_path, log=notes.append):
        pass
    assert len(notes) == 1


def test_ctrl_c_says_what_was_kept_in_one_line(smoke_root, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "maxsq_lib", "train-source", "--profile", "smoke",
                             "--data-root", str(smoke_root), "--runs", str(tmp_path), "--no-progress",
                             "--set", "threads=1", "--set", "source.iterations=100000",
                             "--set", "source.schedule_horizon=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    last = tmp_path / "smoke/minicity/source_multi/seed0/last.pt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert last.is_file()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err and "last.pt" in err and "--resume" in err


def test_recipe_flags_reach_the_config_and_the_horizon_is_stated(capsys):
    from maxsq_lib.cli import build_parser, resolve_from_args

    args = build_parser().parse_args(["adapt", "--profile", "cpu", "--method", "maxsquare", "--lr", "3e-5",
                                      "--batch-size", "4", "--target-batch-size", "2", "--iterations", "500"])
    cfg = resolve_from_args(args, "maxsquare")
    assert (cfg.adapt.optim.lr, cfg.adapt.batch_size, cfg.adapt.target_batch_size) == (3e-5, 4, 2)
    assert (cfg.adapt.iterations, cfg.adapt.schedule_horizon) == (500, 1000)
    assert cfg.adapt.optim.name == "adam" and cfg.source.optim.lr == 0.001  # the rest is the profile's
    assert "horizon stays 1,000" in capsys.readouterr().err
    args = build_parser().parse_args(["train-source", "--profile", "paper", "--iter_stop", "100",
                                      "--schedule-horizon", "100"])
    cfg = resolve_from_args(args)
    assert (cfg.source.iterations, cfg.source.schedule_horizon) == (100, 100)
    assert capsys.readouterr().err == ""


def test_provenance_records_the_command_and_a_dirty_tree(monkeypatch):
    from maxsq_lib.engine.build import provenance

    monkeypatch.setattr(sys, "argv", ["/x/bin/maxsq", "adapt", "--method", "none"])
    p = provenance()
    assert p["command"] == ["maxsq", "adapt", "--method", "none"]
    assert p["dirty"] is p["commit"].endswith("+changes")


def test_paths_follow_the_user_not_the_package(tmp_path, monkeypatch):
    from maxsq_lib.files import ROOT_ENV, at_root, project_root

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(repo / "notebooks")
    assert project_root() == repo and at_root("runs") == str(repo / "runs")  # a checkout: its root
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()  # elsewhere: the working folder, never site-packages
    monkeypatch.setenv(ROOT_ENV, str(repo))
    assert project_root() == repo
    # `maxsq course` outside a checkout says where the notebooks are expected, in one line
    env = {k: v for k, v in ENV.items() if k != ROOT_ENV}
    out = subprocess.run([sys.executable, "-m", "maxsq_lib", "course", "--profile", "smoke"], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"notebooks are expected in {tmp_path.resolve() / 'notebooks'}" in out.stderr
    out = subprocess.run([sys.executable, "-m", "maxsq_lib", "course", "--root", str(tmp_path / "no")],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "no such folder" in out.stderr
    # a training command resolves its folders against the root (--root here)
    from maxsq_lib.cli import build_parser, resolve_from_args

    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    cfg = resolve_from_args(build_parser().parse_args(["adapt", "--profile", "paper", "--method", "none"]), "none")
    assert cfg.runs_root == str(tmp_path.resolve() / "runs") and cfg.data.root == str(tmp_path.resolve() / "datasets")
    assert cfg.source.init_checkpoint.startswith(str(tmp_path.resolve() / "pretrained_model"))


def test_training_notebooks_take_overrides_as_a_dot_list():
    from maxsq_lib import course

    listed = course.config_for("cpu", None, "maxsquare", overrides=["adapt.lambda_target=0.3", "adapt.iterations=200"])
    nested = course.config_for("cpu", None, "maxsquare", overrides={"adapt": {"lambda_target": 0.3, "iterations": 200}})
    assert listed == nested and listed.adapt.lambda_target == 0.3
    repo = Path(__file__).resolve().parents[1]
    for name in ("02_source_pretraining", "04_adaptation", "06_cross_city"):
        cells = json.loads((repo / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        assert "overrides = []" in "".join(params["source"]), name
        assert any("overrides=overrides" in "".join(c["source"]) for c in cells), name
