"""Does the ``cpu`` profile's precision change what the study concludes? (``results.md``, "Precision")

The study was first committed in float32 with NCHW tensors and BatchNorm statistics re-estimated
from all 1,000 target train images; its per-seed numbers are kept in
``figures/reference/study_fp32.json``. A study in bf16 autocast with ``channels_last`` was tried
and kept (``study_bf16.json``); the profile now computes in float32 with ``channels_last`` and
re-estimates BatchNorm from 250 of the images. Each is compared with the reference by two checks,
with rules fixed before the bf16 study was run:

1. **The table.** For every row of the main table (the controls and the four losses), the paired
   gain over ``adabn`` (per seed, test at the dev-chosen evaluation) agrees with the reference when
   the two means differ by at most the pooled seed std ``sqrt((s_ref² + s_now²) / 2)``.
2. **The λ sweep.** Each loss collapses at the same λ_T: the smallest λ_T of the sweep whose test
   mIoU at the last evaluation lies more than :data:`COLLAPSE_DROP` points below ``adabn``'s (seed 0).

And one measurement of the BatchNorm subset on the study's own models
(:func:`batchnorm_subset_check`): each final model's test mIoU with its statistics from the
profile's subset and from every target train image, against a tolerance of
:data:`BN_SUBSET_TOLERANCE` points. Course tooling; the core never imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import LOSS_METHODS, TABLE_METHODS
from .results import RunRecord, as_records, mean_std

REFERENCE_FILE = Path("figures") / "reference" / "study_fp32.json"
"""The float32 study's per-seed numbers, relative to the project root."""

TRIED_FILES = {"bf16 autocast + channels_last, BatchNorm from 250 images (tried, not adopted)":
               Path("figures") / "reference" / "study_bf16.json"}
"""Studies tried and kept for the comparison (title -> file relative to the project root)."""

COLLAPSE_DROP = 1.0
"""Points below adabn's test mIoU at which a run's last evaluation counts as collapsed (about the
float32 study's resolution, 0.87 points, rounded up; fixed before the bf16 runs)."""

BN_SUBSET_TOLERANCE = 0.1
"""Points: the BatchNorm subset's score must equal the all-images score within this."""

BN_CHECK_RUNS = ("adabn", "none", "minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi",
                 "minent-lambda1", "maxsquare-lambda3")
"""Seed-0 runs whose final models :func:`batchnorm_subset_check` re-scores (the last two collapse)."""


def load_reference(root: str | Path = ".", file: Path = REFERENCE_FILE) -> dict | None:
    """A kept study (default: the float32 reference) under ``root``, or None."""
    path = Path(root) / file
    return json.loads(path.read_text()) if path.is_file() else None


def collapse_lambda(runs: Mapping[str, dict], method: str) -> float | None:
    """The smallest λ_T of ``method``'s runs (the table's and the sweep's, seed 0) whose test mIoU
    at the last evaluation is more than :data:`COLLAPSE_DROP` below adabn's; None if none is.

    Args:
        runs: ``results.json``'s ``runs`` of one benchmark (or the reference's), in percent.
        method: a loss method.
    """
    adabn = (runs.get("adabn") or {}).get("seeds", {}).get("0")
    if adabn is None or adabn.get("miou") is None:
        return None
    floor = adabn["miou"] - COLLAPSE_DROP
    points = sorted((row["lambda_target"], row["seeds"]["0"]["miou_last"])
                    for name, row in runs.items()
                    if (name == method or name.startswith(f"{method}-lambda")) and "0" in row["seeds"]
                    and isinstance(row["lambda_target"], (int, float))
                    and row["seeds"]["0"].get("miou_last") is not None)
    return next((lam for lam, last in points if last < floor), None)


