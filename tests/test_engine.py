"""The engine on the smoke profile: every strategy, resume after kill -9, NaN guard, DDP with two
gloo processes, evaluation against a hand-computed table, and CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from maxsq_lib import config as C
from maxsq_lib import losses
from maxsq_lib.engine import (RunExistsError, TrainingDiverged, evaluate, make_strategy, poly_lr,
                              read_metrics, run_dir_for, train)

from conftest import smoke_cfg  # noqa: E402  (tests/ is on sys.path under pytest)

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")


@pytest.fixture(scope="session")
def source_run(smoke_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    metrics = train(smoke_cfg(smoke_root, runs), "source", progress=False)
    return runs, metrics


def test_poly_lr_is_the_authors_schedule():
    assert poly_lr(2.5e-4, 0, 100) == 2.5e-4
    assert poly_lr(2.5e-4, 50, 100) == pytest.approx(2.5e-4 * 0.5 ** 0.9)
    # the authors' source stop: 80k of a 200k horizon
    assert poly_lr(2.5e-4, 80_000, 200_000) == pytest.approx(1.58e-4, rel=2e-3)


def test_strategies_weight_their_losses():
    g = torch.Generator().manual_seed(0)
    main, aux = torch.randn(2, 10, 8, 12, generator=g), torch.randn(2, 10, 8, 12, generator=g)
    none_loss, logs = make_strategy("none")(main, aux)
    assert none_loss is None and logs == {}
    ms, _ = make_strategy("maxsquare", lambda_target=0.1)(main, aux)
    assert torch.allclose(ms, 0.1 * losses.max_square(main, faithful=True))
    ent, _ = make_strategy("minent", lambda_target=0.5, faithful_scale=False)(main, aux)
    assert torch.allclose(ent, 0.5 * losses.entropy(main, faithful=False))
    multi = make_strategy("maxsquare_iw_multi", lambda_target=0.09, lambda_seg=0.1, threshold=0.2)
    loss, logs = multi(main, aux)
    ce, _ = losses.multi_level_guidance(main, aux, threshold=0.2)
    expected = 0.09 * (losses.iw_max_square(main, 0.2, faithful=True) + 0.1 * ce)
    assert multi.uses_aux and torch.allclose(loss, expected)
    assert 0 < float(logs["pseudo_label_fraction"]) <= 1
    with pytest.raises(ValueError, match="unknown adaptation method"):
        make_strategy("maxsqr")


def test_source_run_writes_its_outputs(source_run):
    runs, m = source_run
    run_dir = Path(runs) / "smoke" / "minicity" / "source_multi" / "seed0"
    for name in ("config.yaml", "metrics.json", "final.pt", "best.pt", "last.pt", "train.log", "FINISHED"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    saved = C.from_dict(C.load_yaml(run_dir / "config.yaml"))
    assert saved.source.iterations == m["iterations"] == 4
    assert [e["iteration"] for e in m["history"]] == [2, 4]
    assert 0.0 <= m["last"]["miou"] <= 1.0 and m["source_val"]["images"] == 4
    assert m["last_flip"]["flip"] is True
    assert len(m["last"]["per_class_iou"]) == 10
    cm = np.array(m["last"]["confusion"])
    assert cm.shape == (10, 10) and cm.sum() > 0


def test_source_stage_has_its_own_evaluation_period(smoke_root, tmp_path):
    cfg = smoke_cfg(smoke_root, tmp_path, eval={"every": 2, "source_every": 3})
    m = train(cfg, "source", progress=False)
    assert [e["iteration"] for e in m["history"]] == [3, 4]  # and always the last iteration
    with pytest.raises(C.ConfigError, match="eval.source_every"):
        smoke_cfg(smoke_root, tmp_path, eval={"source_every": 0})


def test_a_finished_run_is_reused_only_with_the_settings_that_made_it(source_run, smoke_root):
    from maxsq_lib.course.plans import Job, run_jobs
    from maxsq_lib.engine.runs import check_reusable, config_mismatches

    runs, _ = source_run
    run_dir = Path(runs) / "smoke" / "minicity" / "source_multi" / "seed0"
    same = smoke_cfg(smoke_root, runs)
    moved = smoke_cfg(smoke_root, runs, data={"root": "/elsewhere"}, threads=2, eval={"every": 3})
    for cfg in (same, moved):  # paths, threads and the evaluation period do not decide the model
        check_reusable(run_dir, cfg.to_dict(), "source")
    longer = smoke_cfg(smoke_root, runs, source={"iterations": 6, "schedule_horizon": 6})
    with pytest.raises(RunExistsError, match=r"source.iterations: 4 there, 6 now") as err:
        check_reusable(run_dir, longer.to_dict(), "source")
    assert str(run_dir) in str(err.value)
    job = Job("source seed0", "source", longer)
    assert job.run_dir == run_dir
    with pytest.raises(RunExistsError, match="source.schedule_horizon"):
        run_jobs([job])  # refused before anything starts
    # adaptation settings matter only for adaptation runs; a matched λ is measured, not configured
    other_lambda = smoke_cfg(smoke_root, runs, "maxsquare", adapt={"lambda_target": 0.5}).to_dict()
    assert config_mismatches(same.to_dict(), other_lambda, "source") == []
    assert config_mismatches(same.to_dict(), other_lambda, "adapt")[0].startswith("adapt.lambda_target: 0.1 there")
    matched = smoke_cfg(smoke_root, runs, "maxsquare", adapt={"match_gradient_to": "minent"}).to_dict()
    assert config_mismatches(matched, matched, "adapt") == []
    saved = {**matched, "adapt": {**matched["adapt"], "match_gradient_lambda": 3.0}}
    assert config_mismatches(saved, matched, "adapt") == ["adapt.match_gradient_lambda: 3.0 there, None now"]


@pytest.mark.parametrize("method", ["none", "minent", "maxsquare", "maxsquare_iw",
                                    "maxsquare_iw_multi", "hard"])
def test_each_strategy_adapts(source_run, smoke_root, method):
    runs, source_metrics = source_run
    m = train(smoke_cfg(smoke_root, runs, method), "adapt", progress=False)
    assert m["method"] == method and m["iterations"] == 4
    # the starting point is the source model: same evaluation as the source run's last
    assert m["before"]["miou"] == pytest.approx(source_metrics["last"]["miou"])
    log = m["train_log"][-1]
    assert np.isfinite(log["loss"])
    if method != "none":
        assert np.isfinite(log["target_loss"])
    if method in ("maxsquare_iw_multi", "hard"):
        assert 0.0 <= log["pseudo_label_fraction"] <= 1.0


def test_finished_run_is_not_overwritten(source_run, smoke_root):
    runs, _ = source_run
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(smoke_cfg(smoke_root, runs), "source", progress=False)


def test_same_seed_same_metrics(source_run, smoke_root, tmp_path):
    runs, _ = source_run
    a = train(smoke_cfg(smoke_root, runs, "maxsquare_iw", tag="twin"), "adapt", progress=False)
    b = train(smoke_cfg(smoke_root, runs, "maxsquare_iw", tag="twin2"), "adapt", progress=False)
    assert a["last"]["confusion"] == b["last"]["confusion"]
    assert [r["loss"] for r in a["train_log"]] == [r["loss"] for r in b["train_log"]]


def test_bn_frozen_keeps_running_statistics(source_run, smoke_root):
    runs, _ = source_run
    cfg = smoke_cfg(smoke_root, runs, "maxsquare", tag="bnf", adapt={"bn_mode": "frozen"})
    train(cfg, "adapt", progress=False)
    before = torch.load(Path(runs) / "smoke/minicity/source_multi/seed0/final.pt", weights_only=True)["model"]
    after = torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]
    bn_keys = [k for k in before if k.endswith(("running_mean", "running_var", "bn2.weight"))]
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)
    assert not torch.equal(before["layer6.conv2d_list.0.weight"], after["layer6.conv2d_list.0.weight"])


def test_matched_gradient_sets_lambda(source_run, smoke_root):
    runs, _ = source_run
    cfg = smoke_cfg(smoke_root, runs, "maxsquare", tag="match",
                    adapt={"match_gradient_to": "minent", "match_gradient_batches": 2})
    m = train(cfg, "adapt", progress=False)
    info = m["lambda_matching"]
    assert info["reference"] == "minent"
    assert m["lambda_target"] == pytest.approx(0.1 * info["reference_gradient_norm"] / info["gradient_norm"])
    # MaxSquare's logit gradient is smaller than entropy's at equal λ, so λ grows
    assert m["lambda_target"] > 0.1
    # the measured λ is the plan's and the metrics', not a change of the run's config
    assert C.load_yaml(run_dir_for(cfg, "adapt") / "config.yaml")["adapt"]["lambda_target"] == 0.1
    assert cfg.adapt.lambda_target == 0.1


def test_nan_guard_keeps_last_good_checkpoint(source_run, smoke_root, monkeypatch):
    runs, _ = source_run
    cfg = smoke_cfg(smoke_root, runs, "maxsquare", tag="nan", adapt={"iterations": 6, "schedule_horizon": 6})
    calls = {"n": 0}
    real = losses.max_square

    def poisoned(logits, faithful=False):
        # training steps only: the evaluation's probe differentiates a detached leaf copy of the logits
        if logits.grad_fn is None:
            return real(logits, faithful=faithful)
        calls["n"] += 1
        value = real(logits, faithful=faithful)
        return value * float("nan") if calls["n"] >= 3 else value

    monkeypatch.setattr(losses, "max_square", poisoned)
    with pytest.raises(TrainingDiverged, match="NaN or infinite between iterations 2 and 4"):
        train(cfg, "adapt", progress=False)
    state = torch.load(run_dir_for(cfg, "adapt") / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run_dir_for(cfg, "adapt") / "FINISHED").exists()


def _cli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "maxsq_lib", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def test_resume_after_kill_gives_identical_weights(source_run, smoke_root):
    runs, _ = source_run
    common = ["adapt", "--profile", "smoke", "--method", "maxsquare_iw", "--runs", str(runs),
              "--data-root", str(smoke_root), "--no-progress", "--set", "adapt.iterations=24",
              "--set", "adapt.schedule_horizon=24", "--set", "eval.every=8", "--set", "threads=1"]
    ref = _cli(*common, "--tag", "straight")
    assert ref.returncode == 0, ref.stderr
    run_dir = Path(runs) / "smoke/minicity/maxsquare_iw-killed/seed0"
    proc = subprocess.Popen([sys.executable, "-m", "maxsq_lib", *common, "--tag", "killed"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "FINISHED").exists(), "the run finished before it could be killed"
    killed_at = torch.load(run_dir / "last.pt", weights_only=True)["step"]
    assert 0 < killed_at < 24
    again = _cli(*common, "--tag", "killed")
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = _cli(*common, "--tag", "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(Path(runs) / "smoke/minicity/maxsquare_iw-straight/seed0/final.pt", weights_only=True)["model"]
    b = torch.load(run_dir / "final.pt", weights_only=True)["model"]
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert a.keys() == b.keys() and not differing, (killed_at, differing[:5])
    m_straight = json.loads((Path(runs) / "smoke/minicity/maxsquare_iw-straight/seed0/metrics.json").read_text())
    m_killed = json.loads((run_dir / "metrics.json").read_text())
    assert m_straight["last"]["confusion"] == m_killed["last"]["confusion"]
    assert [h["miou"] for h in m_straight["history"]] == [h["miou"] for h in m_killed["history"]]


def test_ddp_two_gloo_processes(source_run, smoke_root):
    runs, _ = source_run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "maxsq_lib", "adapt", "--profile", "smoke", "--method", "maxsquare_iw",
           "--runs", str(runs), "--data-root", str(smoke_root), "--no-progress", "--tag", "ddp",
           "--set", "threads=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    m = read_metrics(Path(runs) / "smoke/minicity/maxsquare_iw-ddp/seed0")
    # each rank evaluates half of the val split; the reduced matrix covers all of it
    single = read_metrics(Path(runs) / "smoke/minicity/maxsquare_iw/seed0")
    assert m["last"]["images"] == single["last"]["images"]
    assert np.array(m["last"]["confusion"]).sum() == np.array(single["last"]["confusion"]).sum()
    assert np.isfinite(m["train_log"][-1]["loss"])


class _FixedPredictions(torch.nn.Module):
    """Returns one-hot logits of the class stored in the image's first channel."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        pred = x[:, 0].round().long()
        logits = torch.nn.functional.one_hot(pred, self.num_classes).permute(0, 3, 1, 2).float() * 20
        return logits, logits


