"""``maxsq figures``: every course figure and results.md from a fabricated runs tree, the registry
of figures, and the records read back from ``results.json``.

The fixture runs are well-formed ``metrics.json`` files with known numbers, so the tests check
what the figures and the text say (bar heights, heatmap cells, formatted means), that the same runs
give identical bytes, and that missing evidence skips a figure with a note instead of crashing.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from maxsq_lib.config import LOSS_METHODS
from maxsq_lib.course import plots
from maxsq_lib.course import results as R
from maxsq_lib.course import series
from maxsq_lib.course.analysis import binary_gradient_curves
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
    written_1 = plots.regenerate(runs_root=runs, profile=PROFILE, data_root=no_data, out_dir=out)
    hashes_1 = _hashes(out)
    written_2 = plots.regenerate(runs_root=runs, profile=PROFILE, data_root=no_data, out_dir=out)
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
        assert f"- `{name}`: {plots.FIGURES[name]}" in text
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
    study = R.load_study(runs, PROFILE)
    table, metrics = study.tables["minicity"], study.records["minicity"]
    assert series.run_at(table, "minent", "table") == "minent" and series.run_at(table, "minent", 0.3) == "minent-lambda0.3"
    assert series.run_at(table, "minent", 7.0) is None
    fig = plots.gradients.gradient_shares_during(metrics, table, 0, lambdas=("table", 0.3))
    first = fig.axes[0]  # MinEnt at the table's λ: the stacked bands end at the cumulative gradient shares
    assert first.get_title() == "MinEnt, λ_T 0.1"
    # dashed lines: cumulative pixel shares at iterations 0, 50, 100 (bin 0: 0.4 - 0.2 t)
    dashed = [line for line in first.get_lines() if line.get_linestyle() == "--"]
    assert list(dashed[0].get_xdata()) == [0, 50, 100]
    assert np.allclose(dashed[0].get_ydata(), [40, 30, 20])
    # the λ 0.3 column has a run; maxsquare_iw has no 0.3 run in the fixture: "no run"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("no run at λ_T 0.3") == 2  # maxsquare_iw and maxsquare_iw_multi at λ 0.3
    plt.close(fig)
    # a λ no method was run at gets no column
    fig = plots.gradients.gradient_shares_during(metrics, table, 0, lambdas=("table", 7.0))
    assert len(fig.axes) == 4 and not [t for ax in fig.axes for t in ax.texts]
    plt.close(fig)


def test_pseudo_label_figure_plots_kept_fraction_and_precision(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=True)
    study = R.load_study(runs, PROFILE)
    fig = plots.adaptation.pseudo_labels(study.records["minicity"], study.tables["minicity"], 0)
    kept, precision = fig.axes[0].get_lines()[0], fig.axes[1].get_lines()[0]
    assert np.allclose(kept.get_ydata(), [10, 20, 30]) and np.allclose(precision.get_ydata(), [90, 85, 80])
    assert np.allclose(fig.axes[1].get_lines()[1].get_ydata(), [80, 80, 80])  # dotted: pixel accuracy
    plt.close(fig)
    stripped = [dataclasses.replace(r, before=None, history=()) for r in study.records["minicity"]]
    with pytest.raises(plots.MissingEvidence, match="pseudo-label probe records"):
        plots.adaptation.pseudo_labels(stripped, study.tables["minicity"], 0)
    with pytest.raises(plots.MissingEvidence, match="has probe records"):
        plots.gradients.gradient_shares_during(stripped, study.tables["minicity"], 0)


def test_only_main_table_skips_the_rest(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=False)
    written = plots.regenerate(runs_root=runs, profile=PROFILE, data_root=str(tmp_path / "nd"), out_dir=tmp_path / "f")
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
    written = plots.regenerate(runs_root=runs, profile=PROFILE, data_root=None, out_dir=tmp_path / "f")
    assert [p.name for p in written] == ["cross_city.png", "gradient_curves.png", "results.md", "results.json"]
    text = (tmp_path / "f" / "results.md").read_text()
    assert "- `results_minicity.png`: skipped (no main-table benchmark" in text


def test_empty_runs_folder_is_a_clear_error(tmp_path):
    (tmp_path / "runs" / PROFILE).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no finished runs under .*smoke.*metrics\.json"):
        plots.regenerate(runs_root=tmp_path / "runs", profile=PROFILE, out_dir=tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_results_figure_bars_are_the_means(full_outputs):
    runs, *_ = full_outputs
    study = R.load_study(runs, PROFILE)
    assert study.main == "minicity" and list(study.cities) == ["Rome", "Rio", "Tokyo", "Taipei"]
    fig = plots.evaluation.main_results(study.tables["minicity"])
    left, right = fig.axes
    heights = [round(p.get_height(), 6) for p in left.patches]
    assert heights == [40.5, 41.5, 43.5, 45.5, 46.5, 47.5]  # source, none, minent, ..., multi
    # right panel: paper gains (hatched, 4 methods) and ours (5 methods), in drawing order
    gains = [round(p.get_height(), 6) for p in right.patches]
    assert gains == [1.0, 5.3, 3.0, 7.4, 5.0, 8.3, 6.0, 9.5, 7.0]


def test_per_class_gain_heatmap_cells(full_outputs):
    runs, *_ = full_outputs
    study = R.load_study(runs, PROFILE)
    fig = plots.evaluation.per_class_gain(study.records["minicity"])
    mesh = fig.axes[0].collections[0]  # seaborn's heatmap: one QuadMesh, a cell per value
    rows = ("none",) + LOSS_METHODS  # without an adabn run, paired with each run's before
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
    study = R.load_study(runs, PROFILE)
    values = series.cross_city_values({c: study.tables[b] for c, b in study.cities.items()})
    assert values["Rio"]["source"] == {0: pytest.approx(0.28)}
    assert values["Rio"]["maxsquare_iw"] == {0: pytest.approx(0.32)}


def test_gradient_curves_at_0_9_and_shape():
    g = binary_gradient_curves(np.array([0.5, 0.9]))
    assert abs(g["maxsquare_dp"][1]) == pytest.approx(0.8) and abs(g["entropy_dp"][1]) == pytest.approx(math.log(9))
    assert g["entropy_dz"][0] == pytest.approx(0.0, abs=1e-12)  # no logit gradient at p = 0.5
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        binary_gradient_curves([1.0])
    fig = plots.gradients.gradient_curves(np.linspace(0.55, 0.95, 5))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), np.abs(np.log((1 - np.linspace(0.55, 0.95, 5))
                                                                              / np.linspace(0.55, 0.95, 5))))


def test_every_figure_is_registered_once_in_results_md_order():
    specs = plots.registered()
    assert [s.name for s in specs] == list(plots.FIGURES) == RUN_FIGURES[:9] + [
        "gradient_curves.png", "class_frequencies.png", "sample_grid.png", "qualitative.png", "gradient_map.png",
        "reliability.png", "gradient_shares_during.png", "pseudo_labels.png"]
    assert len({s.order for s in specs}) == len(specs)
    # each is drawn by a function of its chapter's module, where it is registered
    assert plots.REGISTRY["lambda_sweep.png"].draw is plots.adaptation.lambda_sweep
    assert plots.REGISTRY["cross_city.png"].needs == ("tables_by_city",)
    with pytest.raises(ValueError, match="unknown needs"):
        plots.figure("x.png", "x", needs=("tabel",))
    with pytest.raises(ValueError, match="registered twice"):
        plots.figure("flip.png", "again")(lambda: None)


def test_a_new_figure_registers_with_one_decorator(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=False)

    @plots.figure("zz_seeds.png", "the seeds of the main table.", needs=("table", "benchmark"), order=99)
    def seeds_figure(table, benchmark):
        fig, ax = plt.subplots()
        ax.set_title(f"{benchmark}: {sorted(table['maxsquare']['seeds'])}")
        return fig

    try:
        written = plots.regenerate(runs_root=runs, profile=PROFILE, data_root=str(tmp_path / "nd"),
                                   out_dir=tmp_path / "f")
    finally:
        del plots.REGISTRY["zz_seeds.png"]
    assert [p.name for p in written][-3:] == ["zz_seeds.png", "results.md", "results.json"]
    assert "- `zz_seeds.png`: the seeds of the main table." in (tmp_path / "f" / "results.md").read_text()


def test_records_read_back_from_results_json(full_outputs):
    runs, out, *_ = full_outputs
    from_runs = R.load_study(runs, PROFILE)
    from_json = R.load_committed_study(out / "results.json")
    assert from_json.main == from_runs.main == "minicity" and from_json.cities == from_runs.cities
    assert from_json.runs_root is None and from_runs.runs_root == runs
    recorded = {(r.benchmark, r.run, r.seed): r for r in from_runs.all_records()}
    read = {(r.benchmark, r.run, r.seed): r for r in from_json.all_records()}
    assert read.keys() == recorded.keys()
    for key, r in read.items():
        assert r.reported_miou == pytest.approx(recorded[key].reported_miou, abs=1e-12)
        assert (r.gain is None) == (recorded[key].gain is None)
        assert r.gain is None or r.gain == pytest.approx(recorded[key].gain, abs=1e-12)
        assert dict(r.reported_per_class) == pytest.approx(dict(recorded[key].reported_per_class), abs=1e-12)
    ms = from_json.tables["minicity"]["maxsquare"]
    assert ms["miou_mean"] == pytest.approx(0.455) and ms["gain_mean"] == pytest.approx(0.05)


def test_the_committed_study_loads_as_records():
    """figures/results.json: dev chooses, test reports, gains paired per seed (the file's own numbers)."""
    path = Path(__file__).resolve().parents[1] / "figures" / "results.json"
    data = json.loads(path.read_text())
    study = R.load_committed_study(path)
    assert study.main == "minicity" and list(study.cities) == ["Rome", "Rio", "Tokyo", "Taipei"]
    rows = data["benchmarks"]["minicity"]["runs"]["maxsquare"]["seeds"]
    ms = next(r for r in study.records["minicity"] if r.run == "maxsquare" and r.seed == 0)
    assert ms.report["iteration"] == rows["0"]["iteration"]
    assert 100 * ms.reported_miou == pytest.approx(rows["0"]["miou"])
    table = study.tables["minicity"]["maxsquare"]["seeds"]
    for seed, row in rows.items():
        assert 100 * table[int(seed)]["report"]["gain_over_adabn"] == pytest.approx(row["gain_over_adabn"])
        assert 100 * table[int(seed)]["report"]["gain_over_source"] == pytest.approx(row["gain_over_source"])


def test_binary_curves_take_p_as_the_predicted_class():
    """p is the probability of the class whose logit z is differentiated: above 0.5 it is the
    predicted class, and raising its logit lowers both losses (negative gradients)."""
    g = binary_gradient_curves(np.array([0.7, 0.9]))
    assert (g["entropy_dz"] < 0).all() and (g["maxsquare_dz"] < 0).all()
    fig = plots.gradients.gradient_curves(np.array([0.6, 0.9]))
    assert fig.axes[0].get_xlabel() == "p, probability of the predicted class (binary)"
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), np.abs(binary_gradient_curves([0.6, 0.9])["maxsquare_dz"]))
    plt.close(fig)


