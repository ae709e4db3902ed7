"""Results as records: one typed record per finished run, the selection rule, the paired gains.

Every number the course reports starts here. :func:`load_study` reads the ``metrics.json`` of every
finished run under ``<runs>/<profile>/`` once (:func:`maxsq_lib.engine.runs.find_runs`) into
:class:`RunRecord` s; :func:`load_committed_study` reads the same records back from a study's
``results.json`` (the committed ``figures/results.json``). Tables, figures, ``results.md``,
``results.json`` and the explorer read records, never the nested ``metrics.json`` dicts.

**The selection rule** (:data:`SELECTION_RULE`, fixed before any result was seen): where the target
val split is scored in two halves (MiniCity: ``dev`` and ``test``), the evaluation of a run
(iteration 0, the starting point, included) with the highest ``dev`` mIoU is chosen and its ``test``
mIoU reported (:func:`dev_choice`); elsewhere the last iteration on the whole split is reported.

**The statistics**: means ± std over seeds (:func:`mean_std`, std with ``ddof=1``) and gains paired
per seed with the source model and with the ``adabn`` control (:func:`summarize_runs`,
:func:`reported_gains`). Introduced in notebook ``05_evaluation``.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .. import methods as method_registry
from ..config import CITIES, LOSS_METHODS
from ..engine.runs import find_runs

SELECT_SPLIT, REPORT_SPLIT = "dev", "test"
SELECTION_RULE = ("the evaluation (starting point included) with the highest dev mIoU is chosen; "
                  "its test mIoU is reported; gains are paired on test, per seed")

MAIN_BENCHMARKS: tuple[str, ...] = ("minicity", "gta5_cityscapes", "synthia_cityscapes")
"""Main-table benchmarks, preferred in this order."""

RARE_SHARE = 0.02
"""Classes below this share of labelled target-val pixels count as rare (figures and ``results.md``)."""

SHARE_THRESHOLD = 0.9
"""The confidence edge (one of :data:`~maxsq_lib.engine.probe.PROBE_BINS`) above which
:attr:`RunRecord.start_shares` adds up the training probe's shares: the confident pixels whose
gradient the paper's argument is about (notebook ``03_gradient_analysis``)."""

_CROSS_CITY = re.compile(r"^(?P<prefix>.+)_nthu_(?P<city>rome|rio|tokyo|taipei)$")


class MissingEvidence(LookupError):
    """The runs (or data, or checkpoints) a figure or a sentence needs are not there; the message
    says which."""


# ------------------------------------------------------------------------------------ statistics

def finite(values: Iterable) -> list[float]:
    """The values that are numbers (None, NaN and inf left out)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_std(values: Iterable, exact: bool = False) -> tuple[float | None, float | None]:
    """Mean and std (``ddof=1``) over seeds of the finite values; std None with fewer than two,
    both None with none.

    ``exact``: correctly rounded (:func:`statistics.fmean` and :func:`statistics.stdev`) instead of
    NumPy's sums, which can differ in the last bit; the precision study's comparison
    (:mod:`maxsq_lib.course.precision_study`) was computed so, and ``results.json`` keeps its bits.
    """
    vals = finite(values)
    if not vals:
        return None, None
    if exact:
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def mean(values: Iterable) -> float | None:
    """:func:`mean_std`'s mean."""
    return mean_std(values)[0]


def std(values: Iterable) -> float | None:
    """:func:`mean_std`'s std."""
    return mean_std(values)[1]


# ------------------------------------------------------------------------------------ selection