def test_evaluate_equals_hand_computed_table():
    preds = [np.array([[0, 0, 1], [2, 2, 2]]), np.array([[1, 1, 1], [0, 2, 2]])]
    gts = [np.array([[0, 1, 1], [2, 2, -1]]), np.array([[1, 1, 0], [0, 2, -1]])]
    dataset = [(torch.tensor(np.stack([p, p, p]), dtype=torch.float32), torch.tensor(g), f"im{i}")
               for i, (p, g) in enumerate(zip(preds, gts))]
    # Counts by hand (rows gt, cols pred), ignoring -1:
    # gt0: pred0 x2 (im0 (0,0); im1 (1,0)), pred1 x1 (im1 (0,2))
    # gt1: pred0 x1 (im0 (0,1)), pred1 x3 (im0 (0,2); im1 (0,0), (0,1))
    # gt2: pred2 x3 (im0 (1,0), (1,1); im1 (1,1))
    expected = np.array([[2, 1, 0], [1, 3, 0], [0, 0, 3]])

    class Tiny:
        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            return dataset[i]

    import maxsq_lib.labels as L

    tiny_set = L.ClassSet("tiny3", (0, 1, 2))
    result = evaluate(_FixedPredictions(3), Tiny(), tiny_set, progress=False)
    assert np.array_equal(result.confusion.numpy(), expected)
    iou = [2 / (3 + 3 - 2), 3 / (4 + 4 - 3), 1.0]
    assert result.summary["per_class_iou"] == pytest.approx(dict(zip(tiny_set.class_names, iou)))
    assert result.miou == pytest.approx(np.mean(iou))
    assert result.summary["pixel_accuracy"] == pytest.approx(8 / 10)
    assert result.mean_entropy < 1e-6  # one-hot logits ×20: near-certain predictions
    assert "mIoU" in result.table() and "road" in result.table()


