"""Results tables from finished runs: ``<runs>/<profile>/summary.json`` and ``summary.md``.

For each benchmark and run (method, or method-tag): target val mIoU per seed at the last
iteration, mean ± std over seeds, the gain over the source-only model **paired on the same seed**
(each adaptation run evaluates its own starting point), the "best on target val" and the
label-free (lowest mean entropy) choices, and per-class IoU means. Introduced in notebook
``05_evaluation``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..engine.runs import find_runs, write_json_atomic
from ..files import write_text_atomic

METHOD_ORDER = ("source", "source_multi", "adabn", "none", "minent", "maxsquare", "maxsquare_iw",
                "maxsquare_iw_multi", "hard")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std


def _order_key(run: str) -> tuple:
    base, _, tag = run.partition("-")
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
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
    return out


def _pct(x: float | None, std: float | None = None) -> str:
    """Percent with one decimal; ``± std`` when a std over several seeds exists."""
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if std is None else f"{100 * x:.1f} ± {100 * std:.1f}"


def _signed(x: float | None, std: float | None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if std is None else f"{100 * x:+.1f} ± {100 * std:.1f}"


def markdown_tables(benchmark: str, table: dict) -> str:
    """The summary of one benchmark as markdown (mIoU in percent)."""
    seeds = sorted({s for e in table.values() for s in e["seeds"]})
    lines = [f"### {benchmark}", "",
             "Target val mIoU (%) at the last iteration; gain = paired difference to the source "
             "model of the same seed; 'best on val' selects with target labels (the paper's "
             "protocol), 'label-free' picks the evaluation with the lowest mean entropy.", ""]
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
        {"miou", "gain", "per_class", "subsets"}}}}}}}``, mIoU and IoU in %; ``gain`` is paired
        with the run's own ``before`` (the source model of that seed); ``subsets`` holds the mIoU
        of each scored part of the split (MiniCity: ``dev``, ``test``). Written as
        ``results.json`` by ``maxsq figures``.
    """
    commits = sorted({str((m.get("provenance") or {}).get("commit")) for runs in by_benchmark.values()
                      for m in runs if (m.get("provenance") or {}).get("commit")})
    benchmarks = {}
    for name, runs in sorted(by_benchmark.items()):
        splits = sorted({_eval_split(m) for m in runs} - {None})
        report = splits[0] if len(splits) == 1 else splits
        entry_runs = {}
        for m in sorted(runs, key=lambda r: (_order_key(r["run"]), int(r["seed"]))):
            row = entry_runs.setdefault(m["run"], {
                "method": m.get("method"), "lambda_target": tables[name][m["run"]]["lambda_target"],
                "iterations": m.get("iterations"), "bn_mode": m.get("bn_mode"), "seeds": {}})
            before = (m.get("before") or {}).get("miou")
            row["seeds"][str(m["seed"])] = {
                "miou": 100 * m["last"]["miou"],
                "gain": None if before is None else 100 * (m["last"]["miou"] - before),
                "per_class": {c: None if v is None else 100 * v for c, v in m["last"]["per_class_iou"].items()},
                **({"subsets": {k: 100 * v["miou"] for k, v in m["last"]["subsets"].items()}}
                   if m["last"].get("subsets") else {}),
            }
        benchmarks[name] = {"splits": {"select": report, "report": report,
                                       "rule": "last iteration (nothing is chosen on the reported split)"},
                            "runs": entry_runs}
    return {"profile": profile, "commit": ", ".join(commits) or None, "benchmarks": benchmarks}


def _eval_split(metrics: dict) -> str | None:
    """The split a run was evaluated on, from its ``config.yaml`` beside ``metrics.json``."""
    from ..config import load_yaml

    path = Path(metrics.get("run_dir", "")) / "config.yaml"
    return load_yaml(path)["data"]["val_split"] if metrics.get("run_dir") and path.is_file() else None
