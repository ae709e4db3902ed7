"""Results tables from finished runs: ``<runs>/<profile>/summary.json`` and ``summary.md``.

For each benchmark and run (method, or method-tag): target val mIoU per seed at the last
iteration, mean ± std over seeds, the gain over the source-only model **paired on the same seed**
(each adaptation run evaluates its own starting point), the "best on target val" and the
label-free (lowest mean entropy) choices, and per-class IoU means.

Where the target val split is scored in two halves (MiniCity: ``dev`` and ``test``), the reported
number follows :data:`SELECTION_RULE`, fixed before any result was seen: the evaluation (iteration
0, i.e. the starting point, included) with the highest ``dev`` mIoU is chosen and its ``test``
mIoU reported; gains are paired on ``test`` with the source model of the same seed and with the
``adabn`` control of the same seed. Introduced in notebook ``05_evaluation``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import methods as method_registry
from ..engine.runs import find_runs, write_json_atomic
from ..files import write_text_atomic


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std


SELECT_SPLIT, REPORT_SPLIT = "dev", "test"
SELECTION_RULE = ("the evaluation (starting point included) with the highest dev mIoU is chosen; "
                  "its test mIoU is reported; gains are paired on test, per seed")


def dev_choice(metrics: dict, select: str = SELECT_SPLIT, report: str = REPORT_SPLIT) -> dict | None:
    """The evaluation of one run that ``select`` chooses, scored on ``report``.

    Args:
        metrics: a run's ``metrics.json`` dict; its evaluations (``before``, ``history``, ``last``)
            carry ``subsets`` scores.
        select, report: subset names.
    Returns:
        ``{"iteration", "select_miou", "miou", "per_class_iou", "last_miou", "before_miou"}``
        (``miou`` and ``per_class_iou`` on ``report``; ``before_miou``: the starting point on
        ``report``), or None when the run has no such subsets. Ties go to the earlier evaluation.
        A source run is not chosen within (its final model is the one every adaptation starts
        from), nor is ``adabn`` (no step): their ``last`` is reported.
    """
    def scored(entry):
        subs = (entry or {}).get("subsets") or {}
        return subs if select in subs and report in subs else None

    last = scored(metrics.get("last"))
    if last is None:
        return None
    if metrics.get("stage") == "source" or not metrics.get("iterations"):
        candidates = [metrics["last"]]  # a source model, or adabn (its result is its only step)
    else:
        candidates = [e for e in [metrics.get("before"), *(metrics.get("history") or [])] if scored(e)]
        if not any(e.get("iteration") == metrics["last"].get("iteration") for e in candidates):
            candidates.append(metrics["last"])
    chosen = max(candidates, key=lambda e: (e["subsets"][select]["miou"], -int(e.get("iteration") or 0)))
    before = scored(metrics.get("before"))
    return {"iteration": int(chosen.get("iteration") or 0),
            "select_miou": chosen["subsets"][select]["miou"],
            "miou": chosen["subsets"][report]["miou"],
            "per_class_iou": chosen["subsets"][report].get("per_class_iou") or {},
            "last_miou": last[report]["miou"],
            "before_miou": None if before is None else before[report]["miou"]}


def _order_key(run: str) -> tuple:
    base, _, tag = run.partition("-")
    rank = method_registry.display_rank(base)
    return (rank, tag != "", tag, run)


def summarize_runs(runs: list[dict]) -> dict:
    """Aggregate the metrics of finished runs of one benchmark.

    Args:
        runs: ``metrics.json`` dicts (from :func:`maxsq_lib.engine.runs.find_runs`).
    Returns:
        ``{run name: {"seeds": {seed: row}, "miou_mean", "miou_std", "gain_mean", ...}}``.
    """
    by_run: dict[str, dict[int, dict]] = defaultdict(dict)
    for m in runs:
        by_run[m["run"]][int(m["seed"])] = m
    out = {}
    for name in sorted(by_run, key=_order_key):
        seeds = {}
        for seed, m in sorted(by_run[name].items()):
            before = (m.get("before") or {}).get("miou")
            row = {
                "miou": m["last"]["miou"],
                "before_miou": before,
                "gain": None if before is None else m["last"]["miou"] - before,
                "best_on_target_val": (m.get("best_on_target_val") or {}).get("miou"),
                "best_iteration": (m.get("best_on_target_val") or {}).get("iteration"),
                "label_free_choice": (m.get("label_free_choice") or {}).get("miou"),
                "label_free_iteration": (m.get("label_free_choice") or {}).get("iteration"),
                "miou_flip": (m.get("last_flip") or {}).get("miou"),
                "source_val_miou": (m.get("source_val") or {}).get("miou"),
                "per_class_iou": m["last"]["per_class_iou"],
                "lambda_target": m.get("lambda_target"),
                "bn_mode": m.get("bn_mode"),
                "train_seconds": (m.get("timing") or {}).get("train_seconds"),
                "peak_rss_mb": m.get("peak_rss_mb"),
            }
            choice = dev_choice(m)
            row["report"] = choice
            seeds[seed] = row
        entry: dict = {"seeds": seeds, "class_names": next(iter(by_run[name].values()))["class_names"]}
        for key in ("miou", "gain", "best_on_target_val", "label_free_choice", "miou_flip",
                    "source_val_miou", "before_miou", "train_seconds"):
            mean, std = _mean_std([r[key] for r in seeds.values()])
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean, std
        classes = entry["class_names"]
        entry["per_class_iou_mean"] = {
            c: _mean_std([r["per_class_iou"].get(c) for r in seeds.values()])[0] for c in classes}
        lambdas = {r["lambda_target"] for r in seeds.values() if r["lambda_target"] is not None}
        entry["lambda_target"] = sorted(lambdas)[0] if len(lambdas) == 1 else sorted(lambdas) or None
        out[name] = entry
    _pair_with_control(out, "source", [n for n in ("source_multi", "source") if n in out][:1])
    _pair_with_control(out, "adabn", [n for n in ("adabn",) if n in out])
    for entry in out.values():
        rows = [r["report"] for r in entry["seeds"].values() if r["report"]]
        for key in ("miou", "gain_over_source", "gain_over_adabn", "last_miou"):
            mean, std = _mean_std([r.get(key) for r in rows]) if rows else (None, None)
            entry[f"report_{key}_mean"], entry[f"report_{key}_std"] = mean, std
        entry["report_per_class_iou_mean"] = {
            c: _mean_std([r["per_class_iou"].get(c) for r in rows])[0] for c in entry["class_names"]
        } if rows else {}
    return out


def _pair_with_control(table: dict, control: str, runs: list[str]) -> None:
    """Add ``gain_over_<control>`` to every reported row: its ``test`` mIoU minus that of the run
    in ``runs`` (the source model; the adabn control) on the same seed (None where missing).

    The source model is paired through its own run, not through an adaptation run's ``before``:
    with ``eval.bn_statistics: target`` that starting point is already scored with target
    statistics (it equals the adabn control)."""
    ref = {s: r["report"]["miou"] for name in runs for s, r in table[name]["seeds"].items()
           if r.get("report")}
    for name, entry in table.items():
        for seed, row in entry["seeds"].items():
            if row.get("report") is not None:
                row["report"][f"gain_over_{control}"] = (
                    None if seed not in ref or name.startswith("source") or name in runs
                    else row["report"]["miou"] - ref[seed])


def _pct(x: float | None, std: float | None = None) -> str:
    """Percent with one decimal; ``± std`` when a std over several seeds exists."""
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if std is None else f"{100 * x:.1f} ± {100 * std:.1f}"


def _signed(x: float | None, std: float | None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if std is None else f"{100 * x:+.1f} ± {100 * std:.1f}"


def reported_table(table: dict) -> list[str]:
    """Markdown lines of the reported numbers (:data:`SELECTION_RULE`), or [] without subsets."""
    rows = {n: e for n, e in table.items() if e.get("report_miou_mean") is not None}
    if not rows:
        return []
    seeds = sorted({s for e in rows.values() for s in e["seeds"]})
    lines = [f"Reported: MiniCityscapes `{REPORT_SPLIT}` mIoU (%) at the evaluation chosen on "
             f"`{SELECT_SPLIT}` ({SELECTION_RULE}). 'vs source' and 'vs adabn' are paired "
             "differences to the source model and to the BatchNorm-only control of the same seed; "
             "± is the std over seeds.", ""]
    head = (["run", "λ_T", "bn_mode"] + [f"seed {s}" for s in seeds]
            + ["mean ± std", "vs source", "vs adabn", "chosen iterations", "test at last"])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in rows.items():
        lam = e["lambda_target"]
        lam_text = "–" if lam is None or name.startswith("source") or name == "adabn" else (
            f"{lam:.3g}" if isinstance(lam, float) else ", ".join(f"{v:.3g}" for v in lam))
        modes = sorted({r["bn_mode"] for r in e["seeds"].values() if r.get("bn_mode")})
        iters = [str(e["seeds"][s]["report"]["iteration"]) if s in e["seeds"] and e["seeds"][s]["report"]
                 else "–" for s in seeds]
        cells = [name, lam_text, ", ".join(modes) or "–"]
        cells += [_pct(e["seeds"][s]["report"]["miou"]) if s in e["seeds"] and e["seeds"][s]["report"]
                  else "–" for s in seeds]
        cells += [_pct(e["report_miou_mean"], e["report_miou_std"]),
                  _signed(e["report_gain_over_source_mean"], e["report_gain_over_source_std"]),
                  _signed(e["report_gain_over_adabn_mean"], e["report_gain_over_adabn_std"]),
                  ", ".join(iters), _pct(e["report_last_miou_mean"], e["report_last_miou_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    classes = next(iter(rows.values()))["class_names"]
    lines += ["", f"Per-class IoU (%) on `{REPORT_SPLIT}` at the chosen evaluation, mean over seeds:", ""]
    lines += ["| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    for name, e in rows.items():
        lines.append(f"| {name} | " + " | ".join(_pct(e["report_per_class_iou_mean"].get(c))
                                                 for c in classes) + " |")
    return lines + [""]


def markdown_tables(benchmark: str, table: dict) -> str:
    """The summary of one benchmark as markdown (mIoU in percent)."""
    seeds = sorted({s for e in table.values() for s in e["seeds"]})
    lines = [f"### {benchmark}", "", *reported_table(table),
             "Target val mIoU (%) (the whole split) at the last iteration; gain = paired difference "
             "to the run's own starting point on the same seed; 'best on val' selects with target "
             "labels (the paper's protocol), 'label-free' picks the evaluation with the lowest mean "
             "entropy.", ""]
    head = ["run"] + [f"seed {s}" for s in seeds] + ["mean ± std", "gain (paired)",
                                                     "best on val", "label-free", "λ_T"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in table.items():
        cells = [name] + [_pct(e["seeds"][s]["miou"]) if s in e["seeds"] else "–" for s in seeds]
        lam = e["lambda_target"]
        lam_text = "–" if lam is None else (f"{lam:.3g}" if isinstance(lam, float)
                                           else ", ".join(f"{v:.3g}" for v in lam))
        cells += [_pct(e["miou_mean"], e["miou_std"]), _signed(e["gain_mean"], e["gain_std"]),
                  _pct(e["best_on_target_val_mean"]), _pct(e["label_free_choice_mean"]), lam_text]
        lines.append("| " + " | ".join(cells) + " |")
    src = [e for n, e in table.items() if n.startswith("source")]
    if src and src[0]["source_val_miou_mean"] is not None:
        lines += ["", f"Source model on source val: {_pct(src[0]['source_val_miou_mean'], src[0]['source_val_miou_std'])} mIoU."]
    classes = next(iter(table.values()))["class_names"]
    lines += ["", "Per-class IoU (%), mean over seeds, last iteration:", ""]
    lines += ["| run | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    for name, e in table.items():
        lines.append(f"| {name} | " + " | ".join(_pct(e["per_class_iou_mean"].get(c)) for c in classes) + " |")
    return "\n".join(lines) + "\n"


def write_summary(runs_root: str, profile: str, benchmark: str | None = None) -> list[Path]:
    """Write ``summary.json`` and ``summary.md`` for a profile's finished runs.

    Returns:
        the two paths.
    """
    runs = find_runs(runs_root, profile, benchmark)
    if not runs:
        raise FileNotFoundError(f"no finished runs under {Path(runs_root) / profile}")
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for m in runs:
        by_bench[m["benchmark"]].append(m)
    summary = {"profile": profile, "benchmarks": {b: summarize_runs(r) for b, r in sorted(by_bench.items())}}
    base = Path(runs_root) / profile
    json_path = write_json_atomic(base / "summary.json", summary)
    md = [f"## Results: profile `{profile}`", ""]
    for b, table in summary["benchmarks"].items():
        md.append(markdown_tables(b, table))
    md_path = write_text_atomic(base / "summary.md", "\n".join(md))
    return [json_path, md_path]


def results_json(by_benchmark: dict[str, list[dict]], tables: dict[str, dict], profile: str) -> dict:
    """The machine-readable results: every run of every benchmark, per seed, in percent.

    Args:
        by_benchmark: benchmark -> metrics dicts (:func:`maxsq_lib.engine.runs.find_runs`).
        tables: benchmark -> :func:`summarize_runs` table.
        profile: the profile.
    Returns:
        ``{"profile", "commit", "benchmarks": {name: {"splits": {"select", "report", "rule"},
        "runs": {run: {"method", "lambda_target", "iterations", "bn_mode", "seeds": {seed:
        {"miou", "gain", "per_class", "subsets"}}}}}}}``, mIoU and IoU in %. Where the split is
        scored in ``dev`` and ``test`` halves (MiniCity), ``miou`` and ``per_class`` are the
        reported ``test`` values at the ``dev``-chosen evaluation (:data:`SELECTION_RULE`; also
        ``iteration``, ``select_miou``, ``miou_last``, ``miou_whole_val_last``), and ``gain`` =
        ``gain_over_source`` and ``gain_over_adabn`` are paired on ``test`` with the source model
        and the adabn control of the same seed. Elsewhere ``miou`` is the last iteration on the
        whole split and ``gain`` is paired with the run's own ``before``. ``subsets``: the mIoU of
        each scored part at the last iteration. Written as ``results.json`` by ``maxsq figures``.
    """
    commits = sorted({str((m.get("provenance") or {}).get("commit")) for runs in by_benchmark.values()
                      for m in runs if (m.get("provenance") or {}).get("commit")})
    benchmarks = {}
    for name, runs in sorted(by_benchmark.items()):
        splits = sorted({_eval_split(m) for m in runs} - {None})
        whole = splits[0] if len(splits) == 1 else splits
        entry_runs = {}
        for m in sorted(runs, key=lambda r: (_order_key(r["run"]), int(r["seed"]))):
            row = entry_runs.setdefault(m["run"], {
                "method": m.get("method"), "lambda_target": tables[name][m["run"]]["lambda_target"],
                "iterations": m.get("iterations"), "bn_mode": m.get("bn_mode"), "seeds": {}})
            before = (m.get("before") or {}).get("miou")
            summary_row = tables[name][m["run"]]["seeds"][int(m["seed"])]
            report = summary_row.get("report")
            seed_row = {
                "miou": 100 * m["last"]["miou"],
                "gain": None if before is None else 100 * (m["last"]["miou"] - before),
                "per_class": {c: _pts(v) for c, v in m["last"]["per_class_iou"].items()},
                **({"subsets": {k: 100 * v["miou"] for k, v in m["last"]["subsets"].items()}}
                   if m["last"].get("subsets") else {}),
            }
            if report:
                # the reported number: test at the dev-chosen evaluation (SELECTION_RULE)
                seed_row.update({
                    "miou": 100 * report["miou"], "iteration": report["iteration"],
                    "select_miou": 100 * report["select_miou"], "miou_last": 100 * report["last_miou"],
                    "miou_whole_val_last": 100 * m["last"]["miou"],
                    "gain": _pts(report.get("gain_over_source")),
                    "gain_over_source": _pts(report.get("gain_over_source")),
                    "gain_over_adabn": _pts(report.get("gain_over_adabn")),
                    "per_class": {c: _pts(v) for c, v in report["per_class_iou"].items()}})
            row["seeds"][str(m["seed"])] = seed_row
        subsets = any(r.get("report") for e in tables[name].values() for r in e["seeds"].values())
        splits = ({"select": SELECT_SPLIT, "report": REPORT_SPLIT, "rule": SELECTION_RULE} if subsets else
                  {"select": whole, "report": whole,
                   "rule": "last iteration (nothing is chosen on the reported split)"})
        benchmarks[name] = {"splits": splits, "runs": entry_runs}
    return {"profile": profile, "commit": ", ".join(commits) or None, "benchmarks": benchmarks}


def _pts(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _eval_split(metrics: dict) -> str | None:
    """The split a run was evaluated on, from its ``config.yaml`` beside ``metrics.json``."""
    from ..config import load_yaml

    path = Path(metrics.get("run_dir", "")) / "config.yaml"
    return load_yaml(path)["data"]["val_split"] if metrics.get("run_dir") and path.is_file() else None