def test_waterfall_steps_are_the_committed_paired_gains():
    """Notebook 05's waterfall: its steps (and the bars drawn) are the study's paired gains."""
    study = R.load_committed_study()
    table = study.tables["minicity"]
    steps = plots.evaluation.waterfall_steps(table)
    assert [s[0] for s in steps] == ["source", "adabn", "none", *LOSS_METHODS]
    assert 100 * steps[0][2] == pytest.approx(33.6, abs=0.05)                  # the source level
    assert 100 * steps[1][2] == pytest.approx(8.9, abs=0.05)                   # AdaBN over source
    adabn = steps[1][1] + steps[1][2]
    for name, base, height, per_seed in steps[2:]:
        assert base == pytest.approx(adabn)
        assert per_seed == R.reported_gains(table, name, "adabn")
        assert height == pytest.approx(np.mean(list(per_seed.values())))
    assert 100 * steps[-1][2] == pytest.approx(1.0, abs=0.05)                  # +IW+Multi: +1.0 ± 0.3
    fig = plots.evaluation.waterfall(table, resolution=R.resolution(table))
    bars = [p for p in fig.axes[0].patches if p.get_width() == pytest.approx(0.65)]
    assert [b.get_height() for b in bars] == pytest.approx([100 * s[2] for s in steps])
    plt.close(fig)


