"""Results tables as markdown, and ``<runs>/<profile>/summary.json`` / ``summary.md``.

The numbers are those of :func:`maxsq_lib.course.results.summarize_runs` (per run and seed: the
reported mIoU under :data:`~maxsq_lib.course.results.SELECTION_RULE`, means ± std over seeds,
gains paired per seed with the source model and the ``adabn`` control; the last iteration, the
"best on target val" and the label-free choices; per-class IoU means); this module only lays them
out. Introduced in notebook ``05_evaluation``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..engine.runs import write_json_atomic
from ..files import write_text_atomic
from .results import REPORT_SPLIT, SELECT_SPLIT, SELECTION_RULE, load_records, summarize_runs


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
    runs = load_records(runs_root, profile, benchmark)
    if not runs:
        raise FileNotFoundError(f"no finished runs under {Path(runs_root) / profile}")
    by_bench: dict[str, list] = defaultdict(list)
    for r in runs:
        by_bench[r.benchmark].append(r)
    summary = {"profile": profile, "benchmarks": {b: summarize_runs(r) for b, r in sorted(by_bench.items())}}
    base = Path(runs_root) / profile
    json_path = write_json_atomic(base / "summary.json", summary)
    md = [f"## Results: profile `{profile}`", ""]
    for b, table in summary["benchmarks"].items():
        md.append(markdown_tables(b, table))
    md_path = write_text_atomic(base / "summary.md", "\n".join(md))
    return [json_path, md_path]
