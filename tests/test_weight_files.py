"""Every weight file a user has, through the commands a user types (issue: the authors' files).

A fabricated authors' checkpoint of the smoke preset (legacy serialization, ``module.`` keys, their
extra entries) is evaluated and adapted from with ``maxsq``; the DeepLab init layout starts
``train-source``; broken files give one line naming the file; and the engine's guards (NaN before
every save, resume with other settings, stale temp files, the best-checkpoint criterion, the
target loss reaching the weights) are checked on real smoke runs.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maxsq_lib import checkpoint as ckpt
from maxsq_lib import config as C
from maxsq_lib import losses
from maxsq_lib.engine import RunExistsError, TrainingDiverged, evaluate, run_dir_for, train
from maxsq_lib.engine import build as build_mod
from maxsq_lib.engine import trainer as trainer_mod
from maxsq_lib.engine.build import follow_file_heads
from maxsq_lib.labels import class_set_for
from maxsq_lib.models import deeplabv2_from_preset

from conftest import smoke_cfg  # noqa: E402  (tests/ is on sys.path under pytest)

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "maxsq_lib", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def authors_file(path: Path, state: dict, num_classes_note: str = "") -> Path:
    """As the authors save: DataParallel keys, epoch/iteration/optimizer/best_MIou, PyTorch-1.0
    legacy serialization, best_MIou a numpy float64 under numpy 1.x's module path."""
    payload = {"epoch": 2, "iteration": 5950, "optimizer": {"state": {}, "param_groups": []},
               "state_dict": {"module." + k: v for k, v in state.items()},
               "best_MIou": np.float64(0.4321)}
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path


def smoke_model(aspp_branches: int = 2, num_classes: int = 10, seed: int = 5):
    torch.manual_seed(seed)
    return deeplabv2_from_preset("minicity", num_classes, aspp_branches=aspp_branches)


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory):
    model = smoke_model()
    path = authors_file(tmp_path_factory.mktemp("pretrained") / "GTA5_source.pth", model.state_dict())
    return path, model


# --------------------------------------------------------------------------------------------
# recognising the formats


def test_read_weights_recognises_every_format(tmp_path, authors_ckpt):
    path, model = authors_ckpt
    wf = ckpt.read_weights(path)
    assert wf.format == "authors" and wf.aspp_branches == 2
    assert wf.info == {"epoch": 2, "iteration": 5950, "best_MIou": pytest.approx(0.4321)}
    assert list(wf.state) == list(model.state_dict())
    assert "the authors' training checkpoint" in wf.describe() and "epoch 2" in wf.describe()

    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "dp.pth")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    ckpt.save_checkpoint(tmp_path / "ours.pt", model=model, step=7,
                         config={"model": {"aspp_branches": 2, "preset": "minicity"}})
    assert ckpt.read_weights(tmp_path / "dp.pth").format == "state_dict_module"
    bare = ckpt.read_weights(tmp_path / "bare.pth")
    assert bare.format == "state_dict" and bare.aspp_branches is None
    ours = ckpt.read_weights(tmp_path / "ours.pt")
    assert ours.format == "maxsq" and ours.aspp_branches == 2 and ours.info == {"step": 7}
    for name in ("dp.pth", "bare.pth", "ours.pt"):
        other = smoke_model(seed=9)
        report = ckpt.load_weights(other, tmp_path / name)
        assert report.ok and report.info["format"] == ckpt.read_weights(tmp_path / name).format
        assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(),
                                                     model.state_dict().values()))


def test_heads_follow_the_file_unless_chosen(authors_ckpt, tmp_path):
    path, _ = authors_ckpt
    wf = ckpt.read_weights(path)
    assert wf.heads_for(4, chosen=False)[0] == 2
    branches, note = wf.heads_for(4, chosen=True)
    assert branches == 4 and "trained with 2" in note
    cfg = smoke_cfg(tmp_path, tmp_path, "maxsquare")
    assert cfg.model.aspp_branches == 4
    note = follow_file_heads(cfg, path, chosen=False, purpose="start")
    assert cfg.model.aspp_branches == 2 and "following the file" in note


# --------------------------------------------------------------------------------------------
# through the commands


