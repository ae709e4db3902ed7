"""``amp: auto`` follows the processor, and a run records what it chose."""

from __future__ import annotations

import pytest
import torch

from maxsq_lib import config as C
from maxsq_lib.engine import precision, read_metrics, run_dir_for, train
from maxsq_lib.engine.runs import RunExistsError, check_reusable

from conftest import smoke_cfg  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "none")])
def test_auto_follows_the_cpu_instructions(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: has_bf16)
    amp, reason = precision.resolve_amp("auto", "cpu")
    assert amp == expected
    assert ("has bf16 instructions" if has_bf16 else "no bf16 instructions") in reason
    # explicit settings are kept whatever the processor
    assert precision.resolve_amp("none", "cpu") == ("none", "set explicitly")
    assert precision.resolve_amp("bf16", "cpu")[0] == "bf16"


def test_autocast_contexts(monkeypatch):
    x = torch.randn(2, 3, 8, 8)
    conv = torch.nn.Conv2d(3, 4, 3)
    with precision.autocast("cpu", "none"):
        assert conv(x).dtype == torch.float32
    with precision.autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with precision.autocast("cpu", "auto"):
        assert conv(x).dtype == torch.float32
    with pytest.raises(ValueError, match="amp must be one of"):
        precision.resolve_amp("fp8", "cpu")


def test_config_rejects_an_unknown_precision():
    with pytest.raises(C.ConfigError, match="amp must be one of"):
        C.resolve("smoke", overrides={"amp": "half"})
    assert C.resolve("cpu").amp == "none" and C.resolve("cpu").channels_last is True  # bf16: not adopted


@pytest.mark.parametrize("has_bf16", [False, True])
def test_a_run_records_the_precision_it_chose(monkeypatch, smoke_root, tmp_path, has_bf16):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: has_bf16)
    cfg = smoke_cfg(smoke_root, tmp_path, amp="auto", source={"iterations": 2, "schedule_horizon": 2})
    metrics = train(cfg, "source", progress=False)
    chosen = "bf16" if has_bf16 else "none"
    assert metrics["precision"]["amp"] == chosen
    assert metrics["precision"]["requested"] == "auto"
    assert metrics["precision"]["channels_last"] is cfg.channels_last
    run_dir = run_dir_for(cfg, "source")
    assert C.load_yaml(run_dir / "config.yaml")["amp"] == chosen  # the concrete choice
    assert read_metrics(run_dir)["precision"] == metrics["precision"]
    assert f"precision: {'bf16' if has_bf16 else 'float32'}" in (run_dir / "train.log").read_text()
    timing = metrics["timing"]
    assert timing["step_seconds"] == pytest.approx(timing["train_seconds"] - timing["loop_eval_seconds"])
    assert 0 < timing["loop_eval_seconds"] < timing["train_seconds"] <= timing["wall_seconds"]
    # reused only where `auto` resolves to the same precision; fp32 asked of a bf16 run is refused
    check_reusable(run_dir, cfg.to_dict(), "source")
    other = "bf16" if chosen == "none" else "none"
    with pytest.raises(RunExistsError, match=f"amp: '{chosen}' there, '{other}' now"):
        check_reusable(run_dir, {**cfg.to_dict(), "amp": other}, "source")


def _row(lam, seeds):
    return {"lambda_target": lam, "seeds": {str(s): {"miou": m, "miou_last": last, "gain_over_adabn": g}
                                            for s, (m, last, g) in seeds.items()}}