def dev_choice(metrics: Mapping, select: str = SELECT_SPLIT, report: str = REPORT_SPLIT) -> dict | None:
    """The evaluation of one run that ``select`` chooses, scored on ``report`` (:data:`SELECTION_RULE`).

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


def run_order_key(run: str) -> tuple:
    """Tables' order of run names: the method registry's display order, variants after their method."""
    base, _, tag = run.partition("-")
    return (method_registry.display_rank(base), tag != "", tag, run)


def seed_text(seeds: Iterable[int]) -> str:
    """Which seeds, in words: ``one seed (seed 0)`` or ``3 seeds (0, 1, 2)``."""
    seeds = sorted(seeds)
    if len(seeds) == 1:
        return f"one seed (seed {seeds[0]})"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"


# ------------------------------------------------------------------------------------ the record

@dataclass(frozen=True)
class RunRecord:
    """One finished run of one seed, as the course reads it.

    Evaluations are the mappings the engine recorded (``iteration``, ``miou``, ``per_class_iou``,
    ``subsets``, ``probe``, ``confusion``, ...); mIoU and IoU are fractions.

    Attributes:
        benchmark, run, seed: where it lies (``<benchmark>/<run>/seed<seed>``).
        method, stage: the method (``source`` for a source run) and ``source`` or ``adapt``.
        lambda_target, bn_mode, iterations: how it trained.
        class_names: the class set's names, in order.
        before, history, last: the starting point, the evaluations during the run, the final one.
        report: :func:`dev_choice` (the evaluation ``dev`` chooses, scored on ``test``); None where
            the split has no such halves (the last iteration is reported).
        last_flip, best_on_target_val, label_free_choice, source_val: further evaluations.
        lambda_matching, train_log, precision, provenance, train_seconds, peak_rss_mb: as recorded.
        run_dir: the run's folder (None for a record read from ``results.json``).
        start_shares: :func:`start_shares` of the run's probe at iteration 0 (None without one);
            the one probe number a record read from ``results.json`` keeps.
    """

    benchmark: str
    run: str
    seed: int
    method: str | None = None
    stage: str | None = None
    lambda_target: float | None = None
    bn_mode: str | None = None
    iterations: int | None = None
    class_names: tuple[str, ...] = ()
    before: Mapping | None = None
    history: tuple[Mapping, ...] = ()
    last: Mapping = field(default_factory=dict)
    report: Mapping | None = None
    last_flip: Mapping | None = None
    best_on_target_val: Mapping | None = None
    label_free_choice: Mapping | None = None
    source_val: Mapping | None = None
    lambda_matching: Mapping | None = None
    train_log: tuple[Mapping, ...] = ()
    precision: Mapping | None = None
    provenance: Mapping = field(default_factory=dict)
    train_seconds: float | None = None
    peak_rss_mb: float | None = None
    run_dir: str | None = None
    start_shares: Mapping | None = None

    @property
    def reported_miou(self) -> float:
        """The reported mIoU: ``test`` at the ``dev``-chosen evaluation, else the last iteration."""
        return self.report["miou"] if self.report is not None else self.last["miou"]

    @property
    def reported_last_miou(self) -> float:
        """The reported split at the last iteration (what no rule protects)."""
        return self.report["last_miou"] if self.report is not None else self.last["miou"]

    @property
    def reported_per_class(self) -> Mapping[str, float | None]:
        """Per-class IoU as reported (``test`` at the ``dev``-chosen evaluation), else ``last``."""
        return self.report["per_class_iou"] if self.report is not None else self.last["per_class_iou"]

    @property
    def before_miou(self) -> float | None:
        """The starting point's mIoU on the whole split (None for a source run)."""
        return (self.before or {}).get("miou")

    @property
    def gain(self) -> float | None:
        """Last minus the run's own starting point, on the whole split."""
        before = self.before_miou
        return None if before is None else self.last["miou"] - before

    @cached_property
    def config(self) -> dict | None:
        """The run's ``config.yaml`` (read once, when first asked for), or None."""
        from ..config import load_yaml

        path = Path(self.run_dir or "") / "config.yaml"
        return load_yaml(path) if self.run_dir and path.is_file() else None

    @property
    def eval_split(self) -> str | None:
        """The split the run was evaluated on (its config's ``data.val_split``)."""
        return self.config["data"]["val_split"] if self.config else None


def record(metrics: Mapping) -> RunRecord:
    """The record of one ``metrics.json`` dict (with ``run_dir`` as :func:`find_runs` adds it)."""
    m = metrics
    return RunRecord(
        benchmark=str(m["benchmark"]), run=m["run"], seed=int(m["seed"]), method=m.get("method"),
        stage=m.get("stage"), lambda_target=m.get("lambda_target"), bn_mode=m.get("bn_mode"),
        iterations=m.get("iterations"), class_names=tuple(m.get("class_names") or ()),
        before=m.get("before"), history=tuple(m.get("history") or ()), last=m["last"], report=dev_choice(m),
        last_flip=m.get("last_flip"), best_on_target_val=m.get("best_on_target_val"),
        label_free_choice=m.get("label_free_choice"), source_val=m.get("source_val"),
        lambda_matching=m.get("lambda_matching"), train_log=tuple(m.get("train_log") or ()),
        precision=m.get("precision"), provenance=m.get("provenance") or {},
        train_seconds=(m.get("timing") or {}).get("train_seconds"), peak_rss_mb=m.get("peak_rss_mb"),
        run_dir=m.get("run_dir"), start_shares=start_shares(m.get("before")))