def test_dose_points_are_lambda_times_the_committed_ratio():
    study = R.load_committed_study()
    table, dose = study.tables["minicity"], R.committed_dose()
    points = plots.evaluation.dose_points(table, dose)
    assert set(points) == set(LOSS_METHODS) and all(len(p) == 5 for p in points.values())
    d, lam, y = points["maxsquare"][-1]
    assert lam == 3 and d == pytest.approx(3 * dose["methods"]["maxsquare"]["ratio"])
    assert 100 * y == pytest.approx(21.9, abs=0.05)                            # collapsed at the end
    assert 100 * points["maxsquare_iw"][3][2] == pytest.approx(37.1, abs=0.05)  # IW at λ_T 1
    fig = plots.evaluation.dose_response(table, dose, resolution=R.resolution(table))
    assert len([l for l in fig.axes[0].lines if len(l.get_xdata()) == 5]) == 4  # one curve per loss
    plt.close(fig)


def test_method_curves_start_at_before_with_the_source_model_and_adabn_apart(tmp_path):
    runs = build_runs(tmp_path / "runs", seeds=(0,), extras=False)
    _write(runs, _metrics("minicity", "adabn", 0, 0.415, 0.40, CLASSES, iterations=0))
    records = R.load_records(runs, PROFILE, "minicity")
    fig = plots.adaptation.method_curves(records, "maxsquare", 0)
    ax = fig.axes[0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    curve = lines["maxsquare"]
    run = next(r for r in records if r.run == "maxsquare")
    assert curve.get_ydata()[0] == pytest.approx(100 * run.before_miou)        # the run's start, 40.0
    assert list(curve.get_xdata()) == [0, 50, 100]
    assert list(curve.get_ydata()) == pytest.approx([40.0, 42.5, 45.0])
    assert lines["none (the loop, no target loss)"].get_ydata()[-1] == pytest.approx(41.0)
    assert lines["AdaBN (no step)"].get_ydata()[0] == pytest.approx(41.5)     # a horizontal reference
    source = next(c for c in ax.collections if c.get_label() == "source model")
    assert source.get_offsets().tolist() == [[0.0, pytest.approx(40.0)]]      # iteration 0, its own marker
    assert fig.axes[2].get_lines()[0].get_ydata().tolist() == pytest.approx([-0.0405, -0.041])
    plt.close(fig)
    with pytest.raises(plots.MissingEvidence, match="no run minent-lambda1 of seed 0"):
        plots.adaptation.method_curves(records, "minent-lambda1", 0)


def test_frequency_difference_draws_the_source_mix_and_the_differences_in_points():
    freqs = {"source": np.array([0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
             "target": np.array([0.4, 0.3, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
    fig = plots.data.frequency_difference(freqs, MINICITY_10)
    ref_ax, diff_ax = fig.axes[:2]
    widths = [p.get_width() for p in ref_ax.patches]
    assert widths[:3] == pytest.approx([50.0, 30.0, 20.0]) and all(np.isnan(widths[3:]))  # never drawn: no bar
    assert [p.get_width() for p in diff_ax.patches][:3] == pytest.approx([-10.0, 0.0, 10.0])
    assert ref_ax.get_yticklabels()[0].get_text() == "road" and ref_ax.get_yticks()[0] == 9  # road on top
    plt.close(fig)
    with pytest.raises(ValueError, match="two domains"):
        plots.data.frequency_difference({"source": freqs["source"]}, MINICITY_10)
    with pytest.raises(ValueError, match="shape"):
        plots.data.frequency_difference({"a": np.ones(3), "b": np.ones(3)}, MINICITY_10)


def test_calibration_curve_and_shift_strip_draw_what_they_are_given():
    curve = {0.0: 0.66, 0.5: 0.32, 1.0: 0.17}
    fig = plots.data.calibration_curve(curve, 0.67, 0.5, images=100, profile="cpu")
    line, source, default = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0] and list(line.get_ydata()) == pytest.approx([66, 32, 17])
    assert source.get_ydata()[0] == pytest.approx(67.0) and default.get_xdata()[0] == 0.5
    assert fig.axes[0].get_legend() is None                                   # labels on the lines instead
    plt.close(fig)
    image = np.zeros((4, 8, 3), np.uint8)
    label = np.full((4, 8), 7, np.uint8)                                      # Cityscapes id 7: road
    fig = plots.data.shift_strip(image, [image, image], label, [0.0, 0.5], default_shift=0.5)
    assert [ax.get_title() for ax in fig.axes[1:3]] == ["shift 0", "shift 0.5\n(default)"]
    assert len(fig.axes) == 4
    plt.close(fig)


def test_compare_city_reads_one_seed_against_the_main_benchmark_resolution(tmp_path, capsys):
    study = R.load_committed_study()                     # one seed per city, three on the main benchmark
    res = R.resolution(study.tables[study.main])
    same = plots.cross_city.compare_city(study, study, "Tokyo", "gain over adabn", "maxsquare", seed=0)
    assert same["difference"] == 0 and same["agrees"] and same["tolerance"] == pytest.approx(res)
    assert 100 * same["mine"] == pytest.approx(0.78, abs=0.01)          # Tokyo: MaxSquare − AdaBN
    assert "agrees (within the resolution, one seed per city, 0.7)" in capsys.readouterr().out
    mine = R.load_study(build_runs(tmp_path / "runs", seeds=(0,)), PROFILE)  # Rome: source 30.0, MaxSquare 33.0
    other = plots.cross_city.compare_city(mine, study, "Rome", "gain over source", "maxsquare", seed=0)
    assert 100 * other["mine"] == pytest.approx(3.0) and 100 * other["study_mean"] == pytest.approx(4.47, abs=0.01)
    assert not other["agrees"] and "differs by -1.5" in capsys.readouterr().out
    missing = plots.cross_city.compare_city(mine, study, "Rome", "gain over adabn", "maxsquare", seed=0)
    assert missing["mine"] is None and missing["agrees"] is None              # no adabn run in mine
    with pytest.raises(KeyError, match="quantity"):
        plots.cross_city.compare_city(mine, study, "Rome", "gain over none", "maxsquare")


def test_city_gains_draws_three_panels_on_one_scale_with_the_band():
    study = R.load_committed_study()
    values = plots.cross_city.city_values(study)
    fig = plots.cross_city.city_gains(values, values, resolution_band=0.007)
    over_source, beyond, paper = fig.axes[:3]
    assert over_source.get_ylim() == beyond.get_ylim() == paper.get_ylim()     # one y scale
    bars = [p for p in over_source.patches if p.get_width() < 0.5]              # the band is a wider patch
    assert bars[0].get_height() == pytest.approx(4.69, abs=0.01)               # Rome, AdaBN over source
    assert bars[3].get_height() == pytest.approx(8.90, abs=0.01)               # Taipei
    assert [round(p.get_height(), 1) for p in paper.patches][:4] == [2.9, 3.1, 1.9, 3.5]   # paper MaxSquare
    crosses = [l for l in beyond.get_lines() if l.get_marker() == "x"]
    assert len(crosses) == 3                                                   # your runs, one line per run
    assert all(ax.get_legend() is None for ax in fig.axes)                     # legend below, not over data
    plt.close(fig)
    with pytest.raises(plots.MissingEvidence):
        plots.cross_city.city_gains({})


# ------------------------------------------------------------------------------------ notebooks 02 and 09 (plots.source)

def test_module_shapes_follow_output_stride_8_with_ceil_mode():
    import torch
    from maxsq_lib import models
    from maxsq_lib.course.plots import source

    torch.manual_seed(0)
    net = models.deeplabv2_from_preset("minicity", 10)
    shapes = source.module_shapes(net, 64, 128)
    assert shapes["conv1"] == (12, 32, 64) and shapes["maxpool"] == (12, 17, 33)   # the pool rounds up
    assert shapes["layer4"] == (384, 9, 17) and shapes["layer4"][1:] == models.feature_size(64, 128)
    assert shapes["layer5"] == shapes["layer6"] == (10, 9, 17) and shapes["logits"] == (10, 64, 128)
    fig = source.network_diagram(net, 64, 128)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "384×9×17" in texts and f"{sum(p.numel() for p in net.layer6.parameters()):,} p" in texts
    assert len(fig.axes[0].patches) == 8
    plt.close(fig)


def test_class_gap_sorts_by_the_drop_and_draws_every_value():
    from maxsq_lib.course.plots import source

    series = {"source val": {"road": 0.9, "sky": 0.8, "pole": 0.1, "car": None},
              "target val": {"road": 0.3, "sky": 0.7, "pole": 0.05, "car": 0.2},
              "AdaBN": {"road": 0.6, "sky": 0.72, "pole": None, "car": 0.3}}
    fig = source.class_gap(series)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pole", "sky", "road"]   # drops 5, 10, 60
    points = {c.get_label(): np.asarray(c.get_offsets()).ravel().tolist() for c in ax.collections}
    assert points["target val"] == pytest.approx([5.0, 0, 70.0, 1, 30.0, 2])
    assert points["AdaBN"] == pytest.approx([72.0, 1, 60.0, 2])               # pole has no value
    plt.close(fig)


def test_training_curves_draw_the_logged_values():
    from maxsq_lib.course.plots import source

    metrics = {"train_log": [{"iteration": 10, "source_ce": 2.0, "source_aux_ce": 2.5},
                             {"iteration": 20, "source_ce": 1.0, "source_aux_ce": 1.5}],
               "history": [{"iteration": 10, "miou": 0.3}, {"iteration": 20, "miou": 0.35}],
               "source_val": {"miou": 0.67}}
    fig = source.training_curves(metrics)
    ce, ev = fig.axes
    assert [l.get_ydata().tolist() for l in ce.get_lines()] == [[2.0, 1.0], [2.5, 1.5]]
    assert ev.get_lines()[0].get_ydata().tolist() == pytest.approx([30.0, 35.0])
    assert ev.get_lines()[1].get_ydata()[0] == pytest.approx(67.0)                 # source val line
    plt.close(fig)


def test_class_sets_of_the_paper():
    from maxsq_lib.course.plots import source

    member = source.class_set_membership()
    assert {k: sum(v) for k, v in member.items()} == {
        "GTA5, Cityscapes (19)": 19, "SYNTHIA (16)": 16, "SYNTHIA mIoU* (13)": 13, "NTHU (13)": 13,
        "MiniCity (10)": 10}
    assert [t for t, kept in enumerate(member["SYNTHIA (16)"]) if not kept] == [9, 14, 16]  # terrain, truck, train
    assert [t for t in range(19) if member["SYNTHIA (16)"][t] and not member["SYNTHIA mIoU* (13)"][t]] == [3, 4, 5]
    assert member["SYNTHIA mIoU* (13)"] == member["NTHU (13)"]     # the same 13 classes, scored differently
    assert member["NTHU (13)"] == [t in NTHU_13.train19_ids for t in range(19)]
    fig = source.class_sets()
    assert fig.axes[0].images[0].get_array().shape == (19, 5)
    plt.close(fig)


def test_target_predictions_reports_pixel_accuracy():
    import torch
    from maxsq_lib.course.plots import source

    labels_ = torch.tensor([[[0, 1], [1, -1]]])
    predicted = {"pred": np.array([[[0, 1], [0, 0]]]), "entropy": np.zeros((1, 2, 2))}
    fig = source.target_predictions(torch.zeros(1, 3, 2, 2), labels_, predicted, ["a"], MINICITY_10)
    assert fig.axes[2].get_xlabel() == "pixel accuracy 67%"                       # 2 of 3 labelled pixels
    plt.close(fig)
