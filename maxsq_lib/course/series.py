"""What the figures and ``results.md`` read out of a study: the λ sweep of a loss, the cross-city
values, per-class gains, the target's class shares, evaluation curves on a scored part, and the
training probe's entries. The records, the selection rule and the paired gains they start from
live in :mod:`maxsq_lib.course.results`. Introduced with the figures of notebooks ``04``–``06``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..config import CROSS_CITY_METHODS
from .results import RunRecord, as_records, mean, seed_values, source_on_target


def sweep_runs(table: Mapping[str, dict], method: str) -> dict[str, dict]:
    """The λ-sweep runs ``<method>-lambda<v>`` of a benchmark (exactly that name: variants such
    as ``maxsquare-lambda1-bnf`` are other studies)."""
    pattern = re.compile(rf"{re.escape(method)}-lambda[0-9.]+(e-?[0-9]+)?")
    return {n: e for n, e in table.items() if pattern.fullmatch(n)}


def sweep_points(table: Mapping[str, dict], method: str, seeds: Sequence[int],
                 key: str = "reported") -> list[tuple[float, float]]:
    """(λ_T, mean mIoU over ``seeds``) of a method's sweep runs and its table run, sorted by λ
    (``key`` of :func:`seed_values`: the reported number, or ``reported_last``)."""
    points = []
    for _name, e in list(sweep_runs(table, method).items()) + ([(method, table[method])] if method in table else []):
        lam, value = e["lambda_target"], mean(seed_values(e, key, seeds=seeds).values())
        if isinstance(lam, (int, float)) and value is not None:
            points.append((float(lam), value))
    return sorted(points)


def run_at(table: Mapping[str, dict], method: str, lam) -> str | None:
    """The run of ``method`` at λ_T ``lam`` (``"table"``: the table's own run)."""
    if lam == "table":
        return method if method in table else None
    for name, entry in sorted(sweep_runs(table, method).items()):
        if isinstance(entry.get("lambda_target"), (int, float)) and math.isclose(float(entry["lambda_target"]), float(lam)):
            return name
    if method in table and isinstance(table[method].get("lambda_target"), (int, float)) and \
            math.isclose(float(table[method]["lambda_target"]), float(lam)):
        return method
    return None


def cross_city_values(tables_by_city: Mapping[str, Mapping[str, dict]]
                      ) -> dict[str, dict[str, dict[int, float]]]:
    """Per city: the source model, the controls, MaxSquare and MaxSquare+IW target mIoU per seed.

    The source model's value per city is the ``adabn`` run's ``before`` (the shared source model
    evaluated on that city with its own statistics), else the loss runs' ``before`` (which is the
    same model unless ``eval.bn_statistics`` is ``target``); the source run's own evaluation is
    used where no adaptation run exists.

    Args:
        tables_by_city: city -> :func:`summarize_runs` table of its benchmark.
    Returns:
        city -> {"source" | "adabn" | "none" | "maxsquare" | "maxsquare_iw": {seed: mIoU}}.
    """
    out = {}
    for city, table in tables_by_city.items():
        source: dict[int, float] = {}
        for name in ("adabn",) if "adabn" in table else ("maxsquare", "maxsquare_iw"):
            if name in table:
                for s, r in table[name]["seeds"].items():
                    if r.get("before_miou") is not None:
                        source.setdefault(s, r["before_miou"])
        if not source:
            source = source_on_target(table)
        out[city] = {"source": dict(sorted(source.items()))}
        for name in CROSS_CITY_METHODS:
            out[city][name] = seed_values(table[name]) if name in table else {}
    return out



def per_class_gains(runs: Sequence[RunRecord | Mapping], method: str,
                    control: str = "adabn") -> dict[str, float | None]:
    """Per-class IoU gain of a run over the BatchNorm-only control of the same seed, mean over seeds.

    Args:
        runs: the records of one benchmark.
        method: the run name.
        control: the run paired with (``adabn``); where it is missing, the run's own ``before``.
    Returns:
        class name -> mean gain (fraction; None where the class was absent).
    """
    runs = as_records(runs)
    chosen = sorted((r for r in runs if r.run == method), key=lambda r: r.seed)
    controls = {r.seed: r for r in runs if r.run == control}
    if not chosen:
        return {}
    pairs = []  # (the run's per-class IoU, the reference's), once per seed
    for r in chosen:
        ref = controls.get(r.seed)
        pairs.append((r.reported_per_class, ref.reported_per_class if ref is not None
                      else (r.before or {}).get("per_class_iou", {})))
    return {c: mean(after[c] - before[c] for after, before in pairs
                    if after.get(c) is not None and before.get(c) is not None)
            for c in chosen[0].class_names}


def class_target_share(runs: Sequence[RunRecord]) -> np.ndarray | None:
    """Share of labelled target-val pixels per class (rows of a recorded confusion matrix)."""
    for r in runs:
        conf = r.last.get("confusion")
        if conf:
            counts = np.asarray(conf, dtype=np.float64).sum(axis=1)
            if counts.sum() > 0:
                return counts / counts.sum()
    return None


def subset_miou(evaluation: Mapping, subset: str | None = None) -> float | None:
    """One evaluation's mIoU (fraction) on a scored subset (``dev``/``test``), or on the whole
    split (``subset`` None, or an evaluation without subsets)."""
    sub = (evaluation.get("subsets") or {}).get(subset)
    return sub["miou"] if sub else evaluation.get("miou")


def subset_curve(run: RunRecord, subset: str | None = None) -> tuple[list[int], list[float]]:
    """(iterations, mIoU %) of one run, starting point included, by :func:`subset_miou`."""
    points: dict[int, float] = {}
    for entry in [run.before, *run.history, run.last]:
        if not entry or entry.get("iteration") is None:
            continue
        value = subset_miou(entry, subset)
        if value is not None:
            points.setdefault(int(entry["iteration"]), value)
    its = sorted(points)
    return its, [100 * points[i] for i in its]


def probe_entries(run: RunRecord) -> list[Mapping]:
    """The evaluations of a run with probe records, starting point first (:mod:`maxsq_lib.engine.probe`)."""
    return sorted((e for e in [run.before, *run.history] if e and e.get("probe")),
                  key=lambda e: int(e["iteration"]))
