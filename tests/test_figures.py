"""``maxsq figures``: every course figure and results.md from a fabricated runs tree.

The fixture runs are well-formed ``metrics.json`` files with known numbers, so the tests check
what the figures and the text say (bar heights, heatmap cells, formatted means), that the same runs
give identical bytes, and that missing evidence skips a figure with a note instead of crashing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from maxsq_lib.course import figures as F
from maxsq_lib.labels import MINICITY_10, NTHU_13

PROFILE = "smoke"  # a real profile, so the data/checkpoint figures resolve a config and then skip
CLASSES = list(MINICITY_10.class_names)
CITY_CLASSES = list(NTHU_13.class_names)
# target val mIoU of each run at seed 0; seed k adds k points
BASE = {"source_multi": 0.40, "none": 0.41, "minent": 0.43, "maxsquare": 0.45, "maxsquare_iw": 0.46,
        "maxsquare_iw_multi": 0.47, "minent-lambda0.01": 0.44, "minent-lambda0.03": 0.435,
        "minent-lambda0.3": 0.39, "maxsquare-lambda0.01": 0.42, "maxsquare-lambda0.03": 0.44,
        "maxsquare-lambda0.3": 0.43, "maxsquare-match-minent": 0.425, "maxsquare-bn-frozen": 0.38}
LAMBDA = {"minent-lambda0.01": 0.01, "minent-lambda0.03": 0.03, "minent-lambda0.3": 0.3,
          "maxsquare-lambda0.01": 0.01, "maxsquare-lambda0.03": 0.03, "maxsquare-lambda0.3": 0.3,
          "maxsquare-match-minent": 0.57, "maxsquare_iw_multi": 0.09}
# per-class IoU = mIoU + SLOPE[method] * (j - mean j): method-specific per-class gains
SLOPE = {"source_multi": 0.0, "none": 0.001, "minent": 0.01, "maxsquare": -0.01, "maxsquare_iw": 0.005,
         "maxsquare_iw_multi": 0.002}
SHARES = np.array([30, 10, 30, 1, 1, 0.5, 10, 10, 0.5, 7.0])  # % of target val pixels (fence..person rare)
CITY_SOURCE = {"rome": 0.30, "rio": 0.28, "tokyo": 0.26, "taipei": 0.24}
DATE, COMMIT = "2001-02-03", "abc1234"


def _evaluation(miou: float, classes: list[str], iteration: int, slope: float = 0.0) -> dict:
    center = (len(classes) - 1) / 2
    per_class = {c: miou + slope * (j - center) for j, c in enumerate(classes)}
    return {"iteration": iteration, "miou": miou, "pixel_accuracy": 0.8, "per_class_iou": per_class,
            "mean_entropy": 0.3 - miou / 10, "flip": False, "label_resolution": "resized", "images": 20}


def _probe(run: str, iteration: int) -> dict:
    """A probe record (engine.probe) whose numbers follow the iteration: confidence grows, the Multi
    runs keep more pseudo-labels and get fewer right."""
    t = iteration / 100
    pixels = [0.4 - 0.2 * t, 0.3, 0.2, 0.08 + 0.1 * t, 0.02 + 0.1 * t]
    out = {"bin_edges": [0.0, 0.5, 0.7, 0.9, 0.99, 1.0], "images": 20, "pixel_share": pixels,
           "accuracy": [0.3, 0.5, 0.7, 0.9, None]}
    if not run.startswith("none"):
        out["gradient_share"] = [0.5 - 0.1 * t, 0.3, 0.15, 0.04 + 0.05 * t, 0.01 + 0.05 * t]
    if run.startswith("maxsquare_iw_multi"):
        out["pseudo_labels"] = {"kept_fraction": 0.1 + 0.2 * t, "precision": 0.9 - 0.1 * t}
    return out


def _metrics(benchmark: str, run: str, seed: int, miou: float, before: float | None, classes: list[str],
             iterations: int = 100) -> dict:
    method = run.split("-")[0]
    stage = "source" if run.startswith("source") else "adapt"
    slope = SLOPE.get(run, 0.0)
    last = _evaluation(miou, classes, iterations, slope)
    shares = SHARES if len(classes) == 10 else np.full(len(classes), 100 / len(classes))
    last["confusion"] = np.diag(np.round(shares * 100).astype(int)).tolist()
    m = {
        "stage": stage, "run": run, "method": "source" if stage == "source" else method, "profile": PROFILE,
        "benchmark": benchmark, "seed": seed, "class_set": "x", "class_names": classes,
        "iterations": iterations if stage == "adapt" else 400,
        "lambda_target": None if stage == "source" else LAMBDA.get(run, 0.1),
        "lambda_matching": None, "bn_mode": "frozen" if run.endswith("bn-frozen") else "train",
        "before": None if before is None else _evaluation(before, classes, 0, SLOPE["source_multi"]),
        "last": last,
        "last_flip": {**_evaluation(miou + 0.004, classes, iterations), "flip": True},
        "best_on_target_val": _evaluation(miou + 0.01, classes, iterations // 2),
        "label_free_choice": _evaluation(miou - 0.005, classes, iterations),
        "history": [_evaluation((miou + (before or miou)) / 2, classes, iterations // 2),
                    _evaluation(miou, classes, iterations)],
        "train_log": [{"iteration": i, "since": i - 50, "lr": 1e-4, "finite": True, "source_ce": 0.6 - i / 1000,
                       "target_loss": None if method in ("none", "source") else -0.04 - i / 1e5,
                       "loss": 0.5} for i in (50, 100)],
        "timing": {"train_seconds": 10.0}, "peak_rss_mb": 100.0,
        "provenance": {"date": DATE, "commit": COMMIT, "maxsq_lib": "0.1.0", "torch": "2.14.1"},
    }
    if stage == "source":
        m["source_val"] = _evaluation(0.60 + seed / 100, classes, 400)
    elif benchmark == "minicity":
        for entry in [m["before"], *m["history"]]:
            if entry is not None:
                entry["probe"] = _probe(run, entry["iteration"])
    return m


def _write(root: Path, m: dict) -> None:
    folder = root / PROFILE / m["benchmark"] / m["run"] / f"seed{m['seed']}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(m, indent=1))
    (folder / "FINISHED").write_text("")


def build_runs(root: Path, seeds=(0, 1), extras: bool = True) -> Path:
    """A runs tree: the main table for ``seeds``; with ``extras`` also the λ sweep, the matched and
    BN-frozen runs (seed 0), and the four cross-city benchmarks (seed 0)."""
    main = ["source_multi", "none", "minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi"]
    for seed in seeds:
        for run in main:
            before = None if run == "source_multi" else BASE["source_multi"] + seed / 100
            _write(root, _metrics("minicity", run, seed, BASE[run] + seed / 100, before, CLASSES))
    if extras:
        for run in BASE:
            if "-" in run:
                _write(root, _metrics("minicity", run, 0, BASE[run], BASE["source_multi"], CLASSES))
        _write(root, _metrics("minicity_nthu_rome", "source_multi", 0, CITY_SOURCE["rome"], None, CITY_CLASSES))
        for city, source in CITY_SOURCE.items():
            for run, gain in (("maxsquare", 0.03), ("maxsquare_iw", 0.04)):
                _write(root, _metrics(f"minicity_nthu_{city}", run, 0, source + gain, source, CITY_CLASSES))
    return root


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


RUN_FIGURES = ["results_minicity.png", "per_class_gain.png", "training_curves.png", "lambda_sweep.png",
               "dose_curves.png", "selection_rules.png", "bn_mode.png", "cross_city.png", "flip.png", "gradient_curves.png",
               "gradient_shares_during.png", "pseudo_labels.png"]
DATA_FIGURES = ["class_frequencies.png", "sample_grid.png", "qualitative.png", "gradient_map.png", "reliability.png"]


@pytest.fixture(scope="module")
def full_outputs(tmp_path_factory):
    """The full fixture tree regenerated twice into one folder (holding an unrelated file), with
    the hashes of every file after each run."""
    base = tmp_path_factory.mktemp("full")
    runs = build_runs(base / "runs")
    out = base / "figs"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    no_data = str(base / "no-data")
    written_1 = F.regenerate(runs_root=runs, profile=PROFILE, data_root=no_data, out_dir=out)
    hashes_1 = _hashes(out)
    written_2 = F.regenerate(runs_root=runs, profile=PROFILE, data_root=no_data, out_dir=out)
    return runs, out, (written_1, hashes_1), (written_2, _hashes(out))


def test_regenerate_is_byte_identical(full_outputs):
    _, out, (written_1, hashes_1), (written_2, hashes_2) = full_outputs
    assert written_1 == written_2 == [out / name for name in RUN_FIGURES + ["results.md", "results.json"]]
    assert set(hashes_1) == set(RUN_FIGURES) | {"results.md", "results.json", "notes.txt"}
    assert hashes_1 == hashes_2
    assert (out / "notes.txt").read_text() == "keep me"  # nothing else in the folder is touched
    assert not list(out.glob(".*"))  # atomic writes leave no temporary files
    for name in RUN_FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"tIME" not in data and b"Software" not in data


def test_results_json_holds_every_run_per_seed(full_outputs):
    _, out, *_ = full_outputs
    data = json.loads((out / "results.json").read_text())
    assert data["profile"] == PROFILE and data["commit"] == COMMIT
    main = data["benchmarks"]["minicity"]
    assert set(main["splits"]) >= {"select", "report"}
    ms = main["runs"]["maxsquare"]
    assert (ms["method"], ms["iterations"]) == ("maxsquare", 100)
    assert ms["seeds"]["0"]["miou"] == pytest.approx(45.0) and ms["seeds"]["1"]["miou"] == pytest.approx(46.0)
    assert ms["seeds"]["0"]["gain"] == pytest.approx(5.0)
    assert set(ms["seeds"]["0"]["per_class"]) == set(CLASSES)
    assert {"Rome", "Rio"} <= {b.split("_")[-1].capitalize() for b in data["benchmarks"] if "nthu" in b}


def test_results_md_quotes_the_runs(full_outputs):
    _, first, *_ = full_outputs
    text = (first / "results.md").read_text()
    assert f"`{PROFILE}`" in text and DATE in text and f"`{COMMIT}`" in text
    assert datetime.date.today().isoformat() not in text  # the runs' dates, not today's
    assert "seeds 0, 1" in text
    assert "iterations, adapt stage: 100" in text and "iterations, source stage: 400" in text
    # maxsquare: 45.0 and 46.0 -> mean 45.5, std 0.7; paired gain +5.0 on both seeds
    assert "| maxsquare | 45.0 | 46.0 | 45.5 ± 0.7 | +5.0 ± 0.0 |" in text
    assert "| MaxSquare | 44.3 | +7.4 | 45.5 ± 0.7 | +5.0 ± 0.0 |" in text  # beside the paper
    assert "| Rome | 51.0 | 53.9 | 54.5 |" in text and "Chen, Xue, Cai, ICCV 2019" in text
    for name in RUN_FIGURES:
        assert f"- `{name}`: {F.FIGURES[name]}" in text
    for name in DATA_FIGURES:
        assert f"- `{name}`: skipped (no data under" in text


def test_evidence_is_computed_from_the_numbers(full_outputs):
    _, first, *_ = full_outputs
    text = (first / "results.md").read_text().split("## What the evidence here supports")[1]
    assert "MaxSquare +5.0 ± 0.0" in text and "MinEnt +3.0 ± 0.0" in text
    assert "MaxSquare − MinEnt (paired per seed) is +2.0 ± 0.0 points; MaxSquare is ahead on 2 of 2" in text
    assert "holds for the means here" in text  # 43.5 < 45.5 < 46.5 < 47.5
    # matched run 42.5 vs MinEnt 43.0 on seed 0; tolerance = larger std over seeds = 0.7 -> level
    assert "MaxSquare reaches 42.5 vs MinEnt 43.0 on one seed (seed 0)" in text
    assert "not distinguishable" in text
    assert "MinEnt is best at λ_T = 0.01 (44.0)" in text
    assert "beats the source model in 4 of 4 cities (mean gain +3.0 points)" in text
    assert "+IW beats MaxSquare in 4 of 4" in text
    assert "frozen reaches 38.0 vs 45.0" in text and "frozen is behind train mode" in text


def test_gradient_shares_during_adaptation_draw_the_probe_records(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=True)
    course = F.load_course_runs(runs, PROFILE)
    table, metrics = course.tables["minicity"], course.by_benchmark["minicity"]
    assert F._run_at(table, "minent", "table") == "minent" and F._run_at(table, "minent", 0.3) == "minent-lambda0.3"
    assert F._run_at(table, "minent", 7.0) is None
    fig = F.gradient_shares_during_figure(metrics, table, 0, lambdas=("table", 0.3))
    first = fig.axes[0]  # MinEnt at the table's λ: the stacked bands end at the cumulative gradient shares
    assert first.get_title() == "MinEnt, λ_T 0.1"
    # dashed lines: cumulative pixel shares at iterations 0, 50, 100 (bin 0: 0.4 - 0.2 t)
    dashed = [line for line in first.get_lines() if line.get_linestyle() == "--"]
    assert list(dashed[0].get_xdata()) == [0, 50, 100]
    assert np.allclose(dashed[0].get_ydata(), [40, 30, 20])
    # the λ 0.3 column has a run; maxsquare_iw has no 0.3 run in the fixture: "no run"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("no run at λ_T 0.3") == 2  # maxsquare_iw and maxsquare_iw_multi at λ 0.3
    F.plt.close(fig)
    # a λ no method was run at gets no column
    fig = F.gradient_shares_during_figure(metrics, table, 0, lambdas=("table", 7.0))
    assert len(fig.axes) == 4 and not [t for ax in fig.axes for t in ax.texts]
    F.plt.close(fig)


def test_pseudo_label_figure_plots_kept_fraction_and_precision(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=True)
    course = F.load_course_runs(runs, PROFILE)
    fig = F.pseudo_labels_figure(course.by_benchmark["minicity"], course.tables["minicity"], 0)
    kept, precision = fig.axes[0].get_lines()[0], fig.axes[1].get_lines()[0]
    assert np.allclose(kept.get_ydata(), [10, 20, 30]) and np.allclose(precision.get_ydata(), [90, 85, 80])
    assert np.allclose(fig.axes[1].get_lines()[1].get_ydata(), [80, 80, 80])  # dotted: pixel accuracy
    F.plt.close(fig)
    stripped = [{**m, "before": None, "history": []} for m in course.by_benchmark["minicity"]]
    with pytest.raises(F.MissingEvidence, match="pseudo-label probe records"):
        F.pseudo_labels_figure(stripped, course.tables["minicity"], 0)
    with pytest.raises(F.MissingEvidence, match="has probe records"):
        F.gradient_shares_during_figure(stripped, course.tables["minicity"], 0)


def test_only_main_table_skips_the_rest(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=False)
    written = F.regenerate(runs_root=runs, profile=PROFILE, data_root=str(tmp_path / "nd"), out_dir=tmp_path / "f")
    names = {p.name for p in written}
    skipped = {"lambda_sweep.png", "dose_curves.png", "bn_mode.png", "cross_city.png"}
    assert names == set(RUN_FIGURES) - skipped | {"results.md", "results.json"}
    text = (tmp_path / "f" / "results.md").read_text()
    assert "- `lambda_sweep.png`: skipped (no λ-sweep runs" in text
    assert "- `bn_mode.png`: skipped (no maxsquare-bn-frozen run in minicity)" in text
    assert "- `cross_city.png`: skipped (no cross-city benchmarks" in text
    assert "one seed (seed 0); with one seed there is no estimate of seed noise" in text
    assert not (tmp_path / "f" / "cross_city.png").exists()


def test_cross_city_only_still_works(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(), extras=True)
    for folder in (runs / PROFILE / "minicity").iterdir():  # leave only the cross-city benchmarks
        for seed in folder.iterdir():
            (seed / "FINISHED").unlink()  # unfinished runs are not read
    written = F.regenerate(runs_root=runs, profile=PROFILE, data_root=None, out_dir=tmp_path / "f")
    assert [p.name for p in written] == ["cross_city.png", "gradient_curves.png", "results.md", "results.json"]
    text = (tmp_path / "f" / "results.md").read_text()
    assert "- `results_minicity.png`: skipped (no main-table benchmark" in text


def test_empty_runs_folder_is_a_clear_error(tmp_path):
    (tmp_path / "runs" / PROFILE).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no finished runs under .*smoke.*metrics\.json"):
        F.regenerate(runs_root=tmp_path / "runs", profile=PROFILE, out_dir=tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_results_figure_bars_are_the_means(full_outputs):
    runs, *_ = full_outputs
    course = F.load_course_runs(runs, PROFILE)
    assert course.main == "minicity" and list(course.cities) == ["Rome", "Rio", "Tokyo", "Taipei"]
    fig = F.results_figure(course.tables["minicity"])
    left, right = fig.axes
    heights = [round(p.get_height(), 6) for p in left.patches]
    assert heights == [40.5, 41.5, 43.5, 45.5, 46.5, 47.5]  # source, none, minent, ..., multi
    # right panel: paper gains (hatched, 4 methods) and ours (5 methods), in drawing order
    gains = [round(p.get_height(), 6) for p in right.patches]
    assert gains == [1.0, 5.3, 3.0, 7.4, 5.0, 8.3, 6.0, 9.5, 7.0]


def test_per_class_gain_heatmap_cells(full_outputs):
    runs, *_ = full_outputs
    course = F.load_course_runs(runs, PROFILE)
    fig = F.per_class_gain_figure(course.by_benchmark["minicity"])
    mesh = fig.axes[0].collections[0]  # seaborn's heatmap: one QuadMesh, a cell per value
    rows = ("none",) + F.LOSS_METHODS  # without an adabn run, paired with each run's before
    cells = np.ma.filled(mesh.get_array(), np.nan).reshape(len(rows), len(CLASSES))
    center = (len(CLASSES) - 1) / 2
    for row, method in enumerate(rows):
        expected = [100 * (BASE[method] - BASE["source_multi"] + SLOPE[method] * (j - center))
                    for j in range(len(CLASSES))]
        np.testing.assert_allclose(cells[row], expected, atol=1e-9)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[4].startswith("pole*") and labels[0].startswith("road\n")  # pole is rare (1 %)


def test_cross_city_source_is_the_before_evaluation(full_outputs):
    runs, *_ = full_outputs
    course = F.load_course_runs(runs, PROFILE)
    values = F.cross_city_values({c: course.tables[b] for c, b in course.cities.items()})
    assert values["Rio"]["source"] == {0: pytest.approx(0.28)}
    assert values["Rio"]["maxsquare_iw"] == {0: pytest.approx(0.32)}


@pytest.mark.parametrize("p", [0.6, 0.9, 0.99])
def test_gradient_curves_match_the_analytic_derivatives(p):
    g = F.binary_gradient_curves([p])
    assert g["maxsquare_dp"][0] == pytest.approx(-(2 * p - 1), abs=1e-12)
    assert g["entropy_dp"][0] == pytest.approx(math.log((1 - p) / p), abs=1e-12)
    assert g["maxsquare_dz"][0] == pytest.approx(-(2 * p - 1) * p * (1 - p), abs=1e-12)
    assert g["entropy_dz"][0] == pytest.approx(math.log((1 - p) / p) * p * (1 - p), abs=1e-12)


def test_gradient_curves_at_0_9_and_shape():
    g = F.binary_gradient_curves(np.array([0.5, 0.9]))
    assert abs(g["maxsquare_dp"][1]) == pytest.approx(0.8) and abs(g["entropy_dp"][1]) == pytest.approx(math.log(9))
    assert g["entropy_dz"][0] == pytest.approx(0.0, abs=1e-12)  # no logit gradient at p = 0.5
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        F.binary_gradient_curves([1.0])
    fig = F.gradient_curves_figure(np.linspace(0.55, 0.95, 5))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), np.abs(np.log((1 - np.linspace(0.55, 0.95, 5))
                                                                              / np.linspace(0.55, 0.95, 5))))