def start_shares(evaluation: Mapping | None, threshold: float = SHARE_THRESHOLD) -> dict | None:
    """The training probe's shares above ``threshold`` in one evaluation at iteration 0: the
    share of target val pixels with max p at or above it, and the share of the run's target-loss
    logit gradient ``|∂L/∂z|`` those pixels receive (:mod:`maxsq_lib.engine.probe`). Notebook
    ``03_gradient_analysis`` compares the learner's step-0 measurement with these.

    Args:
        evaluation: a run's ``before`` (or any evaluation); None, a later iteration or one without
            probe records gives None.
        threshold: one of the probe's bin edges.
    Returns:
        ``{"pixels", "logit_gradient"}`` fractions (``logit_gradient`` None for a run without a
        target loss, ``none`` and ``adabn``), or None.
    Raises:
        ValueError: ``threshold`` is not one of the probe's bin edges.
    """
    probe = (evaluation or {}).get("probe")
    if not probe or int(evaluation.get("iteration") or 0) != 0:
        return None
    edges = probe["bin_edges"]
    first = next((k for k, e in enumerate(edges) if math.isclose(e, threshold)), None)
    if first is None:
        raise ValueError(f"threshold={threshold} is not a bin edge of the probe; edges are {edges}")
    gradient = probe.get("gradient_share")
    return {"pixels": float(sum(probe["pixel_share"][first:])),
            "logit_gradient": None if not gradient else float(sum(gradient[first:]))}


def start_share_values(study: "Study", run: str, quantity: str, benchmark: str | None = None) -> dict[int, float]:
    """One quantity of :attr:`RunRecord.start_shares` per seed of one run (runs without it left
    out). Notebook ``03_gradient_analysis`` (:func:`maxsq_lib.course.analysis.compare_shares`).

    Args:
        study: :func:`load_study` or :func:`load_committed_study`.
        run: the run name (``minent``, ``maxsquare``, ...).
        quantity: ``"pixels"`` or ``"logit_gradient"``.
        benchmark: default the study's main benchmark.
    Returns:
        seed -> fraction, by seed.
    """
    records = study.records.get(benchmark or study.main, [])
    return {r.seed: r.start_shares[quantity] for r in sorted(records, key=lambda r: r.seed)
            if r.run == run and r.start_shares and r.start_shares.get(quantity) is not None}


def as_records(runs: Iterable[RunRecord | Mapping]) -> list[RunRecord]:
    """Records of runs given as records or as ``metrics.json`` dicts (a notebook's ``find_runs``)."""
    return [r if isinstance(r, RunRecord) else record(r) for r in runs]


def load_records(runs_root: str | os.PathLike, profile: str, benchmark: str | None = None) -> list[RunRecord]:
    """The records of every finished run under ``<runs_root>/<profile>/[<benchmark>/]``, sorted."""
    return [record(m) for m in find_runs(runs_root, profile, benchmark)]


