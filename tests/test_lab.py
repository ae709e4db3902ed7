"""The lab of notebook 08: a loss registered through the public API, bad losses refused before any
training, and a toy loss trained on the smoke profile and read beside the controls."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import smoke_cfg
from maxsq_lib import methods
from maxsq_lib.course import lab, results
from maxsq_lib.engine import train

TOY = "lab_toy"


def toy_loss(main, aux, params):
    """Minus the mean squared top probability: MaxSquare on the winning class only."""
    return -(torch.softmax(main.float(), 1).amax(1) ** 2).mean(), {"toy_top": main.detach().mean()}


@pytest.fixture(scope="module")
def course_runs(smoke_root, tmp_path_factory):
    """The course's smoke runs the lab reads: the source model and the controls, seed 0."""
    runs = tmp_path_factory.mktemp("lab_runs")
    train(smoke_cfg(smoke_root, runs), "source", progress=False)
    for method in lab.CONTROLS:
        train(smoke_cfg(smoke_root, runs, method), "adapt", progress=False)
    return runs, smoke_cfg(smoke_root, runs)


@pytest.fixture
def registered():
    added = []

    def register(name, loss, **kw):
        added.append(name)
        return methods.register_method(name, loss, replace=True, **kw)

    yield register
    for name in added:
        methods.unregister_method(name)


def test_a_registered_loss_gets_a_lab_run_of_its_own(course_runs, registered):
    runs, cfg = course_runs
    registered(TOY, toy_loss, label="toy")
    matched = lab.lab_config(TOY, cfg)
    assert (matched.adapt.method, matched.adapt.match_gradient_to, matched.adapt.match_gradient_lambda) == \
        (TOY, "maxsquare", 0.1)
    assert lab.run_dir_for(matched, "adapt") == runs / "lab" / "smoke" / "minicity" / f"{TOY}-match-maxsquare" / "seed0"
    assert matched.adapt.source_checkpoint == str(runs / "smoke" / "minicity" / "source_multi" / "seed0" / "final.pt")
    fixed = lab.lab_config(TOY, cfg, lambda_target=0.3)
    assert (fixed.tag, fixed.adapt.lambda_target, fixed.adapt.match_gradient_to) == ("lambda0.3", 0.3, None)
    assert cfg.runs_root == str(runs) and cfg.adapt.method != TOY  # the course's config is not changed
    with pytest.raises(ValueError, match="unknown adaptation method 'nobody'"):
        lab.lab_config("nobody", cfg)


def _per_pixel(main, aux, params):
    return -(main.softmax(1) ** 2).sum(1), {}


def _nan(main, aux, params):
    return main.mean() * float("nan"), {}


def _plain_log(main, aux, params):
    p = main.softmax(1)
    return -(p * p.log()).sum(1).mean(), {}


def _argmax(main, aux, params):
    return (main.argmax(1) == 0).float().mean(), {}


def _constant(main, aux, params):
    return 0 * main.sum(), {}


def _bare(main, aux, params):
    return main.softmax(1).amax(1).mean()


def _bad_log(main, aux, params):
    return main.softmax(1).amax(1).mean(), {"kept": 0.5}


@pytest.mark.parametrize("loss, message", [
    (_per_pixel, r"on the source model's target logits: the loss is \(4, 32, 64\), expected a 0-d tensor"),
    (_nan, r"the loss is nan"),
    (_plain_log, r"on saturated logits \(a collapsed model's\): the loss is nan \(log of a 0 probability"),
    (_argmax, r"the loss has no gradient"),
    (_constant, r"its gradient with respect to the logits is zero everywhere"),
    (_bare, r"it returned Tensor, expected a pair \(loss, logs dict\)"),
    (_bad_log, r"logs \['kept'\]: each must be a 0-d tensor"),
], ids=["non-scalar", "nan", "log-of-zero", "no-gradient", "zero-gradient", "not-a-pair", "bad-logs"])
def test_a_bad_loss_is_refused_in_one_line_before_any_training(course_runs, registered, loss, message):
    runs, cfg = course_runs
    registered("lab_bad", loss)
    with pytest.raises(ValueError, match=message) as refused:
        lab.run_lab("lab_bad", cfg, progress=False)
    text = str(refused.value)
    assert "\n" not in text and text.startswith("loss 'lab_bad' refused") and text.endswith("nothing was trained")
    assert not list((runs / "lab").glob("smoke/minicity/lab_bad*"))