def compare_with_reference(runs: Mapping[str, dict], reference: Mapping[str, dict]) -> dict:
    """The two checks of the module docstring.

    Args:
        runs: ``results.json``'s ``runs`` of the main benchmark (this study).
        reference: the reference file's ``runs``.
    Returns:
        ``{"rows": [{"run", "seeds", "reported": (ref, now), "gain": (ref mean, ref std, now mean,
        now std), "difference", "pooled_std", "agrees"}], "collapse": {method: (ref λ, now λ)}}``.
    """
    rows = []
    for name in TABLE_METHODS:
        now, ref = runs.get(name), reference.get(name)
        if not now or not ref:
            continue
        seeds = sorted(set(now["seeds"]) & set(ref["seeds"]), key=int)
        reported = tuple(mean_std([r["seeds"][s]["miou"] for s in seeds], exact=True)[0] for r in (ref, now))
        row = {"run": name, "seeds": [int(s) for s in seeds], "reported": reported,
               "gain": None, "difference": None, "pooled_std": None, "agrees": None}
        if name != "adabn":
            g_ref = mean_std([ref["seeds"][s].get("gain_over_adabn") for s in seeds], exact=True)
            g_now = mean_std([now["seeds"][s].get("gain_over_adabn") for s in seeds], exact=True)
            row["gain"] = (*g_ref, *g_now)
            if g_ref[0] is not None and g_now[0] is not None:
                row["difference"] = g_now[0] - g_ref[0]
                if g_ref[1] is not None and g_now[1] is not None:
                    row["pooled_std"] = math.sqrt((g_ref[1] ** 2 + g_now[1] ** 2) / 2)
                    row["agrees"] = abs(row["difference"]) <= row["pooled_std"]
        rows.append(row)
    collapse = {m: (collapse_lambda(reference, m), collapse_lambda(runs, m)) for m in LOSS_METHODS
                if any(n.startswith(f"{m}-lambda") for n in runs)}
    return {"rows": rows, "collapse": collapse}


def describe_runs(runs: Sequence[RunRecord | Mapping]) -> str:
    """How the runs computed: precision and memory format (``metrics.json``), BatchNorm images
    (``config.yaml``), each distinct value once.

    Args:
        runs: records (:func:`maxsq_lib.course.results.load_records`) or ``metrics.json`` dicts.
    """
    kinds, images = set(), set()
    for r in as_records(runs):
        p = r.precision or {}
        amp = {"none": "float32", None: "float32 (no record)"}.get(p.get("amp"), f"{p.get('amp')} autocast")
        kinds.add(amp + (", channels_last" if p.get("channels_last") else ", NCHW"))
        if r.stage == "adapt" and r.config is not None:
            n = r.config.get("eval", {}).get("bn_images")
            images.add("all target train images" if n is None else f"{n} target train images")
    text = "; ".join(sorted(kinds))
    return text + (f"; BatchNorm statistics from {' / '.join(sorted(images))}" if images else "")