def test_cli_errors_name_the_missing_paths(tmp_path, smoke_root):
    out = _cli("train-source", "--profile", "smoke", "--data-root", str(tmp_path / "nowhere"),
               "--runs", str(tmp_path / "runs"))
    assert out.returncode == 2
    assert str(tmp_path / "nowhere") in out.stderr and "error" in out.stderr
    out = _cli("adapt", "--profile", "smoke", "--method", "maxsquare", "--data-root", str(smoke_root),
               "--runs", str(tmp_path / "runs"))
    assert out.returncode == 2
    assert "source checkpoint not found" in out.stderr and "maxsq train-source" in out.stderr
    out = _cli("evaluate", "--profile", "smoke", "--data-root", str(smoke_root),
               "--checkpoint", str(tmp_path / "missing.pth"))
    assert out.returncode == 2 and "missing.pth" in out.stderr


def test_cli_evaluate_refuses_to_overwrite(source_run, smoke_root, tmp_path):
    runs, _ = source_run
    target = tmp_path / "eval.json"
    args = ["evaluate", "--profile", "smoke", "--method", "source", "--runs", str(runs),
            "--data-root", str(smoke_root), "--output", str(target), "--no-progress", "--flip"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    data = json.loads(target.read_text())
    assert data["flip"] is True and 0 <= data["miou"] <= 1
    second = _cli(*args)
    assert second.returncode == 2 and "--overwrite" in second.stderr
    assert json.loads(target.read_text()) == data


def test_planned_jobs_are_configs_run_by_the_pool(smoke_root, tmp_path):
    from maxsq_lib.course.plans import Variant, plan_jobs, run_jobs, study_variants

    studies = study_variants([0.5], ["maxsquare"], match_lambda=1.0, match=True)
    assert studies == [Variant("maxsquare", "lambda0.5", {"lambda_target": 0.5}),
                       Variant("maxsquare", "match-minent",
                               {"match_gradient_to": "minent", "match_gradient_lambda": 1.0})]
    jobs = plan_jobs("smoke", "minicity", [0], ["none"], studies[:1], runs=str(tmp_path),
                     data_root=str(smoke_root), overrides=["adapt.iterations=2", "adapt.schedule_horizon=2"])
    assert [(j.name, j.stage) for j in jobs] == [("source_multi seed0", "source"), ("none seed0", "adapt"),
                                                 ("maxsquare-lambda0.5 seed0", "adapt")]
    assert jobs[2].config.adapt.lambda_target == 0.5 and jobs[2].after == [jobs[0].run_dir]
    assert jobs[2].command[:3] == ["adapt", "--method", "maxsquare"]
    assert "adapt.lambda_target=0.5" in jobs[2].command  # what a user would type, only shown
    seconds = run_jobs(jobs, parallel=2, log=lambda m: None)
    assert set(seconds) == {j.name for j in jobs}
    for job in jobs:
        spec = C.load_yaml(job.run_dir / "job.yaml")
        assert spec["threads"] == 1 and C.from_dict(spec).adapt == job.config.adapt
        assert read_metrics(job.run_dir)["iterations"] == (4 if job.stage == "source" else 2)
    # a failing job is named with its log; the pool stops
    broken = plan_jobs("smoke", "minicity", [1], [], runs=str(tmp_path), data_root=str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=r"source_multi seed1 failed \(exit 2\); log: .*console.log"):
        run_jobs(broken, parallel=1, log=lambda m: None)


def test_tensorboard_holds_one_grid_image_per_val_item(source_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, _ = source_run
    tb = EventAccumulator(str(Path(runs) / "smoke/minicity/source_multi/seed0/tb"), size_guidance={"images": 0})
    tb.Reload()
    assert {"val0", "val1"} <= set(tb.Tags()["images"])
    image = tb.Images("val0")[-1]
    # input | label | prediction | entropy, 64x32 each, 2 px apart and around (torchvision's grid)
    assert (image.width, image.height) == (4 * 64 + 5 * 2, 32 + 2 * 2)
    assert "train/loss" in tb.Tags()["scalars"] and "val/miou" in tb.Tags()["scalars"]


def test_adabn_reestimates_batchnorm_and_takes_no_step(source_run, smoke_root):
    from maxsq_lib.engine.adabn import reestimate_batchnorm
    from maxsq_lib.engine.build import build_dataset, build_model

    runs, _ = source_run
    # float32, so that the hand-computed mean below is the estimator's to float precision
    cfg = smoke_cfg(smoke_root, runs, "adabn", amp="none")
    m = train(cfg, "adapt", progress=False)
    assert m["method"] == "adabn" and m["iterations"] == 0 and m["history"] == []
    assert m["best_on_target_val"]["miou"] == m["last"]["miou"]
    source = torch.load(Path(runs) / "smoke/minicity/source_multi/seed0/final.pt", weights_only=True)["model"]
    adapted = torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]
    stats = [k for k in source if k.endswith(("running_mean", "running_var"))]
    assert all(not torch.equal(source[k], adapted[k]) for k in stats)  # every BN layer re-estimated
    assert all(torch.equal(source[k], adapted[k]) for k in source
               if k not in stats and not k.endswith("num_batches_tracked"))  # no gradient step
    # the statistics are the average over the target train images: by hand for the stem BN
    model = build_model(cfg)
    model.load_state_dict(source)
    target = build_dataset(cfg, "target")
    target.augment = False
    seen = []
    hook = model.bn1.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].mean(dim=(0, 2, 3))))
    assert reestimate_batchnorm(model, target, batch_size=len(target), device="cpu") == len(target)
    hook.remove()
    torch.testing.assert_close(model.bn1.running_mean, seen[0])
    torch.testing.assert_close(adapted["bn1.running_mean"], seen[0], rtol=1e-4, atol=1e-5)
    assert m["last"]["miou"] != m["before"]["miou"]