def test_check_loss_passes_the_papers_losses_and_reports_their_gradient(course_runs):
    _, cfg = course_runs
    checked = {m: lab.check_loss(m, cfg) for m in ("minent", "maxsquare", "maxsquare_iw_multi")}
    for values in checked.values():
        assert set(values) == {"the source model's target logits", "random logits",
                               "saturated logits (a collapsed model's)", "gradient_norm"}
        assert all(math.isfinite(v) for v in values.values()) and values["gradient_norm"] > 0
    # at equal λ entropy's logit gradient is larger than MaxSquare's (notebook 03)
    assert checked["minent"]["gradient_norm"] > checked["maxsquare"]["gradient_norm"]
    assert -0.5 <= checked["maxsquare"]["random logits"] < 0  # −½ · mean p², a mean of squares below 1
    with pytest.raises(ValueError, match="has no target loss"):
        lab.check_loss("adabn", cfg)


def test_a_toy_loss_trains_through_the_lab_and_is_read_beside_the_controls(course_runs, registered):
    runs, cfg = course_runs
    registered(TOY, toy_loss, label="toy")
    record = lab.run_lab(TOY, cfg, progress=False)
    assert (record.run, record.method, record.seed) == (f"{TOY}-match-maxsquare", TOY, 0)
    m = record.lambda_matching
    assert (m["reference"], m["reference_lambda"]) == ("maxsquare", 0.1)
    assert math.isclose(record.lambda_target, 0.1 * m["reference_gradient_norm"] / m["gradient_norm"])
    assert [e["iteration"] for e in record.history] == [2, 4]
    assert all(-1 <= e["target_loss"] < 0 for e in record.train_log)  # minus a mean squared probability
    mark = json.loads((lab.run_dir_for(lab.lab_config(TOY, cfg), "adapt") / lab.FINGERPRINT).read_text())
    assert mark["method"] == TOY and "def toy_loss" in mark["source"]

    again = lab.run_lab(TOY, cfg, progress=False)  # reused, not retrained
    assert again.train_seconds == record.train_seconds

    def edited(main, aux, params):
        return -(torch.softmax(main.float(), 1).amax(1) ** 3).mean(), {}

    registered(TOY, edited)
    with pytest.raises(ValueError, match="was trained with another version of 'lab_toy'"):
        lab.run_lab(TOY, cfg, progress=False)
    registered(TOY, toy_loss, label="toy")

    table = lab.lab_table(record, cfg)
    assert [r["run"] for r in table.rows] == [*lab.CONTROLS, record.run]
    mine = {r.run: r.reported_miou for r in results.load_records(runs, "smoke", "minicity")}
    row, ms = table.row(record.run), table.row("maxsquare")
    assert row["mine"] == record.reported_miou
    assert math.isclose(row["mine_gain"], record.reported_miou - mine["adabn"])
    assert math.isclose(table.versus_maxsquare, record.reported_miou - mine["maxsquare"])
    ratios = lab.dose(cfg, [TOY, "maxsquare"])
    assert math.isclose(row["dose"], record.lambda_target * ratios[TOY])
    assert math.isclose(ms["dose"], 0.1 * ratios["maxsquare"]) and table.row("adabn")["dose"] is None
    study = results.load_committed_study()
    reference = study.tables[study.main]
    assert table.row("adabn")["study"] == results.mean_std(results.seed_values(reference["adabn"]).values())
    assert table.resolution == results.resolution(reference) and row["study"] is None
    text = str(table)
    assert f"{100 * row['mine']:.1f}" in text and f"r = {100 * table.resolution:.1f} points" in text

    from maxsq_lib.course.plots.lab import lab_curves

    fig = lab_curves(lab.lab_records(record, cfg), record.run, resolution=table.resolution)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "toy (yours)")
    adabn = 100 * next(r for r in results.load_records(runs, "smoke", "minicity") if r.run == "adabn").last[
        "subsets"]["test"]["miou"]
    expected = [100 * e["subsets"]["test"]["miou"] - adabn for e in (record.before, *record.history)]
    assert list(line.get_xdata()) == [0, 2, 4] and list(line.get_ydata()) == pytest.approx(expected)