def _f(x: float | None, signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def _lam(x: float | None) -> str:
    return "none" if x is None else f"{x:g}"


def _comparison_markdown(title: str, comparison: dict) -> list[str]:
    lines = [f"### {title}", "",
             "| run | seeds | reported, reference | reported, compared | gain over adabn, reference "
             "| gain over adabn, compared | difference | pooled std | agrees |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in comparison["rows"]:
        g = r["gain"] or (None, None, None, None)
        agrees = "–" if r["agrees"] is None else ("yes" if r["agrees"] else "**no**")
        lines.append(f"| {r['run']} | {', '.join(map(str, r['seeds']))} | {_f(r['reported'][0])} | "
                     f"{_f(r['reported'][1])} | {_f(g[0], True)} ± {_f(g[1])} | {_f(g[2], True)} ± {_f(g[3])} "
                     f"| {_f(r['difference'], True)} | {_f(r['pooled_std'])} | {agrees} |")
    judged = [r for r in comparison["rows"] if r["agrees"] is not None]
    lines += ["", f"Gains over adabn that agree: {sum(r['agrees'] for r in judged)} of {len(judged)}.", ""]
    if comparison["collapse"]:
        lines += ["| loss | collapses from λ_T, reference | compared | same |", "|---|---|---|---|"]
        for m, (ref, now_lam) in comparison["collapse"].items():
            lines.append(f"| {m} | {_lam(ref)} | {_lam(now_lam)} | {'yes' if ref == now_lam else '**no**'} |")
        lines.append("")
    return lines


def precision_markdown(comparisons: Sequence[tuple[str, dict]], reference_text: str,
                       bn_check: Sequence[dict] | None = None, bn_note: str | None = None) -> list[str]:
    """The "Precision" section of ``results.md``.

    Args:
        comparisons: ``(title, compare_with_reference(...))`` per compared study (this one, and
            the studies tried and kept in ``figures/reference/``).
        reference_text: the reference file's description.
        bn_check: :func:`batchnorm_subset_check` rows (None or empty: skipped for ``bn_note``).
    """
    lines = ["## Precision", "",
             f"Reference: {reference_text}", "",
             "Rules fixed before the runs: a row's paired gain over adabn agrees when its mean differs "
             "from the reference's by at most the pooled seed std; a loss collapses at the smallest "
             f"λ_T whose last-evaluation test mIoU is more than {COLLAPSE_DROP:g} point below adabn's "
             "(seed 0), and both studies must name the same λ_T.", ""]
    if not comparisons:
        lines += ["No comparison: the reference file or the main table's runs are missing.", ""]
    for title, comparison in comparisons:
        lines += _comparison_markdown(title, comparison)
    lines += ["### BatchNorm statistics from a subset", "",
              "The profile's subset of the target train images against all of them, on this study's "
              f"seed-0 final models (test mIoU, tolerance {BN_SUBSET_TOLERANCE:g} point):", ""]
    if not bn_check:
        lines += [f"Skipped: {bn_note or 'no final model found'}.", ""]
        return lines
    lines += ["| run | images | test, subset (stored) | test, subset (re-estimated here) | test, all images "
              "| all − subset | within tolerance |", "|---|---|---|---|---|---|---|"]
    for r in bn_check:
        ok = "yes" if abs(r["difference"]) <= BN_SUBSET_TOLERANCE else "**no**"
        lines.append(f"| {r['run']} | {r['subset_images']} of {r['all_images']} | {_f(r['stored'])} | "
                     f"{_f(r['subset'])} | {_f(r['all'])} | {_f(r['difference'], True)} | {ok} |")
    lines.append("")
    return lines


def batchnorm_subset_check(runs: Sequence[RunRecord | Mapping], names: Sequence[str] = BN_CHECK_RUNS,
                           seed: int = 0) -> list[dict]:
    """Re-score final models with BatchNorm statistics from every target train image.

    For each named run of ``seed`` whose config re-estimates BatchNorm from a subset
    (``eval.bn_images``) and whose ``final.pt`` exists: the stored test mIoU, the test mIoU with
    the statistics re-estimated here from the same subset (a check that the re-estimate is the
    run's), and with statistics from all images; all in the run's own precision and format.

    Args:
        runs: records with a ``run_dir`` (:func:`maxsq_lib.course.results.load_records`), or
            ``metrics.json`` dicts.
        names: run names to check.
        seed: the seed.
    Returns:
        rows ``{"run", "subset_images", "all_images", "stored", "subset", "all", "difference"}``
        (percent; difference = all − subset re-estimated here).
    """
    import copy

    import torch

    from .. import config as C
    from ..engine.adabn import reestimate_batchnorm, statistics_images
    from ..engine.evaluation import evaluate
    from ..engine.build import build_dataset, build_model, eval_subsets
    from ..checkpoint import load_weights
    from ..labels import class_set_for

    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}
    out = []
    for name in names:
        r = by_name.get(name)
        if r is None or r.run_dir is None or r.config is None or not (Path(r.run_dir) / "final.pt").is_file():
            continue
        run_dir = Path(r.run_dir)
        cfg = C.from_dict(r.config, str(run_dir / "config.yaml"))
        if cfg.eval.bn_images is None:
            continue
        target = build_dataset(cfg, "target")
        target.augment = False
        val = build_dataset(cfg, "val")
        subsets = eval_subsets(cfg, val)
        model = build_model(cfg)
        load_weights(model, run_dir / "final.pt")
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        scores = {}
        for key, images in (("subset", statistics_images(target, cfg.eval.bn_images)), ("all", target)):
            scored = copy.deepcopy(model)
            reestimate_batchnorm(scored, images, cfg.adapt.target_batch_size, "cpu", amp=cfg.amp,
                                 channels_last=cfg.channels_last)
            result = evaluate(scored, val, class_set_for(cfg.data.num_classes), batch_size=cfg.eval.batch_size,
                              amp=cfg.amp, channels_last=cfg.channels_last, progress=False, subsets=subsets)
            scores[key] = 100 * result.extra["subsets"]["test"]["miou"]
        out.append({"run": name, "subset_images": min(cfg.eval.bn_images, len(target)),
                    "all_images": len(target), "stored": 100 * r.last["subsets"]["test"]["miou"],
                    "subset": scores["subset"], "all": scores["all"],
                    "difference": scores["all"] - scores["subset"]})
    return out