def test_evaluate_an_authors_checkpoint_equals_loading_it_by_hand(authors_ckpt, smoke_root, tmp_path):
    path, model = authors_ckpt
    out = tmp_path / "eval.json"
    res = cli("evaluate", "--profile", "smoke", "--data-root", str(smoke_root), "--checkpoint",
              str(path), "--output", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "the authors' training checkpoint" in res.stdout
    assert "2 ASPP branches, following the file" in res.stdout
    data = json.loads(out.read_text())
    assert data["aspp_branches"] == 2

    cfg = smoke_cfg(smoke_root, tmp_path)
    val = build_mod.build_dataset(cfg, "val")
    by_hand = evaluate(model.eval(), val, class_set_for(10), batch_size=cfg.eval.batch_size,
                       progress=False)
    assert data["miou"] == pytest.approx(by_hand.miou, abs=1e-12)
    # the other sum of the heads computes something else: the ASPP choice is not cosmetic
    four = smoke_model(aspp_branches=4)
    four.load_state_dict(model.state_dict())
    assert evaluate(four.eval(), val, class_set_for(10), progress=False).miou != pytest.approx(by_hand.miou)


def test_adapt_from_an_authors_checkpoint(authors_ckpt, smoke_root, tmp_path):
    path, _ = authors_ckpt
    res = cli("adapt", "--profile", "smoke", "--method", "maxsquare", "--data-root", str(smoke_root),
              "--runs", str(tmp_path), "--source-checkpoint", str(path), "--no-progress",
              "--set", "threads=1")
    assert res.returncode == 0, res.stderr
    assert "2 ASPP branches, following the file" in res.stdout
    run_dir = tmp_path / "smoke" / "minicity" / "maxsquare" / "seed0"
    saved = C.load_yaml(run_dir / "config.yaml")
    assert saved["model"]["aspp_branches"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "the authors' training checkpoint" in metrics["init"]
    # the file's weights really are the starting point: "before" is their score
    cfg = smoke_cfg(smoke_root, tmp_path)
    model = smoke_model()
    val = build_mod.build_dataset(cfg, "val")
    by_hand = evaluate(model.eval(), val, class_set_for(10), batch_size=cfg.eval.batch_size, progress=False)
    assert metrics["before"]["miou"] == pytest.approx(by_hand.miou, abs=1e-12)
    # a chosen value wins, and the command says the file's heads differ
    res = cli("adapt", "--profile", "smoke", "--method", "none", "--data-root", str(smoke_root),
              "--runs", str(tmp_path), "--source-checkpoint", str(path), "--no-progress",
              "--aspp-branches", "4", "--set", "adapt.iterations=2", "--set", "adapt.schedule_horizon=2")
    assert res.returncode == 0, res.stderr
    assert "as chosen; the file's heads were trained with 2" in res.stdout
    assert C.load_yaml(tmp_path / "smoke/minicity/none/seed0/config.yaml")["model"]["aspp_branches"] == 4


def test_train_source_from_the_deeplab_init_layout(smoke_root, tmp_path):
    donor = smoke_model(aspp_branches=4, seed=11)
    layer4_channels = donor.layer6.conv2d_list[0].weight.shape[1]
    state = {"Scale." + k: v.clone() for k, v in donor.state_dict().items()
             if not k.endswith("num_batches_tracked") and not k.startswith(("layer5", "layer6"))}
    for i in range(4):  # the init model's own classifier on layer4: skipped
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, layer4_channels, 3, 3)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    init = tmp_path / "DeepLab_resnet_pretrained_init-f81d91e8.pth"
    torch.save(state, init, _use_new_zipfile_serialization=False)
    res = cli("train-source", "--profile", "smoke", "--data-root", str(smoke_root), "--runs",
              str(tmp_path / "runs"), "--init-checkpoint", str(init), "--no-progress",
              "--set", "source.optim.lr=0", "--set", "threads=1")
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "runs" / "smoke" / "minicity" / "source_multi" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "the DeepLab init file" in metrics["init"] and "8 classifier tensors skipped" in metrics["init"]
    final = torch.load(run_dir / "final.pt", weights_only=True)["model"]
    # lr 0: the backbone is the file's (running statistics move in train mode, weights do not)
    for key, value in donor.state_dict().items():
        if key.endswith(".weight") and not key.startswith(("layer5", "layer6")) and "bn" not in key:
            assert torch.equal(final[key], value), key
    # the init file cannot stand in for a trained model
    res = cli("evaluate", "--profile", "smoke", "--data-root", str(smoke_root), "--checkpoint", str(init))
    assert res.returncode == 2 and "DeepLab init file" in res.stderr and "Traceback" not in res.stderr


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_bad_files_give_one_line_naming_the_file(smoke_root, tmp_path):
    files = {}
    files["text"] = tmp_path / "notes.pth"
    files["text"].write_text("not a checkpoint\n")
    files["code"] = tmp_path / "malicious.pth"
    files["code"].write_bytes(pickle.dumps({"state_dict": {}, "x": RunsACommand(tmp_path / "ran")}, protocol=2))
    good = smoke_model(aspp_branches=4)
    wrong_keys = dict(good.state_dict())
    del wrong_keys["layer6.conv2d_list.0.weight"]
    files["keys"] = tmp_path / "wrong_keys.pt"
    ckpt.save_checkpoint(files["keys"], model=good, step=1, config={"model": {"aspp_branches": 4}})
    payload = torch.load(files["keys"], weights_only=True)
    payload["model"] = wrong_keys
    torch.save(payload, files["keys"])
    files["classes"] = authors_file(tmp_path / "cityscapes_13.pth", smoke_model(num_classes=13).state_dict())
    expected = {"text": "expected a PyTorch checkpoint", "code": "refused for safety",
                "keys": "missing keys (1)", "classes": "heads have 13 classes, the model's 10"}
    for kind, path in files.items():
        res = cli("evaluate", "--profile", "smoke", "--data-root", str(smoke_root), "--checkpoint", str(path))
        assert res.returncode == 2, (kind, res.stderr)
        assert "Traceback" not in res.stderr, (kind, res.stderr)
        first = res.stderr.strip().splitlines()[0]
        assert first.startswith("maxsq evaluate: error:") and str(path) in first, (kind, first)
        assert expected[kind] in res.stderr, (kind, res.stderr)
    assert not (tmp_path / "ran").exists()
    res = cli("adapt", "--profile", "smoke", "--method", "maxsquare", "--data-root", str(smoke_root),
              "--runs", str(tmp_path / "runs"), "--source-checkpoint", str(files["code"]))
    assert res.returncode == 2 and "refused for safety" in res.stderr and "Traceback" not in res.stderr


# --------------------------------------------------------------------------------------------
# engine guards


@pytest.fixture(scope="module")
def source_runs(smoke_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    train(smoke_cfg(smoke_root, runs), "source", progress=False)
    return runs


def _poison_after(monkeypatch, n_ok: int):
    calls = {"n": 0}
    real = losses.max_square

    def poisoned(logits, faithful=False):
        # training steps only: the evaluation's probe differentiates a detached leaf copy of the logits
        if logits.grad_fn is None:
            return real(logits, faithful=faithful)
        calls["n"] += 1
        value = real(logits, faithful=faithful)
        return value * float("nan") if calls["n"] > n_ok else value

    monkeypatch.setattr(losses, "max_square", poisoned)


def test_nan_guard_with_periods_that_are_not_multiples(source_runs, smoke_root, monkeypatch):
    # log every 5, save every 2: the loss turns NaN at iteration 3; the save at 4 must not happen
    cfg = smoke_cfg(smoke_root, source_runs, "maxsquare", tag="nan-periods", log_every=5,
                    checkpoint_every=2, adapt={"iterations": 6, "schedule_horizon": 6},
                    eval={"every": 100})
    _poison_after(monkeypatch, 2)
    with pytest.raises(TrainingDiverged, match=r"between iterations 2 and 4.*iteration 2\)"):
        train(cfg, "adapt", progress=False)
    state = torch.load(run_dir_for(cfg, "adapt") / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_resume_compares_settings_and_clears_stale_temp_files(source_runs, smoke_root, monkeypatch):
    over = dict(tag="resume-check", adapt={"iterations": 6, "schedule_horizon": 6})
    cfg = smoke_cfg(smoke_root, source_runs, "maxsquare", **over)
    _poison_after(monkeypatch, 2)
    with pytest.raises(TrainingDiverged):
        train(cfg, "adapt", progress=False)
    monkeypatch.undo()
    run_dir = run_dir_for(cfg, "adapt")
    stale = run_dir / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = smoke_cfg(smoke_root, source_runs, "maxsquare", **{**over, "adapt": {**over["adapt"], "lambda_target": 0.5}})
    with pytest.raises(RunExistsError, match=r"cannot resume.*\n  adapt.lambda_target: 0.1 there, 0.5 now"):
        train(other, "adapt", resume=True, progress=False)
    m = train(cfg, "adapt", resume=True, progress=False)
    assert m["iterations"] == 6 and not stale.exists()


def test_a_save_removes_the_temp_file_a_killed_save_left(tmp_path):
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"x")
    other = tmp_path / ".best.pt.abc123.tmp"
    other.write_bytes(b"x")
    ckpt.save_checkpoint(tmp_path / "last.pt", model=smoke_model(), step=0)
    assert not stale.exists() and other.exists()  # only the temp files of the file being saved


def test_best_checkpoint_criterion_is_named_and_used(source_runs, smoke_root, monkeypatch):
    assert trainer_mod.best_criterion(16) == "miou_star13" and trainer_mod.best_criterion(19) == "miou"
    monkeypatch.setattr(trainer_mod, "best_criterion", lambda n: "pixel_accuracy")
    cfg = smoke_cfg(smoke_root, source_runs, "none", tag="criterion",
                    adapt={"iterations": 6, "schedule_horizon": 6}, eval={"every": 1})
    m = train(cfg, "adapt", progress=False)
    best = m["best_on_target_val"]
    assert best["criterion"] == "pixel_accuracy"
    assert best["pixel_accuracy"] == max(h["pixel_accuracy"] for h in m["history"])


def _one_step(smoke_root, runs, method, lam, tag):
    cfg = smoke_cfg(smoke_root, runs, method, tag=tag, adapt={"iterations": 1, "schedule_horizon": 1,
                                                            "lambda_target": lam})
    train(cfg, "adapt", progress=False)
    return torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]


def test_the_target_loss_reaches_the_weights(source_runs, smoke_root):
    none = _one_step(smoke_root, source_runs, "none", 0.1, "step-none")
    zero = _one_step(smoke_root, source_runs, "maxsquare", 0.0, "step-zero")
    loss = _one_step(smoke_root, source_runs, "maxsquare", 1.0, "step-ms")
    # λ_T = 0: exactly the control (same seed, same batches); λ_T > 0: other weights
    assert all(torch.equal(none[k], zero[k]) for k in none)
    changed = [k for k in none if none[k].is_floating_point() and not torch.equal(none[k], loss[k])]
    assert "layer6.conv2d_list.0.weight" in changed and "conv1.weight" in changed


def test_bn_eval_mode_is_the_authors_freeze_bn(source_runs, smoke_root):
    before = torch.load(Path(source_runs) / "smoke/minicity/source_multi/seed0/final.pt", weights_only=True)["model"]
    cfg = smoke_cfg(smoke_root, source_runs, "maxsquare", tag="bn-eval", adapt={"bn_mode": "eval"})
    train(cfg, "adapt", progress=False)
    after = torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["layer1.0.bn2.weight"], after["layer1.0.bn2.weight"])  # affine trained