def test_dev_and_test_halves_are_scored_at_every_evaluation(source_run, smoke_root):
    from maxsq_lib.engine.build import build_dataset, build_model

    runs, m = source_run
    for entry in m["history"] + [m["last"]]:
        parts = entry["subsets"]
        assert set(parts) == {"dev", "test"}
        assert parts["dev"]["images"] + parts["test"]["images"] == entry["images"]
    # the dev score is the dev split's own evaluation (same model, same protocol)
    cfg = smoke_cfg(smoke_root, runs)
    model = build_model(cfg)
    final = Path(runs) / "smoke/minicity/source_multi/seed0/final.pt"
    model.load_state_dict(torch.load(final, weights_only=True)["model"])
    dev = build_dataset(C.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "val_split": "dev"}}), "val")
    model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
    alone = evaluate(model, dev, 10, batch_size=cfg.eval.batch_size, progress=False, amp=cfg.amp,
                     channels_last=cfg.channels_last)
    assert m["last"]["subsets"]["dev"]["miou"] == pytest.approx(alone.miou, abs=1e-12)
    with pytest.raises(Exception, match="not in the 'dev' split"):
        train(smoke_cfg(smoke_root, runs, "none", tag="bad-subset",
                        data={"val_split": "dev"}, eval={"subsets": ["test"]}), "adapt", progress=False)