def records_from_results(results: Mapping | str | os.PathLike) -> list[RunRecord]:
    """The records a ``results.json`` holds (:func:`results_json`): the reported numbers per seed,
    divided by 100 back into fractions (float rounding aside); evaluations other than the reported
    one and the last are not in that file (``history`` is empty, ``before`` only where no rule
    chose), and of the training probe only :attr:`RunRecord.start_shares`.

    Args:
        results: the parsed file, or its path.
    """
    data = results if isinstance(results, Mapping) else json.loads(Path(results).read_text())

    def frac(v):
        return None if v is None else v / 100

    out = []
    for benchmark, entry in data["benchmarks"].items():
        for run, row in entry["runs"].items():
            for seed, s in row["seeds"].items():
                per_class = {c: frac(v) for c, v in s["per_class"].items()}
                subsets = {k: {"miou": frac(v)} for k, v in (s.get("subsets") or {}).items()}
                last = {"iteration": row.get("iterations"), "miou": frac(s.get("miou_whole_val_last", s["miou"])),
                        "per_class_iou": {} if "select_miou" in s else per_class, "subsets": subsets}
                report = before = None
                if "select_miou" in s:
                    report = {"iteration": s["iteration"], "select_miou": frac(s["select_miou"]),
                              "miou": frac(s["miou"]), "per_class_iou": per_class,
                              "last_miou": frac(s["miou_last"]), "before_miou": None}
                elif s.get("gain") is not None:
                    before = {"iteration": 0, "miou": frac(s["miou"] - s["gain"])}
                out.append(RunRecord(
                    benchmark=benchmark, run=run, seed=int(seed), method=row.get("method"),
                    stage="source" if run.startswith("source") else "adapt",
                    lambda_target=row.get("lambda_target"), bn_mode=row.get("bn_mode"),
                    iterations=row.get("iterations"), class_names=tuple(per_class), before=before,
                    last=last, report=report, start_shares=_start_shares_back(s.get(START_SHARES_KEY))))
    return out


# ------------------------------------------------------------------------------------ a study

@dataclass(frozen=True)
class Study:
    """The finished runs of one profile, grouped by benchmark.

    Attributes:
        profile: the profile.
        records: benchmark -> its records (sorted by run folder).
        tables: benchmark -> :func:`summarize_runs` table.
        main: the main-table benchmark (``minicity`` for MiniCity profiles), or None.
        cities: city name -> its cross-city benchmark, in :data:`~maxsq_lib.config.CITIES` order.
        runs_root: the runs folder (None for a study read from ``results.json``).
    """

    profile: str
    records: dict[str, list[RunRecord]]
    tables: dict[str, dict]
    main: str | None
    cities: dict[str, str] = field(default_factory=dict)
    runs_root: Path | None = None

    def all_records(self) -> list[RunRecord]:
        """Every record, benchmark by benchmark."""
        return [r for runs in self.records.values() for r in runs]


def study_of(records: Iterable[RunRecord | Mapping], profile: str,
             runs_root: str | os.PathLike | None = None) -> Study:
    """Group records by benchmark, summarise each, and find the main and cross-city benchmarks."""
    by_benchmark: dict[str, list[RunRecord]] = {}
    for r in as_records(records):
        by_benchmark.setdefault(r.benchmark, []).append(r)
    by_benchmark = {b: by_benchmark[b] for b in sorted(by_benchmark)}
    tables = {b: summarize_runs(r) for b, r in by_benchmark.items()}
    plain = [b for b in by_benchmark if not _CROSS_CITY.match(b)]
    main = next((b for b in MAIN_BENCHMARKS if b in plain), plain[0] if plain else None)
    found = {hit["city"]: b for b in by_benchmark if (hit := _CROSS_CITY.match(b))}
    cities = {c: found[c.lower()] for c in CITIES if c.lower() in found}
    return Study(profile, by_benchmark, tables, main, cities, None if runs_root is None else Path(runs_root))


def load_study(runs_root: str | os.PathLike, profile: str) -> Study:
    """Read every finished run of a profile (:func:`load_records`) into a :class:`Study`.

    Raises:
        FileNotFoundError: no finished run under ``<runs_root>/<profile>/``.
    """
    records = load_records(runs_root, profile)
    if not records:
        raise FileNotFoundError(
            f"no finished runs under {Path(runs_root) / profile}: expected <benchmark>/<run name>/seed<k>/ "
            f"folders holding metrics.json and a FINISHED marker (train them with "
            f"`maxsq course --profile {profile}`)")
    return study_of(records, profile, runs_root)