# --------------------------------------------------------------------------------------------
# configs


def test_numbers_as_people_write_them(tmp_path):
    assert C.parse_override("source.optim.lr=1e12") == {"source": {"optim": {"lr": 1e12}}}
    assert C.parse_override("adapt.optim.lr=2.5e-4")["adapt"]["optim"]["lr"] == 2.5e-4
    assert C.parse_override("tag=1e") == {"tag": "1e"}
    res = cli("adapt", "--profile", "smoke", "--method", "none", "--set", "adapt.optim.lr=1e-4",
              "--dry-run", "--data-root", str(tmp_path))
    assert "expected a number" not in res.stderr
    profile = tmp_path / "p.yaml"
    profile.write_text("adapt: {optim: {lr: 2.5e-4}}\nsource: {optim: {lr: 1e-3}}\n")
    data = C.load_yaml(profile)
    assert data["adapt"]["optim"]["lr"] == 2.5e-4 and data["source"]["optim"]["lr"] == 1e-3


def test_cross_city_multi_keeps_1024x512_at_paper_scale():
    assert C.resolve("paper", "gta5_cityscapes", "maxsquare_iw_multi").data.target_size == (1280, 640)
    for bench in C.benchmarks_of("paper"):
        if "nthu" in bench:
            cfg = C.resolve("paper", bench, "maxsquare_iw_multi")
            assert cfg.data.target_size == (1024, 512) and cfg.data.val_size == (1024, 512), bench


def test_planned_jobs_and_notebook_configs_follow_a_named_starting_file(authors_ckpt, tmp_path):
    from maxsq_lib.course import config_for
    from maxsq_lib.course.plans import plan_jobs

    path, _ = authors_ckpt
    jobs = plan_jobs("smoke", "minicity", [0], ["maxsquare"], runs=str(tmp_path),
                     overrides=[f"adapt.source_checkpoint={path}"])
    assert [j.config.model.aspp_branches for j in jobs if j.stage == "adapt"] == [2]
    cfg = config_for("smoke", method="maxsquare", runs_root=str(tmp_path),
                     overrides={"adapt": {"source_checkpoint": str(path)}})
    assert cfg.model.aspp_branches == 2
    # without a named file nothing is read and the profile decides
    assert config_for("smoke", method="maxsquare", runs_root=str(tmp_path)).model.aspp_branches == 4