def test_evaluating_with_target_batchnorm_statistics(source_run, smoke_root):
    from maxsq_lib.engine.adabn import reestimate_batchnorm
    from maxsq_lib.engine.build import build_dataset, build_model

    runs, _ = source_run
    control = train(smoke_cfg(smoke_root, runs, "adabn", tag="stats-ctl"), "adapt", progress=False)
    cfg = smoke_cfg(smoke_root, runs, "none", tag="stats-target", eval={"bn_statistics": "target"})
    m = train(cfg, "adapt", progress=False)
    # the starting point scored with target statistics is exactly the adabn control
    assert m["before"]["miou"] == control["last"]["miou"]
    # adabn under the same setting: its starting point is the source model with its own statistics
    # (the source row of a benchmark without a source run, e.g. a city), its result the re-estimate
    same = train(smoke_cfg(smoke_root, runs, "adabn", tag="stats-target-ctl",
                           eval={"bn_statistics": "target"}), "adapt", progress=False)
    assert same["before"]["miou"] == control["before"]["miou"] != same["last"]["miou"]
    assert same["last"]["miou"] == control["last"]["miou"]
    # final.pt holds the statistics it was scored with: re-estimating its weights again changes nothing
    state = torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]
    model = build_model(cfg).to(memory_format=torch.channels_last)
    model.load_state_dict(state)
    target = build_dataset(cfg, "target")
    target.augment = False
    reestimate_batchnorm(model, target, cfg.adapt.target_batch_size, "cpu", amp=cfg.amp,
                         channels_last=True)
    for key in ("bn1.running_mean", "layer4.0.bn3.running_var"):
        torch.testing.assert_close(model.state_dict()[key], state[key])
    with pytest.raises(C.ConfigError, match="eval.bn_statistics"):
        smoke_cfg(smoke_root, runs, "none", eval={"bn_statistics": "mixed"})