def committed_study_path() -> Path:
    """``figures/results.json`` of the project root, else of the checkout this package lies in (a
    notebook whose kernel starts outside the checkout still finds the study shipped with it).

    Raises:
        FileNotFoundError: neither has it (one line naming both places).
    """
    from .notebook import project_root

    shipped = [root / "figures" / "results.json" for root in (project_root(), Path(__file__).resolve().parents[2])]
    found = next((p for p in shipped if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"the committed study is in neither {shipped[0]} nor {shipped[1]}; `make study` writes it")
    return found


def load_committed_study(path: str | os.PathLike | None = None) -> Study:
    """The study a ``results.json`` holds (default: the committed ``figures/results.json`` of the
    project root, else of the checkout this package lies in), as records (:func:`records_from_results`)."""
    path = committed_study_path() if path is None else Path(path)
    data = json.loads(path.read_text())
    return study_of(records_from_results(data), data["profile"])


# ------------------------------------------------------------------------------------ summaries

def summarize_runs(runs: Iterable[RunRecord | Mapping]) -> dict:
    """Aggregate the runs of one benchmark: per run, its seeds, means ± std, the paired gains.

    Args:
        runs: records (or ``metrics.json`` dicts).
    Returns:
        ``{run name: {"seeds": {seed: row}, "miou_mean", "miou_std", "gain_mean", ...}}`` in
        :func:`run_order_key` order; a row's ``report`` is :func:`dev_choice` plus
        ``gain_over_source`` and ``gain_over_adabn`` (paired on the seed, :func:`_pair_with_control`).
    """
    by_run: dict[str, dict[int, RunRecord]] = defaultdict(dict)
    for r in as_records(runs):
        by_run[r.run][r.seed] = r
    out = {}
    for name in sorted(by_run, key=run_order_key):
        seeds = {}
        for seed, r in sorted(by_run[name].items()):
            seeds[seed] = {
                "miou": r.last["miou"],
                "before_miou": r.before_miou,
                "gain": r.gain,
                "best_on_target_val": (r.best_on_target_val or {}).get("miou"),
                "best_iteration": (r.best_on_target_val or {}).get("iteration"),
                "label_free_choice": (r.label_free_choice or {}).get("miou"),
                "label_free_iteration": (r.label_free_choice or {}).get("iteration"),
                "miou_flip": (r.last_flip or {}).get("miou"),
                "source_val_miou": (r.source_val or {}).get("miou"),
                "per_class_iou": r.last["per_class_iou"],
                "lambda_target": r.lambda_target,
                "bn_mode": r.bn_mode,
                "train_seconds": r.train_seconds,
                "peak_rss_mb": r.peak_rss_mb,
                "report": None if r.report is None else dict(r.report),
            }
        entry: dict = {"seeds": seeds, "class_names": next(iter(by_run[name].values())).class_names}
        for key in ("miou", "gain", "best_on_target_val", "label_free_choice", "miou_flip",
                    "source_val_miou", "before_miou", "train_seconds"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std(r[key] for r in seeds.values())
        classes = entry["class_names"]
        entry["per_class_iou_mean"] = {c: mean(r["per_class_iou"].get(c) for r in seeds.values()) for c in classes}
        lambdas = {r["lambda_target"] for r in seeds.values() if r["lambda_target"] is not None}
        entry["lambda_target"] = sorted(lambdas)[0] if len(lambdas) == 1 else sorted(lambdas) or None
        out[name] = entry
    _pair_with_control(out, "source", [n for n in ("source_multi", "source") if n in out][:1])
    _pair_with_control(out, "adabn", [n for n in ("adabn",) if n in out])
    for entry in out.values():
        rows = [r["report"] for r in entry["seeds"].values() if r["report"]]
        for key in ("miou", "gain_over_source", "gain_over_adabn", "last_miou"):
            entry[f"report_{key}_mean"], entry[f"report_{key}_std"] = (
                mean_std(r.get(key) for r in rows) if rows else (None, None))
        entry["report_per_class_iou_mean"] = {
            c: mean(r["per_class_iou"].get(c) for r in rows) for c in entry["class_names"]} if rows else {}
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


def has_reports(table: Mapping[str, dict]) -> bool:
    """Whether a summary's numbers are dev-chosen test numbers (:data:`SELECTION_RULE`)."""
    return any(r.get("report") for e in table.values() for r in e["seeds"].values())


def reported_what(table: Mapping[str, dict]) -> str:
    """What a summary's reported number is, in words."""
    return "test mIoU at the dev-chosen evaluation" if has_reports(table) else "target val mIoU, last iteration"


def seed_values(entry: Mapping, key: str = "reported", seeds: Sequence[int] | None = None) -> dict[int, float]:
    """Per seed ``key`` of a summary entry; ``reported``: the reported mIoU (``test`` at the
    ``dev``-chosen evaluation) where the split has those halves, else the last iteration on the
    whole split; ``reported_last``: the same split at the last iteration."""
    def value(r):
        if key == "reported":
            return r["report"]["miou"] if r.get("report") else r["miou"]
        if key == "reported_last":  # the same split at the last iteration: what no rule protects
            return r["report"]["last_miou"] if r.get("report") else r["miou"]
        return r.get(key)

    return {s: value(r) for s, r in sorted(entry["seeds"].items())
            if value(r) is not None and (seeds is None or s in seeds)}


def source_entry(table: Mapping[str, dict]) -> dict | None:
    """The source run's summary entry (``source`` or ``source_multi``), or None."""
    return next((e for n, e in table.items() if n.startswith("source")), None)


def source_on_target(table: Mapping[str, dict]) -> dict[int, float]:
    """Target mIoU of the source model per seed.

    From the source run when the benchmark has one (reported, e.g. MiniCityscapes ``test``), else
    from the adaptation runs' ``before`` evaluation (each run evaluates its starting point;
    cross-city benchmarks share one source run).

    Returns:
        seed -> mIoU (fraction).
    """
    src = source_entry(table)
    if src is not None:
        return seed_values(src, "reported")
    out: dict[int, float] = {}
    for e in table.values():
        for s, r in sorted(e["seeds"].items()):
            if r.get("before_miou") is not None:
                out.setdefault(s, r["before_miou"])
    return dict(sorted(out.items()))


def reported_gains(table: Mapping[str, dict], name: str, control: str = "source") -> dict[int, float]:
    """Paired gains of ``name`` per seed over ``control`` (``source`` or ``adabn``) on the reported
    split; without ``dev``/``test`` halves, over the source model through each run's ``before``."""
    if name not in table:
        return {}
    out = {}
    for s, r in sorted(table[name]["seeds"].items()):
        if r.get("report"):
            value = r["report"].get(f"gain_over_{control}")
        else:
            value = r.get("gain") if control == "source" else None
        if value is not None:
            out[s] = value
    return out


def paired_difference(table: Mapping[str, dict], a: str, b: str) -> dict[int, float]:
    """Per seed ``reported(a) − reported(b)`` over the seeds both runs have."""
    if a not in table or b not in table:
        return {}
    va, vb = seed_values(table[a]), seed_values(table[b])
    return {s: va[s] - vb[s] for s in sorted(va) if s in vb}


def seed_noise(table: Mapping[str, dict], methods: Sequence[str] = LOSS_METHODS) -> float | None:
    """The seed noise of a loss's effect: the root mean square over ``methods`` of the std over
    seeds of the paired gain over ``adabn`` (None with fewer than two seeds).

    Args:
        table: :func:`summarize_runs` table of the main benchmark.
        methods: the table's loss runs.
    Returns:
        the std (fraction).
    """
    stds = [std(reported_gains(table, m, "adabn").values()) for m in methods if m in table]
    stds = [v for v in stds if v is not None]
    return float(np.sqrt(np.mean(np.square(stds)))) if stds else None


def present(table: Mapping[str, dict], names: Sequence[str]) -> list[str]:
    """The names that have a run in the summary, in the given order."""
    return [n for n in names if n in table]


# ------------------------------------------------------------------------------------ results.json

START_SHARES_KEY = f"start_shares_above_{SHARE_THRESHOLD:g}"
"""A seed's entry in ``results.json`` holding :attr:`RunRecord.start_shares` (in %)."""


def _percent(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _start_shares_back(entry: Mapping | None) -> dict | None:
    if not entry:
        return None
    gradient = entry.get("logit_gradient")
    return {"pixels": entry["pixels"] / 100, "logit_gradient": None if gradient is None else gradient / 100}


def results_json(study: Study) -> dict:
    """The machine-readable results: every run of every benchmark, per seed, in percent.

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
        each scored part at the last iteration. ``start_shares_above_0.9`` (:data:`START_SHARES_KEY`,
        where the run's probe measured iteration 0): :attr:`RunRecord.start_shares` in %
        (``logit_gradient`` left out for a run without a target loss). Written as ``results.json`` by ``maxsq figures``;
        :func:`records_from_results` reads it back.
    """
    commits = sorted({str(r.provenance["commit"]) for r in study.all_records() if r.provenance.get("commit")})
    benchmarks = {}
    for name, runs in sorted(study.records.items()):
        table = study.tables[name]
        splits = sorted({r.eval_split for r in runs} - {None})
        whole = splits[0] if len(splits) == 1 else splits
        entry_runs: dict[str, Any] = {}
        for r in sorted(runs, key=lambda r: (run_order_key(r.run), r.seed)):
            row = entry_runs.setdefault(r.run, {
                "method": r.method, "lambda_target": table[r.run]["lambda_target"],
                "iterations": r.iterations, "bn_mode": r.bn_mode, "seeds": {}})
            report = table[r.run]["seeds"][r.seed].get("report")
            seed_row = {
                "miou": 100 * r.last["miou"],
                "gain": _percent(r.gain),
                "per_class": {c: _percent(v) for c, v in r.last["per_class_iou"].items()},
                **({"subsets": {k: 100 * v["miou"] for k, v in r.last["subsets"].items()}}
                   if r.last.get("subsets") else {}),
            }
            if report:
                # the reported number: test at the dev-chosen evaluation (SELECTION_RULE)
                seed_row.update({
                    "miou": 100 * report["miou"], "iteration": report["iteration"],
                    "select_miou": 100 * report["select_miou"], "miou_last": 100 * report["last_miou"],
                    "miou_whole_val_last": 100 * r.last["miou"],
                    "gain": _percent(report.get("gain_over_source")),
                    "gain_over_source": _percent(report.get("gain_over_source")),
                    "gain_over_adabn": _percent(report.get("gain_over_adabn")),
                    "per_class": {c: _percent(v) for c, v in report["per_class_iou"].items()}})
            if r.start_shares:
                seed_row[START_SHARES_KEY] = {k: 100 * v for k, v in r.start_shares.items() if v is not None}
            row["seeds"][str(r.seed)] = seed_row
        splits = ({"select": SELECT_SPLIT, "report": REPORT_SPLIT, "rule": SELECTION_RULE} if has_reports(table) else
                  {"select": whole, "report": whole,
                   "rule": "last iteration (nothing is chosen on the reported split)"})
        benchmarks[name] = {"splits": splits, "runs": entry_runs}
    return {"profile": study.profile, "commit": ", ".join(commits) or None, "benchmarks": benchmarks}


# ------------------------------------------------------------------------------------ the learner's run beside the study

RESOLUTION_FACTOR = 3
"""The resolution of a paired gain is this many seed stds (:func:`seed_noise`): the one rule of 04–06."""

COMPARED = {"mIoU": "reported", "mIoU at the last iteration": "reported_last",
            "gain over source": "source", "gain over adabn": "adabn"}
"""The quantities :func:`compare` knows: a reported number, or a gain paired on the seed."""


def resolution(table: Mapping[str, dict]) -> float | None:
    """The resolution of a paired gain: :data:`RESOLUTION_FACTOR` × :func:`seed_noise` (the std over
    seeds of a loss's gain over ``adabn``, pooled over the losses). Introduced in notebook
    ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table of the main benchmark (at least two seeds).
    Returns:
        the resolution (fraction), or None with fewer than two seeds.
    """
    noise = seed_noise(table)
    return None if noise is None else RESOLUTION_FACTOR * noise


def committed_dose(path: str | os.PathLike | None = None) -> dict:
    """The dose at the starting point measured for a study (``dose_at_start`` of its main benchmark
    in ``results.json``; default the committed ``figures/results.json``): per loss ``ratio``, the
    norm of the target loss's parameter gradient over the source cross-entropy's at λ_T = 1 (mean
    over ``batches`` batches of the seed-``seed`` source model). Introduced in notebook
    ``05_evaluation``.

    Returns:
        ``{"batches", "seed", "methods": {method: {"ratio", ...}}, "lambda_target": {...}}``.
    Raises:
        MissingEvidence: the file holds no dose.
    """
    path = committed_study_path() if path is None else path
    data = json.loads(Path(path).read_text())
    for entry in data["benchmarks"].values():
        if entry.get("dose_at_start"):
            return entry["dose_at_start"]
    raise MissingEvidence(f"no dose_at_start in {path}")


def _compared_values(table: Mapping[str, dict], quantity: str, run: str) -> dict[int, float]:
    key = COMPARED[quantity]
    if key in ("source", "adabn"):
        return reported_gains(table, run, key)
    return seed_values(table[run], key) if run in table else {}


def compare(mine: Study, study: Study, quantity: str, run: str, seed: int | None = None) -> dict:
    """Print one line: the learner's value of ``quantity`` for ``run`` beside the study's mean ± std,
    and whether it agrees: within :data:`RESOLUTION_FACTOR` × the study's seed std of the same
    quantity (the rule of :func:`resolution`, applied to what is compared; a study of one seed
    falls back to the resolution). One seed of the learner's is then judged as one more draw of
    the study's seeds: the learner's seed-0 run, identical to the study's, always agrees.
    Introduced in notebook ``05_evaluation``.

    Args:
        mine: the learner's runs (:func:`load_study`).
        study: the reference study (:func:`load_committed_study`), at least two seeds.
        quantity: one of :data:`COMPARED` (``"mIoU"``: test at the dev-chosen evaluation;
            ``"gain over adabn"``: paired on the seed, ...).
        run: the run name (``maxsquare``, ``maxsquare-lambda1``, ...).
        seed: the learner's seed (default: the mean over the learner's seeds).
    Returns:
        ``{"mine", "study_mean", "study_std", "difference", "resolution", "tolerance", "agrees"}`` (fractions;
        ``mine`` and what follows None where the learner has no such run).
    Raises:
        KeyError: an unknown quantity.
    """
    if quantity not in COMPARED:
        raise KeyError(f"quantity {quantity!r}: one of {list(COMPARED)}")
    table = study.tables[study.main]
    values = _compared_values(mine.tables[mine.main], quantity, run) if mine.main else {}
    out = agreement(f"{run}, {quantity}:", values, _compared_values(table, quantity, run), mine.profile,
                    signed=quantity.startswith("gain"), seed=seed, fallback=resolution(table),
                    fallback_rule="the resolution")
    out["resolution"] = resolution(table)
    return out


def agreement(head: str, values: Mapping[int, float], ref: Mapping[int, float], profile: str, *,
              signed: bool, seed: int | None = None, fallback: float | None = None,
              fallback_rule: str = "the resolution") -> dict:
    """The course's one rule for a learner's value against a study's seeds, printed as one line:
    it agrees within :data:`RESOLUTION_FACTOR` × the study's seed std of the same quantity, or
    within ``fallback`` (a resolution) when the study has one seed. Used by :func:`compare` and
    notebook ``06``'s per-city comparison.

    Args:
        head: the line's start (what is compared).
        values, ref: the learner's and the study's values per seed (fractions).
        profile: the learner's profile (named in the line).
        signed: print with a sign (a gain).
        seed: keep only this seed of the learner's (default: their mean).
        fallback, fallback_rule: the tolerance, and its name, when the study has no seed std.
    Returns:
        ``{"mine", "study_mean", "study_std", "difference", "tolerance", "agrees"}`` (fractions;
        None where a side has no value).
    """
    if seed is not None:
        values = {s: v for s, v in values.items() if s == seed}
    value, (study_mean, study_std) = mean(values.values()), mean_std(ref.values())
    out = {"mine": value, "study_mean": study_mean, "study_std": study_std, "difference": None,
           "tolerance": None, "agrees": None}

    def pct(v):
        return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"

    ref_text = "–" if study_mean is None else pct(study_mean) + (
        f" ± {100 * study_std:.1f}" if study_std else "") + f" ({seed_text(ref)})"
    if value is None or study_mean is None:
        mine = "– (no such run in " + profile + ")" if value is None else pct(value)
        print(f"{head} yours {mine} · study {ref_text}")
        return out
    diff = value - study_mean
    tol = RESOLUTION_FACTOR * study_std if study_std else fallback
    agrees = tol is not None and abs(diff) <= tol
    out.update(difference=diff, agrees=agrees, tolerance=tol)
    rule = f"{RESOLUTION_FACTOR:g} × the study's seed std" if study_std else fallback_rule
    verdict = (f"agrees (within {rule}, {100 * tol:.1f})" if agrees else
               f"differs by {100 * diff:+.1f} (more than {rule}, {100 * tol:.1f})" if tol is not None
               else f"differs by {100 * diff:+.1f} (no spread: the study has one seed)")
    print(f"{head} yours {pct(value)} ({seed_text(values)}, {profile}) · study {ref_text} · {verdict}")
    return out