def test_the_precision_comparison_by_hand():
    from maxsq_lib.course import precision_study as ps

    ref = {"adabn": _row(None, {0: (42.0, 42.0, None), 1: (43.0, 43.0, None)}),
           "maxsquare": _row(0.1, {0: (43.0, 42.8, 1.0), 1: (43.5, 43.4, 0.5)}),
           "maxsquare-lambda1": _row(1.0, {0: (42.0, 40.9, 0.0)}),   # 1.1 below adabn: collapsed
           "maxsquare-lambda3": _row(3.0, {0: (42.0, 20.0, 0.0)})}
    now = {"adabn": _row(None, {0: (42.5, 42.5, None), 1: (43.0, 43.0, None)}),
           "maxsquare": _row(0.1, {0: (43.0, 42.9, 0.5), 1: (43.0, 43.0, 0.0)}),
           "maxsquare-lambda1": _row(1.0, {0: (42.5, 41.6, 0.0)}),   # 0.9 below: not collapsed
           "maxsquare-lambda3": _row(3.0, {0: (42.5, 19.0, 0.0)})}
    assert ps.collapse_lambda(ref, "maxsquare") == 1.0
    assert ps.collapse_lambda(now, "maxsquare") == 3.0
    assert ps.collapse_lambda(now, "minent") is None
    c = ps.compare_with_reference(now, ref)
    row = next(r for r in c["rows"] if r["run"] == "maxsquare")
    # gains 1.0, 0.5 (mean 0.75, std 0.354) against 0.5, 0.0 (mean 0.25, std 0.354): differ by 0.5 > 0.354
    assert row["difference"] == pytest.approx(-0.5)
    assert row["pooled_std"] == pytest.approx(0.25 * 2 ** 0.5)
    assert row["agrees"] is False
    assert next(r for r in c["rows"] if r["run"] == "adabn")["agrees"] is None
    assert c["collapse"] == {"maxsquare": (1.0, 3.0)}
    text = "\n".join(ps.precision_markdown([("bf16", c)], "float32 reference", [], "no model"))
    assert "### bf16" in text and "Reference: float32 reference" in text
    assert "| maxsquare | 0, 1 | 43.25 | 43.00 | +0.75 ± 0.35 | +0.25 ± 0.35 | -0.50 | 0.35 | **no** |" in text
    assert "Gains over adabn that agree: 0 of 1." in text
    assert "| maxsquare | 1 | 3 | **no** |" in text and "Skipped: no model." in text


def test_the_loss_scaler_scales_both_backward_passes(smoke_root, tmp_path):
    """The fp16 wiring on the CPU: with a scaler at 2**4 the gradients of the summed step (source
    and target backward) are exactly 16 × the unscaled ones, so one scaler.step unscales both."""
    from maxsq_lib.engine.build import build_dataset, build_model
    from maxsq_lib.engine.sampling import collate
    from maxsq_lib.engine.trainer import plan_for, train_step

    cfg = smoke_cfg(smoke_root, tmp_path, "maxsquare_iw")
    plan = plan_for(cfg, "adapt")
    images, labels, _ = collate([build_dataset(cfg, "source")[i] for i in range(2)])
    target = collate([build_dataset(cfg, "target")[i] for i in range(2)])
    assert labels.dtype == torch.int16 and int(labels.min()) >= -1
    torch.manual_seed(0)
    model = build_model(cfg)
    grads = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=16.0)):
        model.zero_grad(set_to_none=True)
        logs = train_step(model, plan, images, labels, iter([target]), "cpu", cfg, scaler)
        assert logs["loss"].isfinite()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for plain, scaled in zip(*grads):
        torch.testing.assert_close(scaled, 16 * plain, rtol=1e-6, atol=0)


def test_an_fp16_run_trains_with_loss_scaling(smoke_root, tmp_path):
    source = smoke_cfg(smoke_root, tmp_path, source={"iterations": 2, "schedule_horizon": 2})
    train(source, "source", progress=False)
    cfg = smoke_cfg(smoke_root, tmp_path, "maxsquare", amp="fp16", source={"iterations": 2, "schedule_horizon": 2})
    metrics = train(cfg, "adapt", progress=False)
    assert metrics["precision"]["amp"] == "fp16"
    assert all(r["finite"] for r in metrics["train_log"]) and len(metrics["train_log"]) == 2
    state = torch.load(run_dir_for(cfg, "adapt") / "last.pt", weights_only=True)
    scaler = state["extra"]["scaler"]
    # GradScaler's defaults: 2**16, halved at each overflow, doubled after 2000 clean steps
    assert scaler["scale"] in {2.0 ** k for k in range(17)} and scaler["growth_interval"] == 2000