def test_batchnorm_statistics_from_evenly_spread_images(source_run, smoke_root):
    from maxsq_lib.engine.adabn import reestimate_batchnorm, statistics_images
    from maxsq_lib.engine.build import build_dataset, build_model

    assert statistics_images(list(range(10)), None) == list(range(10))
    assert list(statistics_images(list(range(10)), 4)) == [0, 2, 5, 7]
    assert list(statistics_images(list(range(10)), 10)) == list(range(10))
    with pytest.raises(ValueError, match="bn_images"):
        statistics_images(list(range(10)), 0)
    with pytest.raises(C.ConfigError, match="eval.bn_images"):
        smoke_cfg(smoke_root, "runs", "adabn", eval={"bn_images": 0})
    runs, _ = source_run
    cfg = smoke_cfg(smoke_root, runs, "adabn", tag="bn-images", eval={"bn_images": 4})
    train(cfg, "adapt", progress=False)
    assert "re-estimated on 4 target train images" in (run_dir_for(cfg, "adapt") / "train.log").read_text()
    state = torch.load(run_dir_for(cfg, "adapt") / "final.pt", weights_only=True)["model"]
    target = build_dataset(cfg, "target")
    target.augment = False
    model = build_model(cfg).to(memory_format=torch.channels_last)
    model.load_state_dict(state)
    n = len(target)
    subset = torch.utils.data.Subset(target, [i * n // 4 for i in range(4)])
    reestimate_batchnorm(model, subset, cfg.adapt.target_batch_size, "cpu", amp=cfg.amp, channels_last=True)
    torch.testing.assert_close(model.state_dict()["bn1.running_mean"], state["bn1.running_mean"])


def test_evaluation_with_workers_and_int16_labels_equals_the_serial_int64_one(source_run, smoke_root):
    """Workers and int16 labels in transit change nothing: the same confusion matrix and entropy as
    a hand loop over the dataset's int64 labels, in the main process."""
    from maxsq_lib import metrics as M
    from maxsq_lib.engine.build import build_dataset, build_model
    from maxsq_lib.engine.evaluation import normalized_entropy, predict_probabilities

    runs, _ = source_run
    cfg = smoke_cfg(smoke_root, runs)
    model = build_model(cfg)
    model.load_state_dict(torch.load(run_dir_for(cfg, "source") / "final.pt", weights_only=True)["model"])
    model.eval()
    val = build_dataset(cfg, "val")
    hand = M.ConfusionMatrix(cfg.data.num_classes)
    entropy = []
    with torch.no_grad():
        for i in range(len(val)):
            image, label, _ = val[i]
            assert label.dtype == torch.int64  # items keep int64; only batches travel as int16
            probs = predict_probabilities(model, image[None])
            hand.update(probs.max(dim=1).indices, label[None])
            entropy.append(normalized_entropy(probs).sum(dtype=torch.float64) / label.numel())
    results = {w: evaluate(model, val, cfg.data.num_classes, workers=w, progress=False)
               for w in (0, 2)}
    for result in results.values():
        assert torch.equal(result.confusion, hand.matrix)
        assert result.mean_entropy == pytest.approx(float(torch.stack(entropy).mean()), rel=1e-14)
    assert results[0].mean_entropy == results[2].mean_entropy
