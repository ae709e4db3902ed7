"""The reported numbers: the evaluation ``dev`` chooses, scored on ``test``, and the gains paired
on the seed with the source model and with the ``adabn`` control (hand-computed values); the
records (:mod:`maxsq_lib.course.results`) and the tables laid out from them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from maxsq_lib.course import results as R
from maxsq_lib.course import tables as T

CLASSES = ["road", "car"]


def _evaluation(iteration: int, dev: float, test: float) -> dict:
    def scored(v):
        return {"miou": v, "per_class_iou": {"road": v + 0.1, "car": v - 0.1}, "images": 10}

    return {"iteration": iteration, "miou": (dev + test) / 2, "per_class_iou": {"road": 0.0, "car": 0.0},
            "mean_entropy": 0.1, "subsets": {"dev": scored(dev), "test": scored(test)}}


def _run(run: str, seed: int, evaluations: list[tuple[int, float, float]], stage: str = "adapt",
         iterations: int = 300) -> dict:
    entries = [_evaluation(*e) for e in evaluations]
    return {"stage": stage, "run": run, "method": run.split("-")[0], "benchmark": "minicity", "seed": seed,
            "class_names": CLASSES, "iterations": 0 if run == "adabn" else iterations,
            "lambda_target": None if stage == "source" else 0.1, "bn_mode": "train",
            "before": None if stage == "source" else entries[0],
            "history": [] if stage == "source" or run == "adabn" else entries[1:],
            "last": entries[-1]}


def test_dev_chooses_and_test_reports():
    m = _run("maxsquare", 0, [(0, 0.40, 0.41), (100, 0.45, 0.30), (200, 0.45, 0.50), (300, 0.42, 0.44)])
    choice = R.dev_choice(m)
    # dev ties at 100 and 200: the earlier one; its test value is reported, not the better 0.50
    assert choice["iteration"] == 100 and choice["miou"] == pytest.approx(0.30)
    assert choice["select_miou"] == pytest.approx(0.45) and choice["last_miou"] == pytest.approx(0.44)
    assert choice["per_class_iou"] == {"road": pytest.approx(0.40), "car": pytest.approx(0.20)}
    # the starting point can be chosen: adaptation that only hurts dev is not reported as a gain
    worse = _run("minent", 0, [(0, 0.40, 0.41), (100, 0.30, 0.60)])
    assert R.dev_choice(worse)["iteration"] == 0 and R.dev_choice(worse)["miou"] == pytest.approx(0.41)
    # no subsets: nothing to choose with
    plain = {**m, "last": {"iteration": 300, "miou": 0.4}}
    assert R.dev_choice(plain) is None


def test_source_and_adabn_report_their_result_and_gains_are_paired():
    runs = []
    for seed, (src, ada, loss) in enumerate(((0.30, 0.40, 0.43), (0.32, 0.38, 0.37))):
        # the source run's history would let dev pick an earlier model; its final model is reported
        runs.append(_run("source_multi", seed, [(3000, 0.31, src)], stage="source"))
        # adabn: before = the source model with its own statistics, last = re-estimated (iteration 0)
        runs.append(_run("adabn", seed, [(0, 0.30, src), (0, 0.39, ada)]))
        runs.append(_run("maxsquare", seed, [(0, 0.39, ada), (500, 0.45, loss), (1000, 0.41, 0.1)]))
    table = R.summarize_runs(runs)
    assert table["adabn"]["seeds"][0]["report"]["miou"] == pytest.approx(0.40)
    ms = table["maxsquare"]
    assert [ms["seeds"][s]["report"]["iteration"] for s in (0, 1)] == [500, 500]
    assert ms["seeds"][0]["report"]["gain_over_source"] == pytest.approx(0.13)
    assert ms["seeds"][1]["report"]["gain_over_adabn"] == pytest.approx(-0.01)
    assert ms["report_gain_over_adabn_mean"] == pytest.approx(0.01)
    assert ms["report_gain_over_adabn_std"] == pytest.approx(0.04 / 2 ** 0.5)
    assert table["adabn"]["seeds"][0]["report"]["gain_over_adabn"] is None  # not paired with itself
    assert table["adabn"]["report_gain_over_source_mean"] == pytest.approx(0.08)
    text = T.markdown_tables("minicity", table)
    assert "| maxsquare | 0.1 | train | 43.0 | 37.0 | 40.0 ± 4.2 | +9.0 ± 5.7 | +1.0 ± 2.8 | 500, 500 |" in text

    doc = R.results_json(R.study_of(runs, "cpu"))
    bench = doc["benchmarks"]["minicity"]
    assert bench["splits"]["select"] == "dev" and bench["splits"]["report"] == "test"
    seed0 = bench["runs"]["maxsquare"]["seeds"]["0"]
    assert seed0["miou"] == pytest.approx(43.0) and seed0["iteration"] == 500
    assert seed0["gain_over_adabn"] == pytest.approx(3.0) and seed0["per_class"]["car"] == pytest.approx(33.0)


def test_a_record_reports_what_the_rule_chooses():
    m = _run("maxsquare", 0, [(0, 0.40, 0.41), (100, 0.45, 0.30), (200, 0.42, 0.44)])
    r = R.record(m)
    assert (r.benchmark, r.run, r.seed, r.method, r.stage) == ("minicity", "maxsquare", 0, "maxsquare", "adapt")
    assert r.reported_miou == pytest.approx(0.30) and r.reported_last_miou == pytest.approx(0.44)
    assert r.reported_per_class == {"road": pytest.approx(0.40), "car": pytest.approx(0.20)}
    assert r.gain == pytest.approx(r.last["miou"] - r.before["miou"]) and r.config is None
    plain = R.record({**m, "last": {"iteration": 200, "miou": 0.4, "per_class_iou": {"road": 0.5}}})
    assert plain.report is None and plain.reported_miou == 0.4 and plain.reported_per_class == {"road": 0.5}
    assert R.as_records([m, r])[1] is r and R.as_records([m])[0] == r
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.seed = 1


def test_mean_std_is_the_one_statistic():
    assert R.mean_std([0.1, None, float("nan"), 0.3]) == (pytest.approx(0.2), pytest.approx(0.1 * 2 ** 0.5))
    assert R.mean_std([0.1]) == (pytest.approx(0.1), None) and R.mean_std([]) == (None, None)
    exact = R.mean_std([0.1, 0.2, 0.4], exact=True)
    assert exact == (pytest.approx(0.7 / 3), pytest.approx(R.std([0.1, 0.2, 0.4])))


def _study(gains_over_adabn: dict[str, tuple[float, ...]], profile: str = "cpu") -> "R.Study":
    """A hand-made study: source 0.30 and adabn 0.40 on every seed, each loss at adabn + its gain."""
    runs = []
    for seed in range(len(next(iter(gains_over_adabn.values())))):
        runs.append(_run("source_multi", seed, [(3000, 0.30, 0.30)], stage="source"))
        runs.append(_run("adabn", seed, [(0, 0.30, 0.30), (0, 0.40, 0.40)]))
        for name, gains in gains_over_adabn.items():
            runs.append(_run(name, seed, [(0, 0.40, 0.40), (100, 0.50, 0.40 + gains[seed])]))
    return R.study_of(runs, profile)


def test_resolution_is_three_pooled_seed_stds():
    study = _study({"minent": (0.01, 0.03), "maxsquare": (0.00, 0.04)})
    stds = [0.02 / 2 ** 0.5, 0.04 / 2 ** 0.5]  # std (ddof=1) of two values a, b is |a - b| / sqrt(2)
    expected = 3 * ((stds[0] ** 2 + stds[1] ** 2) / 2) ** 0.5
    assert R.resolution(study.tables["minicity"]) == pytest.approx(expected)
    assert R.resolution(_study({"minent": (0.01,)}).tables["minicity"]) is None  # one seed: no std


def test_compare_says_agrees_or_differs_against_the_resolution(capsys):
    study = _study({"minent": (0.01, 0.03), "maxsquare": (0.00, 0.04)})  # resolution ≈ 0.067
    res = R.resolution(study.tables["minicity"])
    close = _study({"minent": (0.05,)}, profile="smoke")  # 0.05 − 0.02 = 0.03 < 3 × 0.0141
    out = R.compare(close, study, "gain over adabn", "minent", seed=0)
    assert out["agrees"] is True and out["difference"] == pytest.approx(0.03)
    assert out["study_mean"] == pytest.approx(0.02) and out["resolution"] == pytest.approx(res)
    assert out["tolerance"] == pytest.approx(3 * out["study_std"]) and out["study_std"] == pytest.approx(0.02 ** 0.5 / 10)
    line = capsys.readouterr().out
    assert "minent, gain over adabn: yours +5.0" in line and "study +2.0 ± 1.4" in line
    assert "agrees (within 3 × the study's seed std, 4.2)" in line
    far = _study({"minent": (0.12,)}, profile="smoke")  # 0.12 − 0.02 = 0.10 > 0.042
    out = R.compare(far, study, "gain over adabn", "minent", seed=0)
    assert out["agrees"] is False and out["difference"] == pytest.approx(0.10)
    assert "differs by +10.0 (more than 3 × the study's seed std, 4.2)" in capsys.readouterr().out
    # the study's own seed 0 always agrees with itself
    assert R.compare(study, study, "gain over adabn", "minent", seed=0)["agrees"] is True
    # the absolute number and a run the learner lacks
    assert R.compare(far, study, "mIoU", "minent", seed=0)["mine"] == pytest.approx(0.52)
    missing = R.compare(far, study, "mIoU", "maxsquare", seed=0)
    assert missing["mine"] is None and "yours – (no such run in smoke)" in capsys.readouterr().out
    with pytest.raises(KeyError):
        R.compare(far, study, "accuracy", "minent")


def _probe(pixel_share: list[float], gradient_share: list[float] | None) -> dict:
    probe = {"bin_edges": [0.0, 0.5, 0.7, 0.9, 0.99, 1.0], "images": 4, "pixel_share": pixel_share,
             "accuracy": [None] * 5}
    if gradient_share is not None:
        probe["gradient_share"] = gradient_share
    return probe


def test_start_shares_survive_the_round_trip_through_results_json():
    runs = []
    for seed, top in enumerate((0.25, 0.5)):
        runs.append(_run("source_multi", seed, [(3000, 0.30, 0.30)], stage="source"))
        ada = _run("adabn", seed, [(0, 0.30, 0.30), (0, 0.40, 0.40)])
        ada["before"] = {**ada["before"], "probe": _probe([0.4, 0.2, 0.1, 0.2, 0.1], None)}
        ms = _run("maxsquare", seed, [(0, 0.40, 0.40), (100, 0.50, 0.45)])
        ms["before"] = {**ms["before"], "probe": _probe([0.1, 0.1, 0.1, 0.3, 0.4],
                                                        [0.2, 0.3, 0.5 - top, top / 2, top / 2])}
        runs += [ada, ms]
    doc = R.results_json(R.study_of(runs, "cpu"))
    bench = doc["benchmarks"]["minicity"]["runs"]
    # pixels above 0.9: the bins 0.9-0.99 and 0.99-1, in percent; no entry for the source run
    assert bench["maxsquare"]["seeds"]["1"]["start_shares_above_0.9"] == {"pixels": pytest.approx(70.0),
                                                                          "logit_gradient": pytest.approx(50.0)}
    assert bench["adabn"]["seeds"]["0"]["start_shares_above_0.9"] == {"pixels": pytest.approx(30.0)}
    assert "start_shares_above_0.9" not in bench["source_multi"]["seeds"]["0"]
    back = R.study_of(R.records_from_results(json.loads(json.dumps(doc))), "cpu")
    assert R.start_share_values(back, "maxsquare", "logit_gradient") == {0: pytest.approx(0.25), 1: pytest.approx(0.5)}
    assert R.start_share_values(back, "maxsquare", "pixels") == {0: pytest.approx(0.7), 1: pytest.approx(0.7)}
    assert R.start_share_values(back, "adabn", "logit_gradient") == {}
    assert R.start_share_values(back, "adabn", "pixels") == {0: pytest.approx(0.3), 1: pytest.approx(0.3)}
    assert R.start_share_values(back, "source_multi", "pixels") == {}
    # the records read from the runs hold the same numbers
    direct = R.study_of(runs, "cpu")
    assert R.start_share_values(direct, "maxsquare", "logit_gradient") == {0: pytest.approx(0.25), 1: pytest.approx(0.5)}


def test_start_shares_need_iteration_zero_and_a_bin_edge():
    probe = _probe([0.1, 0.1, 0.1, 0.3, 0.4], None)
    assert R.start_shares({"iteration": 100, "probe": probe}) is None
    assert R.start_shares({"iteration": 0}) is None and R.start_shares(None) is None
    assert R.start_shares({"iteration": 0, "probe": probe}, threshold=0.99) == {"pixels": pytest.approx(0.4),
                                                                               "logit_gradient": None}
    with pytest.raises(ValueError, match="threshold=0.8 is not a bin edge"):
        R.start_shares({"iteration": 0, "probe": probe}, threshold=0.8)
