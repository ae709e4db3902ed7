"""Every course figure and ``figures/results.md``, rebuilt from the runs (``maxsq figures``).

:func:`regenerate` reads the ``metrics.json`` of every finished run under
``<runs>/<profile>/`` and writes a fixed set of PNG files plus ``results.md`` into one folder.
Regenerating from the same runs gives identical bytes: figures go through
:func:`maxsq_lib.course.style.save_figure` (no timestamps in the metadata, fixed size and DPI), every
iteration order is sorted, and ``results.md`` quotes the dates and commits recorded *in the runs*
(``provenance``), never today's. A figure whose evidence is missing (no λ sweep, no cross-city
runs, no checkpoints, no data) is skipped and the reason noted in ``results.md``; nothing else in
the folder is touched.

Each figure has its own function returning the matplotlib figure, so a notebook shows exactly the
course figure (``05_evaluation``: :func:`results_figure`, :func:`per_class_gain_figure`,
:func:`selection_rules_figure`, :func:`flip_figure`, :func:`qualitative_figure`,
:func:`lambda_sweep_figure`, :func:`bn_mode_figure`; ``04_adaptation``: :func:`training_curves_figure`;
``03_gradient_analysis``: :func:`gradient_curves_figure`; ``06_cross_city``:
:func:`cross_city_figure`). Tables are from :mod:`maxsq_lib.course.tables`.

The paper's numbers are those of Chen, Xue, Cai, "Domain Adaptation for Semantic Segmentation with
Maximum Squares Loss", ICCV 2019, as listed in the README of ZJULearning/MaxSquareLoss (SYNTHIA rows
from its version before 2019-07-25).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .. import methods as method_registry
from ..config import CITIES, CROSS_CITY_METHODS, LOSS_METHODS, TABLE_METHODS as ADAPT_METHODS
from ..engine.runs import find_runs
from ..files import write_text_atomic
from .tables import SELECTION_RULE, dev_choice, markdown_tables, results_json, summarize_runs
from .style import (denormalize_bgr, figure_style, label_panel,
                  legend_handles, save_figure)

# ------------------------------------------------------------------------------------ constants

PAPER_CITATION = ("Chen, Xue, Cai, ICCV 2019, README of ZJULearning/MaxSquareLoss")
"""Where the paper's numbers come from (official-code-facts §8)."""

PAPER_GTA5_CITYSCAPES: dict[str, float] = {
    "source": 36.9, "minent": 42.2, "maxsquare": 44.3, "maxsquare_iw": 45.2, "maxsquare_iw_multi": 46.4}
"""The paper's GTA5→Cityscapes mIoU-19 (%)."""

PAPER_SYNTHIA_16: dict[str, float] = {
    "source": 30.1, "minent": 38.0, "maxsquare": 39.3, "maxsquare_iw": 40.4, "maxsquare_iw_multi": 41.4}
"""The paper's SYNTHIA→Cityscapes mIoU-16 (%) (README before 2019-07-25)."""

PAPER_SYNTHIA_13: dict[str, float] = {
    "source": 34.3, "minent": 44.5, "maxsquare": 45.8, "maxsquare_iw": 46.9, "maxsquare_iw_multi": 48.2}
"""The paper's SYNTHIA→Cityscapes mIoU*-13 (%) (README before 2019-07-25)."""


PAPER_NTHU: dict[str, dict[str, float]] = {
    "Rome": {"source": 51.0, "maxsquare": 53.9, "maxsquare_iw": 54.5},
    "Rio": {"source": 48.9, "maxsquare": 52.0, "maxsquare_iw": 53.3},
    "Tokyo": {"source": 47.8, "maxsquare": 49.7, "maxsquare_iw": 50.5},
    "Taipei": {"source": 46.3, "maxsquare": 49.8, "maxsquare_iw": 50.6},
}
"""The paper's Cityscapes→NTHU mIoU-13 (%) per city."""


RARE_SHARE = 0.02
"""Classes below this share of labelled target-val pixels are marked rare in the per-class figure."""

QUALITATIVE_INDICES: tuple[int, ...] = (0, 1, 2, 3)
"""Target val images of the qualitative grid and the sample grid (fixed, for determinism)."""

FREQUENCY_LIMIT = 500
"""Images per domain counted for the class-frequency figure (the first ones, for speed)."""

MAIN_BENCHMARKS: tuple[str, ...] = ("minicity", "gta5_cityscapes", "synthia_cityscapes")
"""Main-table benchmarks, preferred in this order."""

_CROSS_CITY = re.compile(r"^(?P<prefix>.+)_nthu_(?P<city>rome|rio|tokyo|taipei)$")

FIGURES: dict[str, str] = {
    "results_minicity.png": "reported mIoU per method (MiniCityscapes test at the evaluation dev "
                            "chooses; bars: mean over seeds, dots: seeds, line: the source model on "
                            "source val) and, beside it, the paired gains over the source model (next "
                            "to the paper's GTA5→Cityscapes gains) and over the AdaBN control.",
    "per_class_gain.png": "per-class IoU gain of each method over the BatchNorm-only control (AdaBN) "
                          "of the same seed (mean over seeds); rare classes are marked.",
    "training_curves.png": "seed 0: target val mIoU during adaptation (iteration 0 = the source "
                           "model) and the logged source cross-entropy and target loss per method.",
    "lambda_sweep.png": "reported mIoU against λ_T for every loss, with MaxSquare at MinEnt's "
                        "initial gradient norm as a separate marker, the controls, and a band of "
                        "3 × the seed std of a loss's gain around AdaBN.",
    "dose_curves.png": "seed 0: test mIoU over adaptation for every λ_T of the sweep, one panel per "
                       "loss, with the none curve and the AdaBN level (ring: dev's choice).",
    "selection_rules.png": "last iteration vs the best evaluation on target val (uses target labels, "
                           "the paper's protocol) vs the label-free choice (lowest mean entropy).",
    "bn_mode.png": "MaxSquare with BatchNorm in train mode (the authors') vs frozen, beside the "
                   "BatchNorm-only control and the source model.",
    "cross_city.png": "Cityscapes→NTHU protocol (13 classes) per city: source, AdaBN, none, "
                      "MaxSquare, MaxSquare+IW, beside the paper's numbers.",
    "flip.png": "target val mIoU without and with flip ensembling (mean of the two softmaxes).",
    "gradient_curves.png": "analytic: gradient magnitude of entropy and MaxSquare for a binary "
                           "prediction, w.r.t. the probability and w.r.t. the logit.",
    "class_frequencies.png": "share of labelled pixels per class in the source and target domains "
                             "(log scale).",
    "sample_grid.png": "the first source training and target val images with their labels.",
    "qualitative.png": "four target val images: label and the predictions of the source model, "
                       "the controls and each method (seed 0, final checkpoints).",
    "gradient_map.png": "one target val image: where entropy, MaxSquare and MaxSquare + IW put their "
                        "logit gradient (per-pixel share of each loss's total) at the start of adaptation.",
    "reliability.png": "seed 0: accuracy against confidence of the target val pixels for the source "
                       "model, AdaBN, MinEnt and MaxSquare, with the expected calibration error.",
    "gradient_shares_during.png": "seed 0: share of each loss's logit gradient per confidence bin at "
                                  "every evaluation of adaptation, at the table's λ_T and at λ_T 1, "
                                  "against the share of pixels per bin.",
    "pseudo_labels.png": "seed 0: MaxSquare+IW+Multi's fused pseudo-labels over adaptation for every "
                         "λ_T: kept fraction, precision of the kept ones, and the test mIoU.",
}
"""Every figure :func:`regenerate` writes, with the sentence ``results.md`` gives it."""

_SELECTION_COLORS = ("#4c72b0", "#dd8452", "#55a868")


class MissingEvidence(LookupError):
    """The runs (or data, or checkpoints) a figure needs are not there; the message says which."""


# ------------------------------------------------------------------------------------ the runs

@dataclass
class CourseRuns:
    """The finished runs of one profile, grouped by benchmark.

    Attributes:
        runs_root: the runs folder.
        profile: the profile.
        by_benchmark: benchmark -> metrics dicts (from :func:`find_runs`).
        tables: benchmark -> :func:`summarize_runs` table.
        main: the main-table benchmark (``minicity`` for MiniCity profiles), or None.
        cities: city name -> its cross-city benchmark, in :data:`CITIES` order.
    """

    runs_root: Path
    profile: str
    by_benchmark: dict[str, list[dict]]
    tables: dict[str, dict]
    main: str | None
    cities: dict[str, str] = field(default_factory=dict)


def load_course_runs(runs_root: str | os.PathLike, profile: str) -> CourseRuns:
    """Read and summarise every finished run of a profile.

    Args:
        runs_root: the runs folder (``runs/``).
        profile: ``smoke``, ``cpu``, ``gpu`` or ``paper``.
    Returns:
        a :class:`CourseRuns`.
    Raises:
        FileNotFoundError: no finished run under ``<runs_root>/<profile>/``.
    """
    base = Path(runs_root) / profile
    runs = find_runs(runs_root, profile)
    if not runs:
        raise FileNotFoundError(
            f"no finished runs under {base}: expected <benchmark>/<run name>/seed<k>/ folders holding "
            f"metrics.json and a FINISHED marker (train them with `maxsq course --profile {profile}`)")
    by_benchmark: dict[str, list[dict]] = {}
    for m in runs:
        by_benchmark.setdefault(str(m["benchmark"]), []).append(m)
    by_benchmark = {b: by_benchmark[b] for b in sorted(by_benchmark)}
    tables = {b: summarize_runs(r) for b, r in by_benchmark.items()}
    plain = [b for b in by_benchmark if not _CROSS_CITY.match(b)]
    main = next((b for b in MAIN_BENCHMARKS if b in plain), plain[0] if plain else None)
    found = {}
    for b in by_benchmark:
        hit = _CROSS_CITY.match(b)
        if hit:
            found[hit["city"]] = b
    cities = {c: found[c.lower()] for c in CITIES if c.lower() in found}
    return CourseRuns(Path(runs_root), profile, by_benchmark, tables, main, cities)


# ------------------------------------------------------------------------------------ small helpers

def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values) -> float | None:
    vals = _finite(values)
    return float(np.mean(vals)) if vals else None


def _std(values) -> float | None:
    vals = _finite(values)
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else None


def _pts(x: float | None, signed: bool = False) -> str:
    """A fraction as percentage points with one decimal (``–`` when missing)."""
    if x is None:
        return "–"
    points = round(100 * x, 1) + 0.0  # + 0.0 turns -0.0 into 0.0, so no "-0.0" is printed
    return f"{points:+.1f}" if signed else f"{points:.1f}"


def _pm(values: Sequence[float], signed: bool = False) -> str:
    """``mean ± std`` in points over seeds (no ± with one seed)."""
    mean, std = _mean(values), _std(values)
    text = _pts(mean, signed)
    return text if std is None else f"{text} ± {_pts(std)}"


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if len(seeds) == 1:
        return f"one seed (seed {seeds[0]})"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))})"


def _label(name: str) -> str:
    return method_registry.label(name)


MINICITY_DATASET_NAMES = {"gta5": "MiniGTA", "cityscapes": "MiniCityscapes", "nthu": "MiniNTHU"}
"""How MiniCity's datasets are named in figures (the configs use the real datasets' names)."""


def dataset_label(name: str, profile: str) -> str:
    """A dataset's name in a figure: MiniGTA / MiniCityscapes on MiniCity profiles, else as given."""
    from ..config import MINICITY_PROFILES

    return MINICITY_DATASET_NAMES.get(name, name) if profile in MINICITY_PROFILES else name


def _source_entry(table: Mapping[str, dict]) -> dict | None:
    return next((e for n, e in table.items() if n.startswith("source")), None)


def source_on_target(table: Mapping[str, dict]) -> dict[int, float]:
    """Target val mIoU of the source model per seed.

    From the source run when the benchmark has one (on the reported split, e.g. MiniCityscapes
    ``test``), else from the adaptation runs' ``before`` evaluation (each run evaluates its
    starting point; cross-city benchmarks share one source run).

    Args:
        table: a :func:`summarize_runs` table of one benchmark.
    Returns:
        seed -> mIoU (fraction).
    """
    src = _source_entry(table)
    if src is not None:
        return _seed_values(src, "reported")
    out: dict[int, float] = {}
    for name, e in table.items():
        for s, r in sorted(e["seeds"].items()):
            if r.get("before_miou") is not None:
                out.setdefault(s, r["before_miou"])
    return dict(sorted(out.items()))


def _seed_values(entry: dict, key: str = "reported", seeds: Sequence[int] | None = None) -> dict[int, float]:
    """Per seed ``key`` of a table entry; ``reported``: the reported mIoU (``test`` at the
    ``dev``-chosen evaluation, :data:`~maxsq_lib.course.tables.SELECTION_RULE`) where the split
    has those halves, else the last iteration on the whole split."""
    def value(r):
        if key == "reported":
            return r["report"]["miou"] if r.get("report") else r["miou"]
        if key == "reported_last":  # the same split at the last iteration: what no rule protects
            return r["report"]["last_miou"] if r.get("report") else r["miou"]
        return r.get(key)

    return {s: value(r) for s, r in sorted(entry["seeds"].items())
            if value(r) is not None and (seeds is None or s in seeds)}


def _reported_gains(table: Mapping[str, dict], name: str, control: str) -> dict[int, float]:
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


def _reports(table: Mapping[str, dict]) -> bool:
    """Whether the table's numbers are dev-chosen test numbers."""
    return any(r.get("report") for e in table.values() for r in e["seeds"].values())


def _reported_what(table: Mapping[str, dict]) -> str:
    return "test mIoU at the dev-chosen evaluation" if _reports(table) else "target val mIoU, last iteration"


def _paired_difference(table: Mapping[str, dict], a: str, b: str) -> dict[int, float]:
    """Per seed ``miou(a) − miou(b)`` over the seeds both runs have."""
    if a not in table or b not in table:
        return {}
    va, vb = _seed_values(table[a]), _seed_values(table[b])
    return {s: va[s] - vb[s] for s in sorted(va) if s in vb}


def _gains(table: Mapping[str, dict], name: str) -> dict[int, float]:
    """Paired gains over the source model, per seed (:func:`_reported_gains`)."""
    return _reported_gains(table, name, "source")


def _present(table: Mapping[str, dict], names: Sequence[str]) -> list[str]:
    return [n for n in names if n in table]


def _sweep_runs(table: Mapping[str, dict], method: str) -> dict[str, dict]:
    """The λ-sweep runs ``<method>-lambda<v>`` of a benchmark (exactly that name: variants such
    as ``maxsquare-lambda1-bnf`` are other studies)."""
    pattern = re.compile(rf"{re.escape(method)}-lambda[0-9.]+(e-?[0-9]+)?")
    return {n: e for n, e in table.items() if pattern.fullmatch(n)}


def _bar_with_seeds(ax, x: float, per_seed: Mapping[int, float], color: str, width: float = 0.7,
                    scale: float = 100.0, label: str | None = None, hatch: str | None = None,
                    annotate: bool = True, fontsize: float = 7.5) -> None:
    """One bar (mean over seeds), a dot per seed, an error bar (std) with two or more seeds."""
    vals = np.asarray(_finite(per_seed.values())) * scale
    if vals.size == 0:
        return
    mean = float(vals.mean())
    ax.bar(x, mean, width=width, color=color, edgecolor="black", linewidth=0.5, label=label,
           hatch=hatch, zorder=2)
    if vals.size > 1:
        ax.errorbar(x, mean, yerr=float(vals.std(ddof=1)), color="black", capsize=3, lw=1, zorder=3)
        offsets = np.linspace(-width * 0.25, width * 0.25, vals.size)
        ax.scatter(x + offsets, vals, s=10, color="black", zorder=4, linewidths=0)
    if annotate:
        # above the highest of the seed dots and the error bar, so the label never sits on them
        spread = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        top = max(float(vals.max()), mean + spread)
        bottom = min(float(vals.min()), mean - spread)
        ax.annotate(f"{mean:.1f}", (x, max(top, 0.0) if mean >= 0 else min(bottom, 0.0)),
                    xytext=(0, 3 if mean >= 0 else -10), textcoords="offset points", ha="center",
                    fontsize=fontsize)


def _grouped_bar_axes(ax, names: Sequence[str], title: str, ncol: int) -> None:
    """Ticks, labels, head room and legend of a figure with a group of bars per run."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([_label(n) for n in names], rotation=20, ha="right")
    ax.set_ylabel("target val mIoU (%)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.22)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=ncol)


# ------------------------------------------------------------------------------------ figures

def results_figure(table: Mapping[str, dict], paper: Mapping[str, float] | None = PAPER_GTA5_CITYSCAPES,
                   benchmark: str = "minicity", paper_name: str = "GTA5→Cityscapes") -> Figure:
    """Main results: target val mIoU per method, and gains over source beside the paper's.

    Left: bars = mean over seeds, dots = seeds, error bars = std (two or more seeds), dashed line =
    the source model on source val. Right: the paired gain of each method over the source model of
    the same seed (ours) next to the paper's gain over its source model, so gains are compared
    rather than absolute numbers from different data. Introduced in notebook ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table of the main benchmark.
        paper: the paper's mIoU (%) per method incl. ``source``; None: no paper bars.
        benchmark: the benchmark's name (titles).
        paper_name: the paper benchmark's name (legend).
    Returns:
        the figure.
    Raises:
        MissingEvidence: neither a source run nor any main adaptation run.
    """
    source = source_on_target(table)
    methods = _present(table, ADAPT_METHODS)
    if not source and not methods:
        raise MissingEvidence(f"no source run and none of {list(ADAPT_METHODS)} in {benchmark}")
    with figure_style():
        fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1.15, 1]})
        names = (["source"] if source else []) + methods
        seeds = sorted({s for n in methods for s in table[n]["seeds"]} | set(source))
        for i, name in enumerate(names):
            values = source if name == "source" else _seed_values(table[name])
            _bar_with_seeds(ax, i, values, method_registry.color(name))
        src_entry = _source_entry(table)
        if src_entry is not None and src_entry["source_val_miou_mean"] is not None:
            level = 100 * src_entry["source_val_miou_mean"]
            ax.axhline(level, color="black", ls="--", lw=1, zorder=1,
                       label=f"source model on source val: {level:.1f}")
            ax.legend(frameon=False, fontsize=7.5, loc="upper left")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_label(n) for n in names], rotation=25, ha="right")
        ax.set_ylabel("target val mIoU (%)")
        ax.set_ylim(0, max(ax.get_ylim()[1], 10) * 1.08)
        ax.set_ylabel(f"{'MiniCityscapes test' if _reports(table) else 'target val'} mIoU (%)")
        ax.set_title(f"{benchmark}: {_reported_what(table)}, {_seed_text(seeds)}", fontsize=9)

        gain_methods = [m for m in methods if m != "adabn"]
        with_control = "adabn" in table and _reports(table)
        width = 0.27 if with_control else 0.38
        paper_labelled = False
        for i, name in enumerate(gain_methods):
            color = method_registry.color(name)
            at = (i - width, i, i + width) if with_control else (i - width / 2, i + width / 2, None)
            if paper and name in paper and "source" in paper:
                g = paper[name] - paper["source"]
                ax_gain.bar(at[0], g, width=width, color="white", edgecolor=color, hatch="///",
                            linewidth=1.0, zorder=2)
                paper_labelled = True
                ax_gain.annotate(f"{g:+.1f}", (at[0], max(g, 0)), xytext=(0, 3),
                                 textcoords="offset points", ha="center", fontsize=6.5)
            _bar_with_seeds(ax_gain, at[1], _gains(table, name), color, width=width, fontsize=6.5)
            if with_control:
                _bar_with_seeds(ax_gain, at[2], _reported_gains(table, name, "adabn"), color,
                                width=width, hatch="..", fontsize=6.5)
        ax_gain.axhline(0, color="black", lw=0.8)
        ax_gain.set_xticks(range(len(gain_methods)))
        ax_gain.set_xticklabels([_label(n) for n in gain_methods], rotation=25, ha="right")
        ax_gain.set_ylabel("paired gain (mIoU points)")
        low, high = ax_gain.get_ylim()
        # head room for the legend above the tallest bar and its label
        ax_gain.set_ylim(min(low, 0) - 0.5, high + 0.30 * (high - min(low, 0)) + 0.5)
        ax_gain.set_title("Gains: over source (the paper, here) and over AdaBN (here)")
        handles = [Patch(facecolor="#bbbbbb", edgecolor="black", linewidth=0.5,
                         label="here, over source")]
        if with_control:
            handles.append(Patch(facecolor="#bbbbbb", edgecolor="black", linewidth=0.5, hatch="..",
                                 label="here, over AdaBN"))
        if paper_labelled:
            handles.insert(0, Patch(facecolor="white", edgecolor="#555555", hatch="///",
                                    label=f"paper ({paper_name})"))
        ax_gain.legend(handles=handles, frameon=False, fontsize=7.5, loc="upper left", ncol=3)
        if paper:
            fig.text(0.5, 0.01, f"Paper: {paper_name}, source {paper.get('source', float('nan')):.1f} mIoU "
                     f"({PAPER_CITATION}). Here: method − source model (or AdaBN) of the same seed.",
                     ha="center", fontsize=7.5, color="#444444")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _class_target_share(runs: Sequence[dict]) -> np.ndarray | None:
    """Share of labelled target-val pixels per class (rows of a recorded confusion matrix)."""
    for m in runs:
        conf = (m.get("last") or {}).get("confusion")
        if conf:
            counts = np.asarray(conf, dtype=np.float64).sum(axis=1)
            if counts.sum() > 0:
                return counts / counts.sum()
    return None


def _reported_per_class(run: dict) -> dict[str, float | None]:
    """Per-class IoU of a run as reported (``test`` at the dev-chosen evaluation), else ``last``."""
    choice = dev_choice(run)
    return choice["per_class_iou"] if choice else run["last"]["per_class_iou"]


def per_class_gains(runs: Sequence[dict], method: str, control: str = "adabn") -> dict[str, float | None]:
    """Per-class IoU gain of a run over the BatchNorm-only control of the same seed, mean over seeds.

    Args:
        runs: metrics dicts of one benchmark.
        method: the run name.
        control: the run paired with (``adabn``); where it is missing, the run's own ``before``.
    Returns:
        class name -> mean gain (fraction; None where the class was absent).
    """
    chosen = sorted((m for m in runs if m["run"] == method), key=lambda m: m["seed"])
    controls = {int(m["seed"]): m for m in runs if m["run"] == control}
    if not chosen:
        return {}
    pairs = []  # (the run's per-class IoU, the reference's), once per seed
    for m in chosen:
        ref = controls.get(int(m["seed"]))
        pairs.append((_reported_per_class(m), _reported_per_class(ref) if ref is not None
                      else (m.get("before") or {}).get("per_class_iou", {})))
    out = {}
    for c in chosen[0]["class_names"]:
        diffs = [after[c] - before[c] for after, before in pairs
                 if after.get(c) is not None and before.get(c) is not None]
        out[c] = _mean(diffs)
    return out


def per_class_gain_figure(runs: Sequence[dict], methods: Sequence[str] = ("none",) + LOSS_METHODS,
                          benchmark: str = "minicity") -> Figure:
    """Heatmap of per-class IoU gains over the BatchNorm-only control (rows methods, columns classes).

    Values are paired on the seed with the ``adabn`` run (where missing, each run's ``before``),
    on the reported split, then averaged; the colour map is diverging and centred at 0; column
    labels give the control's IoU; classes with less than
    :data:`RARE_SHARE` of the labelled target-val pixels are starred. Notebook ``05_evaluation``.

    Args:
        runs: metrics dicts of one benchmark (from :func:`find_runs`).
        methods: rows (those present are drawn).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no adaptation run with a ``before`` evaluation.
    """
    rows = [m for m in methods if any(r["run"] == m and r.get("before") for r in runs)]
    if not rows:
        raise MissingEvidence(f"no adaptation runs of {list(methods)} with a 'before' evaluation in {benchmark}")
    first = next(r for r in runs if r["run"] == rows[0])
    classes = list(first["class_names"])
    gains = np.array([[np.nan if (v := per_class_gains(runs, m).get(c)) is None else 100 * v
                       for c in classes] for m in rows])
    controls = [r for r in runs if r["run"] == "adabn"]
    reference = "AdaBN" if controls else "source"
    if controls:
        source_iou = [_mean(_reported_per_class(r).get(c) for r in controls) for c in classes]
    else:
        befores = [r for r in runs if r["run"] == rows[0] and r.get("before")]
        source_iou = [_mean(r["before"]["per_class_iou"].get(c) for r in befores) for c in classes]
    share = _class_target_share(runs)
    seeds = sorted({r["seed"] for r in runs if r["run"] in rows})
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(8.0, 0.85 * len(classes) + 2.6), 0.55 * len(rows) + 2.4))
        limit = max(1.0, float(np.nanmax(np.abs(gains))) if np.isfinite(gains).any() else 1.0)
        ax.set_facecolor("#dddddd")  # classes without a value (no pixel, or no run)
        sns.heatmap(gains, ax=ax, mask=~np.isfinite(gains), cmap="RdBu", vmin=-limit, vmax=limit,
                    center=0, annot=True, fmt="+.1f", annot_kws={"fontsize": 8},
                    cbar_kws={"fraction": 0.03, "pad": 0.02, "label": "IoU gain (points)"})
        labels = []
        for j, c in enumerate(classes):
            star = "*" if share is not None and share[j] < RARE_SHARE else ""
            src = "–" if source_iou[j] is None else f"{100 * source_iou[j]:.0f}"
            labels.append(f"{c}{star}\n{reference} {src}")
        ax.set_xticks(np.arange(len(classes)) + 0.5)
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(np.arange(len(rows)) + 0.5)
        ax.set_yticklabels([_label(m) for m in rows], rotation=0)
        ax.tick_params(length=0)
        what = "the BatchNorm-only control (AdaBN)" if controls else "the source model"
        ax.set_title(f"{benchmark}: per-class IoU gain over {what} (paired, mean over "
                     f"{_seed_text(seeds)})", fontsize=9)
        if share is not None:
            fig.text(0.01, 0.01, f"* fewer than {100 * RARE_SHARE:.0f} % of the labelled target val "
                     f"pixels. '{reference}': its IoU (%).", fontsize=7.5, color="#444444")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _subset_miou(entry: dict, subset: str | None = None) -> float | None:
    """One evaluation's mIoU (fraction) on a scored subset (``dev``/``test``), or on the whole
    split (``subset`` None, or an evaluation without subsets)."""
    sub = (entry.get("subsets") or {}).get(subset)
    return sub["miou"] if sub else entry.get("miou")


def _subset_curve(run: dict, subset: str | None = None) -> tuple[list[int], list[float]]:
    """(iterations, mIoU %) of one run, starting point included, by :func:`_subset_miou`."""
    points = {}
    for entry in [run.get("before"), *(run.get("history") or []), run.get("last")]:
        if not entry or entry.get("iteration") is None:
            continue
        value = _subset_miou(entry, subset)
        if value is not None:
            points.setdefault(int(entry["iteration"]), value)
    its = sorted(points)
    return its, [100 * points[i] for i in its]


def training_curves_figure(runs: Sequence[dict], seed: int = 0, methods: Sequence[str] = ADAPT_METHODS,
                           benchmark: str = "minicity") -> Figure:
    """Adaptation curves of one seed: target val mIoU, source CE and target loss vs iteration.

    Iteration 0 is the source model (``before``). Losses are the values the trainer logged
    (``train_log``, averaged over ``log_every`` iterations), unweighted by λ_T. Notebook
    ``04_adaptation``.

    Args:
        runs: metrics dicts of one benchmark.
        seed: which seed.
        methods: runs to draw.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: none of the methods has a run of this seed.
    """
    chosen = {m["run"]: m for m in runs if m["run"] in methods and int(m["seed"]) == seed}
    names = [m for m in methods if m in chosen]
    if not names:
        raise MissingEvidence(f"no adaptation runs of seed {seed} in {benchmark}")
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.0))
        for name in names:
            run, color = chosen[name], method_registry.color(name)
            its, miou = _subset_curve(run)
            axes[0].plot(its, miou, marker="o", ms=3, color=color, label=_label(name))
            log = run.get("train_log") or []
            for ax, key in ((axes[1], "source_ce"), (axes[2], "target_loss")):
                pts = [(e["iteration"], e[key]) for e in log if e.get(key) is not None]
                if pts and not (key == "target_loss" and name == "none"):
                    x, y = zip(*pts)
                    ax.plot(x, y, color=color, lw=1.2, label=_label(name))
        axes[0].set_title(f"target val mIoU (seed {seed}; iteration 0 = source model)")
        axes[0].set_ylabel("mIoU (%)")
        axes[1].set_title("source cross-entropy (logged)")
        axes[2].set_title("target loss, before λ_T (logged)")
        axes[2].axhline(0, color="black", lw=0.6)
        for ax in axes:
            ax.set_xlabel("adaptation iteration")
        axes[0].legend(frameon=False, fontsize=7.5)
        fig.suptitle(f"{benchmark}: adaptation runs, seed {seed}", fontsize=10)
        fig.tight_layout()
    return fig


def seed_noise(table: Mapping[str, dict], methods: Sequence[str] = LOSS_METHODS) -> float | None:
    """The seed noise of a loss's effect: the root mean square over ``methods`` of the std over
    seeds of the paired gain over ``adabn`` (None with fewer than two seeds).

    Args:
        table: :func:`summarize_runs` table of the main benchmark.
        methods: the table's loss runs.
    Returns:
        the std (fraction).
    """
    stds = [_std(_reported_gains(table, m, "adabn").values()) for m in methods if m in table]
    stds = [v for v in stds if v is not None]
    return float(np.sqrt(np.mean(np.square(stds)))) if stds else None


def _sweep_points(table: Mapping[str, dict], method: str, seeds: Sequence[int],
                  key: str = "reported") -> list[tuple[float, float]]:
    """(λ_T, mIoU) of a method's sweep runs and its table run, sorted by λ (``key`` of
    :func:`_seed_values`: the reported number, or ``reported_last``)."""
    points = []
    for _name, e in list(_sweep_runs(table, method).items()) + ([(method, table[method])] if method in table else []):
        lam, value = e["lambda_target"], _mean(_seed_values(e, key, seeds=seeds).values())
        if isinstance(lam, (int, float)) and value is not None:
            points.append((float(lam), value))
    return sorted(points)


def lambda_sweep_figure(table: Mapping[str, dict], methods: Sequence[str] = LOSS_METHODS,
                        benchmark: str = "minicity") -> Figure:
    """Reported mIoU against λ_T for each loss (log x axis), with the controls and a noise band.

    Points: the sweep runs ``<method>-lambda<v>`` and the table run at its λ, on the sweep's seeds
    (solid: the reported, dev-chosen number, which falls back to the starting point when every
    later evaluation is worse on dev; dashed: the same split at the last iteration, the collapse);
    a star: MaxSquare at MinEnt's initial gradient norm (``maxsquare-match-minent``); lines: the
    source model, ``adabn`` and ``none`` on the same seeds; grey band: ``adabn`` ± 3 × the seed
    noise of a loss's gain over it (:func:`seed_noise`, from the table's seeds): a point outside
    it is an effect the instrument resolves. Notebook ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table of the main benchmark.
        methods: the swept losses.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no sweep runs.
    """
    sweeps = {m: _sweep_runs(table, m) for m in methods}
    if not any(sweeps.values()):
        names = ", ".join(f"{m}-lambda<v>" for m in methods)
        raise MissingEvidence(f"no λ-sweep runs ({names}) in {benchmark}")
    seeds = sorted({s for runs in sweeps.values() for e in runs.values() for s in e["seeds"]})
    with figure_style():
        fig, ax = plt.subplots(figsize=(10.5, 4.8))
        lambdas: set[float] = set()  # the swept values (the x ticks)
        for method, marker in zip(methods, ("s", "o", "^", "v", "D")):
            points = _sweep_points(table, method, seeds)
            if points:
                x, y = zip(*points)
                lambdas.update(x)
                ax.plot(x, [100 * v for v in y], marker=marker, ms=6, color=method_registry.color(method),
                        label=_label(method) + (" (dev-chosen)" if _reports(table) else ""))
            last = _sweep_points(table, method, seeds, "reported_last") if _reports(table) else []
            if last:
                x, y = zip(*last)
                ax.plot(x, [100 * v for v in y], marker=marker, ms=4, ls="--", lw=1, alpha=0.6,
                        color=method_registry.color(method), label=f"{_label(method)} (last iteration)")
        match, matched_lambda = table.get("maxsquare-match-minent"), None
        if match is not None and isinstance(match["lambda_target"], (int, float)):
            value = _mean(_seed_values(match, seeds=seeds).values())
            if value is not None:
                matched_lambda = float(match["lambda_target"])
                ax.scatter([match["lambda_target"]], [100 * value], marker="*", s=160, zorder=5,
                           color=method_registry.color("maxsquare"), edgecolor="black", linewidths=0.6,
                           label=f"MaxSquare at MinEnt's gradient norm (λ_T={match['lambda_target']:.3g})")
        source = _mean(v for s, v in source_on_target(table).items() if s in seeds)
        if source is not None:
            ax.axhline(100 * source, color=method_registry.color("source"), ls="--", lw=1, label="source model")
        noise = seed_noise(table)
        for control, ls in (("adabn", "-"), ("none", ":")):
            if control in table:
                level = _mean(_seed_values(table[control], seeds=seeds).values())
                if level is not None:
                    ax.axhline(100 * level, color=method_registry.color(control), ls=ls, lw=1.5,
                               label=_label(control))
                    if control == "adabn" and noise is not None:
                        ax.axhspan(100 * (level - 3 * noise), 100 * (level + 3 * noise), color="#cccccc",
                                   alpha=0.45, zorder=0, lw=0,
                                   label=f"AdaBN ± 3 × seed std of a loss's gain ({100 * noise:.2f} points)")
        ax.set_xscale("log")
        # ticks at the swept values; the matched run's λ is in its legend entry (a tick of its own
        # would collide with a nearby swept value) unless it is the only point
        ticks = []
        for v in sorted(lambdas):  # 0.09 (Multi's λ) beside 0.1 would print on top of it
            if not ticks or v > 1.2 * ticks[-1]:
                ticks.append(v)
        ticks = ticks or ([matched_lambda] if matched_lambda is not None else [])
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{v:.3g}" for v in ticks])
        ax.minorticks_off()
        ax.set_xlabel("λ_T (weight of the target loss, the authors' constants)")
        ax.set_ylabel(f"{'MiniCityscapes test' if _reports(table) else 'target val'} mIoU (%)")
        ax.set_title(f"{benchmark}: λ_T sweep ({_reported_what(table)}), {_seed_text(seeds)}", fontsize=9)
        ax.legend(frameon=False, fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
    return fig


def dose_curves_figure(runs: Sequence[dict], table: Mapping[str, dict], seed: int = 0,
                       methods: Sequence[str] = LOSS_METHODS, subset: str = "test",
                       benchmark: str = "minicity") -> Figure:
    """Target mIoU against adaptation iteration for every λ_T of the sweep, one panel per loss.

    Each line is one run of seed ``seed`` (the sweep's ``<method>-lambda<v>`` and the table's
    ``<method>``), coloured by λ; the ``none`` control's curve and the ``adabn`` level are drawn in
    every panel; a ring marks the evaluation that ``dev`` chooses. Iteration 0 is the starting
    point. Notebook ``05_evaluation``.

    Args:
        runs: metrics dicts of one benchmark.
        table: its :func:`summarize_runs` table.
        seed: which seed (the sweep's).
        methods: one panel each.
        subset: the scored half to draw (``test``: the reported one).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no sweep run of this seed.
    """
    by_name = {m["run"]: m for m in runs if int(m["seed"]) == seed}
    panels = [(m, sorted(((float(e["lambda_target"]), n) for n, e in
                          list(_sweep_runs(table, m).items()) + ([(m, table[m])] if m in table else [])
                          if n in by_name and isinstance(e["lambda_target"], (int, float)))))
              for m in methods]
    panels = [(m, lines) for m, lines in panels if len(lines) > 1]
    if not panels:
        raise MissingEvidence(f"no λ-sweep runs of seed {seed} in {benchmark}")
    all_lambdas = sorted({lam for _, lines in panels for lam, _ in lines})
    cmap = plt.get_cmap("viridis")
    colour = {lam: cmap(i / max(1, len(all_lambdas) - 1)) for i, lam in enumerate(all_lambdas)}
    with figure_style():
        cols = min(2, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.5 * rows), sharey=True, squeeze=False)
        for ax, (method, lines) in zip(axes.flat, panels):
            if "none" in by_name:
                x, y = _subset_curve(by_name["none"], subset)
                ax.plot(x, y, color="black", ls=":", lw=1.4, label="none (no target loss)")
            if "adabn" in by_name:  # its result is its last evaluation (its `before` is the source model)
                ax.axhline(100 * _subset_miou(by_name["adabn"]["last"], subset), color=method_registry.color("adabn"),
                           lw=1.2, label="AdaBN")
            for lam, name in lines:
                x, y = _subset_curve(by_name[name], subset)
                ax.plot(x, y, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=f"λ_T {lam:g}")
                choice = dev_choice(by_name[name])
                if choice is not None and subset == "test":
                    ax.scatter([choice["iteration"]], [100 * choice["miou"]], s=45, facecolors="none",
                               edgecolors=colour[lam], linewidths=1.2, zorder=5)
            ax.set_title(_label(method), fontsize=9)
            ax.set_xlabel("adaptation iteration")
            ax.legend(frameon=False, fontsize=6.5, ncol=2, loc="lower left")
        for ax in axes[:, 0]:
            ax.set_ylabel(f"{subset} mIoU (%)")
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(f"{benchmark}: dose — {subset} mIoU over adaptation per λ_T, seed {seed} "
                     f"(ring: the evaluation dev chooses)", fontsize=10)
        fig.tight_layout()
    return fig


def _probe_entries(run: dict) -> list[dict]:
    """``(iteration, probe)`` records of a run, starting point first (:mod:`maxsq_lib.engine.probe`)."""
    entries = [run.get("before"), *(run.get("history") or [])]
    return sorted((e for e in entries if e and e.get("probe")), key=lambda e: int(e["iteration"]))


def _bin_names(edges: Sequence[float]) -> list[str]:
    return [f"{a:g}–{b:g}" for a, b in zip(edges[:-1], edges[1:])]


def _run_at(table: Mapping[str, dict], method: str, lam) -> str | None:
    """The run of ``method`` at λ_T ``lam`` (``"table"``: the table's own run)."""
    if lam == "table":
        return method if method in table else None
    for name, entry in sorted(_sweep_runs(table, method).items()):
        if isinstance(entry.get("lambda_target"), (int, float)) and math.isclose(float(entry["lambda_target"]), float(lam)):
            return name
    if method in table and isinstance(table[method].get("lambda_target"), (int, float)) and \
            math.isclose(float(table[method]["lambda_target"]), float(lam)):
        return method
    return None


def gradient_shares_during_figure(runs: Sequence[dict], table: Mapping[str, dict], seed: int = 0,
                                  methods: Sequence[str] = LOSS_METHODS, lambdas: Sequence = ("table", 1.0),
                                  benchmark: str = "minicity") -> Figure:
    """Where each loss puts its gradient *during* adaptation, per confidence bin.

    Each panel is one run (a method at one λ_T, seed ``seed``): coloured bands stack, at every
    evaluation, the share of the loss's total per-pixel gradient norm ``|∂L/∂z|`` that comes from
    the target val pixels of each confidence bin (least confident at the bottom); the dashed lines
    are the same boundaries for the share of *pixels*. A band thicker than its dashed band means the
    loss trains those pixels more than their number. Measured by the probe on the scored model
    (:mod:`maxsq_lib.engine.probe`). Notebook ``05_evaluation``.

    Args:
        runs: metrics dicts of one benchmark.
        table: its :func:`summarize_runs` table.
        seed: which seed.
        methods: one row each.
        lambdas: one column each: ``"table"`` (the table's λ_T) or a sweep value.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run with probe records (runs trained before the probe existed).
    """
    by_name = {m["run"]: m for m in runs if int(m["seed"]) == seed}

    def drawn(name):
        return name in by_name and bool(_probe_entries(by_name[name]))

    # a λ no method was run at (e.g. the course's one-seed table has no sweep) gets no column
    lambdas = [lam for lam in lambdas if any(drawn(_run_at(table, m, lam)) for m in methods)]
    cells = [[(_run_at(table, m, lam), lam) for lam in lambdas] for m in methods]
    cells = [row for row in cells if any(drawn(n) for n, _ in row)]
    if not cells:
        raise MissingEvidence(f"no run of seed {seed} in {benchmark} has probe records (metrics.json "
                              f"history[i]['probe']): train the runs again with this version")
    edges = next(_probe_entries(by_name[n])[0]["probe"]["bin_edges"] for row in cells for n, _ in row if drawn(n))
    colours = plt.get_cmap("YlOrRd")(np.linspace(0.15, 0.9, len(edges) - 1))
    with figure_style():
        rows, cols = len(cells), len(lambdas)
        # at least two panels wide, so that the title and the legend fit over a single column
        fig, axes = plt.subplots(rows, cols, figsize=(4.3 * max(cols, 2), 2.3 * rows + 0.9), sharex=True,
                                 sharey=True, squeeze=False)
        for r, row in enumerate(cells):
            for c, (name, lam) in enumerate(row):
                ax = axes[r, c]
                entries = _probe_entries(by_name[name]) if name in by_name else []
                entries = [e for e in entries if e["probe"].get("gradient_share")]
                if not entries:
                    ax.text(0.5, 0.5, f"no run at λ_T {lam:g}" if lam != "table" else "no run", ha="center",
                            va="center", transform=ax.transAxes, color="#777777")
                    ax.set_title(f"{_label(methods[r])}", fontsize=8.5)
                    continue
                x = [int(e["iteration"]) for e in entries]
                grad = np.array([e["probe"]["gradient_share"] for e in entries]).T
                pix = np.cumsum(np.array([e["probe"]["pixel_share"] for e in entries]).T, axis=0)
                ax.stackplot(x, 100 * grad, colors=colours, labels=_bin_names(edges), alpha=0.95)
                for k in range(len(pix) - 1):
                    ax.plot(x, 100 * pix[k], color="black", ls="--", lw=0.9,
                            label="pixels (same boundaries)" if k == 0 else None)
                lam_value = by_name[name].get("lambda_target")
                ax.set_title(f"{_label(methods[r])}, λ_T {lam_value:g}" if isinstance(lam_value, (int, float))
                             else _label(methods[r]), fontsize=8.5)
                ax.set_ylim(0, 100)
                ax.set_xlim(min(x), max(x))
        for ax in axes[-1]:
            ax.set_xlabel("adaptation iteration")
        for ax in axes[:, 0]:
            ax.set_ylabel("share (%)")
        handles, labels = next(((h, l) for h, l in (ax.get_legend_handles_labels() for ax in axes.flat) if h),
                               ([], []))
        fig.legend(handles[::-1], labels[::-1], loc="lower center", ncol=len(labels), frameon=False,
                   fontsize=7, title="confidence max p of the pixel", title_fontsize=7.5)
        fig.suptitle(f"{benchmark}: share of each loss's gradient |∂L/∂z| per confidence bin during "
                     f"adaptation (target val, seed {seed})", fontsize=10)
        fig.tight_layout(rect=(0, 0.065, 1, 1))
    return fig


def pseudo_labels_figure(runs: Sequence[dict], table: Mapping[str, dict], seed: int = 0,
                         method: str = "maxsquare_iw_multi", subset: str = "test",
                         benchmark: str = "minicity") -> Figure:
    """Multi-level guidance's pseudo-labels over adaptation, per λ_T: kept fraction, precision.

    One line per run of ``method`` (the table's and the sweep's, seed ``seed``), coloured by λ_T:
    the fraction of target val pixels whose fused pseudo-label passes the threshold, the share of
    the kept, labelled ones that are right (dotted: the accuracy of every labelled pixel, the
    precision with no threshold), and the ``subset`` mIoU of the same evaluations. Measured by the
    probe on the scored model (:mod:`maxsq_lib.engine.probe`). Notebook ``05_evaluation``.

    Args:
        runs: metrics dicts of one benchmark.
        table: its :func:`summarize_runs` table.
        seed: which seed.
        method: a pseudo-label method (``maxsquare_iw_multi``).
        subset: the scored half of the third panel.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run of ``method`` with pseudo-label records.
    """
    by_name = {m["run"]: m for m in runs if int(m["seed"]) == seed}
    names = [n for n in [method, *_sweep_runs(table, method)] if n in by_name]
    lines = sorted((float(by_name[n]["lambda_target"]), n) for n in names
                   if isinstance(by_name[n].get("lambda_target"), (int, float)) and
                   any("pseudo_labels" in e["probe"] for e in _probe_entries(by_name[n])))
    if not lines:
        raise MissingEvidence(f"no {method} run of seed {seed} in {benchmark} has pseudo-label probe "
                              f"records: train the runs again with this version")
    cmap = plt.get_cmap("viridis")
    colour = {lam: cmap(i / max(1, len(lines) - 1)) for i, (lam, _) in enumerate(lines)}
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
        for lam, name in lines:
            entries = [e for e in _probe_entries(by_name[name]) if "pseudo_labels" in e["probe"]]
            x = [int(e["iteration"]) for e in entries]
            kept = [100 * e["probe"]["pseudo_labels"]["kept_fraction"] for e in entries]
            precision = [np.nan if e["probe"]["pseudo_labels"]["precision"] is None
                         else 100 * e["probe"]["pseudo_labels"]["precision"] for e in entries]
            accuracy = [np.nan if e.get("pixel_accuracy") is None else 100 * e["pixel_accuracy"] for e in entries]
            tag = f"λ_T {lam:g}" + (" (table)" if name == method else "")
            axes[0].plot(x, kept, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
            axes[1].plot(x, precision, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
            axes[1].plot(x, accuracy, ls=":", lw=1.1, color=colour[lam])
            cx, cy = _subset_curve(by_name[name], subset)
            axes[2].plot(cx, cy, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
        if "adabn" in by_name:
            axes[2].axhline(100 * _subset_miou(by_name["adabn"]["last"], subset), color=method_registry.color("adabn"),
                            lw=1.2, label="AdaBN")
        axes[0].set_ylabel("kept pixels (%)")
        axes[0].set_title("pixels whose pseudo-label passes the threshold", fontsize=9)
        axes[1].set_ylabel("right among kept, labelled (%)")
        axes[1].set_title("precision of the kept pseudo-labels (dotted: all pixels)", fontsize=9)
        axes[2].set_ylabel(f"{subset} mIoU (%)")
        axes[2].set_title(f"{subset} mIoU of the same evaluations", fontsize=9)
        for ax in axes:
            ax.set_xlabel("adaptation iteration")
        axes[0].legend(frameon=False, fontsize=7)
        axes[2].legend(frameon=False, fontsize=7, loc="lower left")
        fig.suptitle(f"{benchmark}: {_label(method)} pseudo-labels on target val over adaptation, "
                     f"seed {seed}", fontsize=10)
        fig.tight_layout()
    return fig


def selection_rules_figure(table: Mapping[str, dict], methods: Sequence[str] = ("source",) + ADAPT_METHODS,
                           benchmark: str = "minicity") -> Figure:
    """Which evaluation is reported: last iteration, best on target val, or the label-free choice.

    "Best on target val" uses the target labels (the paper's protocol); the label-free choice takes
    the evaluation with the lowest mean prediction entropy. Means over seeds. Notebook
    ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table.
        methods: groups (``source`` = the source run).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run with these evaluations.
    """
    rows = []
    for m in methods:
        entry = _source_entry(table) if m == "source" else table.get(m)
        if entry is not None:
            rows.append((m, entry))
    if not rows:
        raise MissingEvidence(f"none of {list(methods)} in {benchmark}")
    rules = (("miou", "last iteration"), ("best_on_target_val", "best on target val (uses labels)"),
             ("label_free_choice", "label-free (lowest entropy)"))
    seeds = sorted({s for _, e in rows for s in e["seeds"]})
    with figure_style():
        fig, ax = plt.subplots(figsize=(9.5, 4.2))
        width = 0.26
        for k, (key, text) in enumerate(rules):
            for i, (name, entry) in enumerate(rows):
                _bar_with_seeds(ax, i + (k - 1) * width, _seed_values(entry, key), _SELECTION_COLORS[k],
                                width=width, label=text if i == 0 else None, fontsize=6.5)
        _grouped_bar_axes(ax, [n for n, _ in rows], f"{benchmark}: selection rules, mean over {_seed_text(seeds)}", ncol=3)
        fig.tight_layout()
    return fig


def bn_mode_figure(table: Mapping[str, dict], benchmark: str = "minicity") -> Figure:
    """MaxSquare with BatchNorm in train mode (the authors') vs frozen, beside ``none`` and source.

    All bars use the seeds of the ``maxsquare-bn-frozen`` run. Notebook ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no ``maxsquare-bn-frozen`` run.
    """
    frozen = table.get("maxsquare-bn-frozen")
    if frozen is None:
        raise MissingEvidence(f"no maxsquare-bn-frozen run in {benchmark}")
    seeds = sorted(frozen["seeds"])
    source = {s: v for s, v in source_on_target(table).items() if s in seeds}
    bars = [("source model", method_registry.color("source"), source)]
    if "none" in table:
        bars.append(("none (BN train,\nno target loss)", method_registry.color("none"),
                     _seed_values(table["none"], seeds=seeds)))
    if "maxsquare" in table:
        bars.append(("MaxSquare\n(BN train, authors)", method_registry.color("maxsquare"),
                     _seed_values(table["maxsquare"], seeds=seeds)))
    bars.append(("MaxSquare\n(BN frozen)", "#f4a6a6", _seed_values(frozen)))
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, (_, color, values) in enumerate(bars):
            _bar_with_seeds(ax, i, values, color)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([b[0] for b in bars], fontsize=8)
        ax.set_ylabel("target val mIoU (%)")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.set_title(f"{benchmark}: BatchNorm during adaptation, {_seed_text(seeds)}")
        fig.tight_layout()
    return fig


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
            out[city][name] = _seed_values(table[name]) if name in table else {}
    return out


def cross_city_figure(tables_by_city: Mapping[str, Mapping[str, dict]],
                      paper: Mapping[str, Mapping[str, float]] | None = PAPER_NTHU) -> Figure:
    """Cityscapes→NTHU protocol per city: source / AdaBN / none / MaxSquare / +IW, beside the paper.

    Notebook ``06_cross_city``.

    Args:
        tables_by_city: city -> :func:`summarize_runs` table (cities in display order).
        paper: the paper's numbers per city; None: one panel.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no city.
    """
    if not tables_by_city:
        raise MissingEvidence("no cross-city benchmarks (<prefix>_nthu_<city>)")
    values = cross_city_values(tables_by_city)
    cities = list(values)
    names = [n for n in ("source",) + CROSS_CITY_METHODS if any(values[c].get(n) for c in cities)]
    seeds = sorted({s for v in values.values() for per in v.values() for s in per})
    with figure_style():
        panels = 2 if paper else 1
        fig, axes = plt.subplots(1, panels, figsize=(6.6 * panels, 4.4), squeeze=False)
        width = 0.8 / len(names)
        ax = axes[0, 0]
        for k, name in enumerate(names):
            for i, city in enumerate(cities):
                _bar_with_seeds(ax, i + (k - (len(names) - 1) / 2) * width, values[city][name],
                                method_registry.color(name), width=width,
                                label=_label(name) if i == 0 else None, fontsize=5.5)
        ax.set_title(f"here: MiniCity city variants, {_seed_text(seeds)}")
        if paper:
            ax_p = axes[0, 1]
            paper_names = [n for n in names if all(n in paper[c] for c in cities if c in paper)]
            pw = 0.8 / len(paper_names)
            for k, name in enumerate(paper_names):
                xs = [i + (k - (len(paper_names) - 1) / 2) * pw for i, c in enumerate(cities) if c in paper]
                ys = [paper[c][name] for c in cities if c in paper]
                ax_p.bar(xs, ys, width=pw, color=method_registry.color(name), edgecolor="black", linewidth=0.5,
                         label=_label(name), zorder=2)
                for x, y in zip(xs, ys):
                    ax_p.annotate(f"{y:.1f}", (x, y), xytext=(0, 3), textcoords="offset points",
                                  ha="center", fontsize=6.5)
            ax_p.set_title("paper: Cityscapes→NTHU")
            fig.text(0.5, 0.01, f"Paper: {PAPER_CITATION}. Here: the source model is shared by the four "
                     "cities; each city's source value is that model evaluated on the city.",
                     ha="center", fontsize=7.5, color="#444444")
        for ax in axes[0]:
            ax.set_xticks(range(len(cities)))
            ax.set_xticklabels(cities)
            ax.set_ylabel("target mIoU, 13 classes (%)")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
            ax.legend(frameon=False, fontsize=7.5, loc="upper center", ncol=3)
        fig.tight_layout(rect=(0, 0.04 if paper else 0, 1, 1))
    return fig


def flip_figure(table: Mapping[str, dict], methods: Sequence[str] = ("source",) + ADAPT_METHODS,
                benchmark: str = "minicity") -> Figure:
    """Target val mIoU without vs with flip ensembling (``last`` vs ``last_flip``), per method.

    Notebook ``05_evaluation``.

    Args:
        table: :func:`summarize_runs` table.
        methods: groups (``source`` = the source run).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run has a flip evaluation.
    """
    rows = []
    for m in methods:
        entry = _source_entry(table) if m == "source" else table.get(m)
        if entry is not None and _seed_values(entry, "miou_flip"):
            rows.append((m, entry))
    if not rows:
        raise MissingEvidence(f"no flip evaluations (last_flip) in {benchmark}")
    seeds = sorted({s for _, e in rows for s in e["seeds"]})
    with figure_style():
        fig, ax = plt.subplots(figsize=(8.6, 4.0))
        width = 0.38
        for i, (name, entry) in enumerate(rows):
            color = method_registry.color(name)
            _bar_with_seeds(ax, i - width / 2, _seed_values(entry, "miou"), color, width=width,
                            label="no flip" if i == 0 else None, fontsize=6.5)
            _bar_with_seeds(ax, i + width / 2, _seed_values(entry, "miou_flip"), color, width=width,
                            hatch="///", label="flip (mean of the softmaxes)" if i == 0 else None, fontsize=6.5)
        _grouped_bar_axes(ax, [n for n, _ in rows], f"{benchmark}: flip ensembling, last iteration, {_seed_text(seeds)}", ncol=2)
        fig.tight_layout()
    return fig


def binary_gradient_curves(p: np.ndarray | Sequence[float]) -> dict[str, np.ndarray]:
    """Per-pixel gradients of entropy and MaxSquare for a binary prediction, by autograd.

    The curves come from the library's losses (:func:`maxsq_lib.losses.entropy`,
    :func:`maxsq_lib.losses.max_square` with ``faithful=False``) on 2-class logits, multiplied by
    ``B·C`` to undo their mean, so they are the per-pixel losses ``H(p) = −p log p − (1−p) log(1−p)``
    and ``−(p² + (1−p)²)/2``. W.r.t. the probability: logits ``(log p, log(1−p))`` (softmax gives
    back ``(p, 1−p)`` exactly), analytically ``log((1−p)/p)`` and ``−(2p−1)``. W.r.t. the logit:
    logits ``(z, 0)`` with ``p = sigmoid(z)``; the chain rule multiplies by ``p(1−p)``. Notebook
    ``03_gradient_analysis``.

    Args:
        p: probabilities of class 0, strictly inside (0, 1).
    Shape:
        (N,) -> each entry (N,).
    Returns:
        ``p``, ``entropy_dp``, ``maxsquare_dp``, ``entropy_dz``, ``maxsquare_dz`` (signed, float64).
    """
    import torch

    from ..losses import entropy, max_square

    p_np = np.asarray(p, dtype=np.float64).reshape(-1)
    if p_np.size == 0 or not np.all((p_np > 0) & (p_np < 1)):
        raise ValueError("p: expected probabilities strictly between 0 and 1")
    n = p_np.size
    out = {"p": p_np}
    for name, loss in (("entropy", entropy), ("maxsquare", lambda x: max_square(x, faithful=False))):
        prob = torch.tensor(p_np, dtype=torch.float64, requires_grad=True)
        logits = torch.stack([prob.log(), (1 - prob).log()], dim=1).reshape(n, 2, 1, 1)
        (grad_p,) = torch.autograd.grad(loss(logits) * (n * 2), prob)
        z = torch.tensor(np.log(p_np / (1 - p_np)), dtype=torch.float64, requires_grad=True)
        logits = torch.stack([z, torch.zeros_like(z)], dim=1).reshape(n, 2, 1, 1)
        (grad_z,) = torch.autograd.grad(loss(logits) * (n * 2), z)
        out[f"{name}_dp"] = grad_p.detach().numpy()
        out[f"{name}_dz"] = grad_z.detach().numpy()
    return out


def gradient_curves_figure(p: np.ndarray | None = None) -> Figure:
    """|∂L/∂p| and |∂L/∂z| of entropy and MaxSquare for a binary prediction (two panels).

    W.r.t. the probability the entropy gradient grows without bound as p → 1 while MaxSquare's
    grows linearly (the paper's argument); w.r.t. the logit both vanish at p = 0.5 and p = 1 and
    the entropy's peaks at moderate confidence. Notebook ``03_gradient_analysis``.

    Args:
        p: probabilities of the predicted class (default: 0.5 … 0.995).
    Returns:
        the figure.
    """
    p = np.linspace(0.5, 0.995, 199) if p is None else np.asarray(p, dtype=np.float64)
    curves = binary_gradient_curves(p)
    styles = (("entropy", "entropy (MinEnt)", method_registry.color("minent")),
              ("maxsquare", "MaxSquare", method_registry.color("maxsquare")))
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
        for key, text, color in styles:
            axes[0].plot(p, np.abs(curves[f"{key}_dp"]), color=color, lw=1.8, label=text)
            axes[1].plot(p, np.abs(curves[f"{key}_dz"]), color=color, lw=1.8, label=text)
        axes[0].set_title("w.r.t. the probability: |∂L/∂p|")
        axes[1].set_title("w.r.t. the logit: |∂L/∂z| = |∂L/∂p|·p(1−p)")
        for ax in axes:
            ax.set_xlabel("p, probability of the predicted class (binary)")
            ax.set_xlim(0.5, 1.0)
            ax.set_ylim(bottom=0)
            ax.legend(frameon=False)
        axes[0].set_ylabel("gradient magnitude per pixel")
        fig.suptitle("Gradients of the per-pixel losses, by autograd on maxsq_lib.losses", fontsize=10)
        fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ data figures

def _course_config(profile: str, benchmark: str, method: str | None, runs_root, data_root, seed: int = 0):
    """The run config of a course run, without augmentation (figures must be deterministic)."""
    from .. import course
    from ..config import ConfigError

    try:
        return course.config_for(profile, benchmark, method, runs_root=str(runs_root), data_root=data_root,
                                 seed=seed, device="cpu", overrides={"data": {"augment": False}})
    except ConfigError as exc:
        raise MissingEvidence(f"no configuration for {profile}/{benchmark}: {exc}") from exc


def _data_config(profile: str, benchmark: str, runs_root, data_root):
    cfg = _course_config(profile, benchmark, None, runs_root, data_root)
    if not Path(cfg.data.root).is_dir():
        raise MissingEvidence(f"no data under {cfg.data.root}")
    return cfg


def data_figures(profile: str, benchmark: str, data_root: str | None = None,
                 runs_root: str | os.PathLike = "runs") -> tuple[Figure, Figure]:
    """The class-frequency figure and the sample grid of a benchmark's source train and target val.

    Uses :func:`maxsq_lib.course.stats.class_frequency_figure` (first :data:`FREQUENCY_LIMIT` images
    per domain) and :func:`~maxsq_lib.course.stats.sample_grid` (items
    :data:`QUALITATIVE_INDICES`, no augmentation). Notebook ``01_data``.

    Args:
        profile: the profile (its config names the datasets and sizes).
        benchmark: the benchmark (source and target datasets).
        data_root: dataset root (None: the profile's).
        runs_root: the runs folder (only part of the resolved config).
    Returns:
        (class frequency figure, sample grid).
    Raises:
        MissingEvidence: the data root does not exist or a dataset cannot be read.
    """
    from .. import course
    from .stats import class_frequencies, class_frequency_figure, sample_grid
    from ..labels import class_set_for

    cfg = _data_config(profile, benchmark, runs_root, data_root)
    try:
        source, target = course.dataset(cfg, "source"), course.dataset(cfg, "val")
        cs = class_set_for(cfg.data.num_classes)
        names = (f"source: {dataset_label(cfg.data.source, profile)} train",
                 f"target: {dataset_label(cfg.data.target, profile)} val")
        freqs = {}
        for name, ds in zip(names, (source, target)):
            used = min(FREQUENCY_LIMIT, len(ds))
            counted = f"all {used}" if used == len(ds) else f"first {used} of {len(ds)}"
            freqs[f"{name} ({counted} images)"] = class_frequencies(ds, cs.num_classes, limit=FREQUENCY_LIMIT)
        freq_fig = class_frequency_figure(freqs, cs, title=f"Class frequencies, {benchmark}")
        grid = sample_grid({names[0]: source, names[1]: target}, n=len(QUALITATIVE_INDICES), class_set=cs,
                           indices={n: [i for i in QUALITATIVE_INDICES if i < len(d)]
                                    for n, d in zip(names, (source, target))})
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise MissingEvidence(f"cannot read the data of {benchmark}: {exc}") from exc
    return freq_fig, grid


def _final_checkpoints(profile: str, benchmark: str, runs_root, data_root, names: Sequence[str],
                       seed: int) -> list[tuple[str, object, str]]:
    """``(name, run config, stage)`` of each of ``names`` (``source`` or an adaptation run) whose
    ``final.pt`` of ``seed`` exists, in the given order."""
    from ..engine.build import run_dir_for

    found = []
    for name in names:
        stage = "source" if name == "source" else "adapt"
        run_cfg = _course_config(profile, benchmark, None if name == "source" else name, runs_root, data_root, seed)
        if (run_dir_for(run_cfg, stage) / "final.pt").is_file():
            found.append((name, run_cfg, stage))
    return found


def qualitative_figure(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
                       data_root: str | None = None, methods: Sequence[str] = ADAPT_METHODS,
                       indices: Sequence[int] = QUALITATIVE_INDICES, seed: int = 0) -> Figure:
    """Target val images × (image, label, source model, each method), final checkpoints, CPU.

    Notebook ``05_evaluation``.

    Args:
        profile: the profile.
        benchmark: the main benchmark.
        runs_root: the runs folder.
        data_root: dataset root (None: the profile's).
        methods: adaptation runs to show (those with a ``final.pt`` are drawn).
        indices: target val items.
        seed: which seed's models.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no data, no source checkpoint, or no method checkpoint.
    """
    import torch

    from .. import course
    from ..labels import class_set_for

    cfg = _data_config(profile, benchmark, runs_root, data_root)
    columns = [(name, run_cfg) for name, run_cfg, _ in
               _final_checkpoints(profile, benchmark, runs_root, data_root, ("source",) + tuple(methods), seed)]
    if not columns or columns[0][0] != "source":
        raise MissingEvidence(f"no source checkpoint (final.pt) of seed {seed} in {benchmark}")
    if len(columns) == 1:
        raise MissingEvidence(f"no adaptation checkpoints (final.pt) of seed {seed} in {benchmark}")
    try:
        val = course.dataset(cfg, "val")
        chosen = [i for i in indices if i < len(val)]
        images, labels, names = course.batch(val, chosen)
        preds = {}
        with torch.no_grad():
            for name, run_cfg in columns:
                model = course.load_run_model(run_cfg, "source" if name == "source" else "adapt",
                                              which="final", device="cpu")
                preds[name] = course.predict(model, images, "cpu")["pred"]
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise MissingEvidence(f"cannot predict with the checkpoints of {benchmark}: {exc}") from exc
    cs = class_set_for(cfg.data.num_classes)
    ncols = 2 + len(columns)
    with figure_style():
        fig, axes = plt.subplots(len(chosen), ncols, figsize=(1.75 * ncols, 1.0 * len(chosen) + 1.3),
                                 squeeze=False)
        for r in range(len(chosen)):
            axes[r, 0].imshow(denormalize_bgr(images[r].numpy()))
            axes[r, 0].set_xticks([])
            axes[r, 0].set_yticks([])
            axes[r, 0].set_ylabel(f"val {chosen[r]}", fontsize=7)
            label_panel(axes[r, 1], labels[r].numpy(), cs)
            for c, (name, _) in enumerate(columns):
                label_panel(axes[r, 2 + c], preds[name][r], cs)
        for c, title in enumerate(["image", "label"] + [_label(n) for n, _ in columns]):
            axes[0, c].set_title(title, fontsize=8)
        fig.legend(handles=legend_handles(cs), loc="lower center", ncol=min(cs.num_classes, 10),
                   frameon=False, fontsize=7, handlelength=1.0, columnspacing=0.8)
        fig.suptitle(f"{benchmark}: {dataset_label(cfg.data.target, profile)} val predictions, seed {seed}, "
                     "final checkpoints (AdaBN and none: the BatchNorm-only controls)", fontsize=9)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


RELIABILITY_METHODS = ("source", "adabn", "minent", "maxsquare")
"""Models of the reliability diagram: the source model, the BatchNorm-only control, the two losses."""


def reliability_figure(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
                       data_root: str | None = None, methods: Sequence[str] = RELIABILITY_METHODS,
                       seed: int = 0, bins: int = 10) -> Figure:
    """Reliability diagram: accuracy against confidence of every labelled target val pixel, per
    model (final checkpoints of ``seed``), with the expected calibration error and the share of
    pixels per bin. Self-training losses push confidence up; this shows whether accuracy follows.
    Notebook ``05_evaluation``.

    Args:
        profile, benchmark, runs_root, data_root: which runs and data.
        methods: ``source`` and adaptation runs (those with a ``final.pt`` are drawn).
        seed: which seed's models.
        bins: confidence bins (:func:`~maxsq_lib.course.analysis.calibration_bins`).
    Returns:
        the figure.
    Raises:
        MissingEvidence: no data or fewer than two checkpoints.
    """
    import torch

    from .. import course
    from ..labels import IGNORE_INDEX
    from .analysis import calibration_bins

    cfg = _data_config(profile, benchmark, runs_root, data_root)
    models = _final_checkpoints(profile, benchmark, runs_root, data_root, methods, seed)
    if len(models) < 2:
        raise MissingEvidence(f"fewer than two of {list(methods)} have a final.pt of seed {seed} in {benchmark}")
    curves = {}
    try:
        val = course.dataset(cfg, "val")
        for name, run_cfg, stage in models:
            model = course.load_run_model(run_cfg, stage, which="final", device="cpu")
            conf, hit = [], []
            with torch.no_grad():
                for start in range(0, len(val), 50):
                    images, labels, _ = course.batch(val, range(start, min(len(val), start + 50)))
                    probs = course.predict(model, images, "cpu")["probs"]
                    keep = labels.numpy() != IGNORE_INDEX
                    conf.append(probs.max(1)[keep])
                    hit.append((probs.argmax(1) == labels.numpy())[keep])
            curves[name] = calibration_bins(np.concatenate(conf), np.concatenate(hit), bins)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise MissingEvidence(f"cannot predict with the checkpoints of {benchmark}: {exc}") from exc
    with figure_style():
        fig, (ax, ax_n) = plt.subplots(1, 2, figsize=(10.5, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
        ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="perfectly calibrated")
        centers = None
        for name, c in curves.items():
            centers = (c["edges"][:-1] + c["edges"][1:]) / 2
            filled = c["count"] > 0
            color = method_registry.color(name)
            ax.plot(c["confidence"][filled], c["accuracy"][filled], marker="o", ms=4, color=color,
                    label=f"{_label(name)} (ECE {100 * c['ece']:.1f})")
            ax_n.plot(centers, 100 * c["count"] / c["count"].sum(), marker="o", ms=3, color=color,
                      label=_label(name))
        ax.set_xlabel("confidence (max softmax probability)")
        ax.set_ylabel("accuracy of the pixels in the bin")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(frameon=False, fontsize=7.5, loc="upper left")
        ax.set_title(f"{benchmark}: reliability on {dataset_label(cfg.data.target, profile)} val, seed {seed}",
                     fontsize=9)
        ax_n.set_yscale("log")
        ax_n.set_xlabel("confidence bin")
        ax_n.set_ylabel("share of labelled pixels (%)")
        ax_n.set_title("where the pixels are", fontsize=9)
        fig.tight_layout()
    return fig


def gradient_map_figure(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
                        data_root: str | None = None, index: int = 0, seed: int = 0) -> Figure:
    """Where each target loss puts its gradient on one target val image: the per-pixel
    ``|∂L/∂z|`` of entropy, MaxSquare and MaxSquare + IW at the starting point of adaptation (the
    ``adabn`` model when it exists, else the source model), each as a share of its own total (so
    the loss's constant and λ cancel and only the shape is compared), on one log colour scale.
    Notebook ``03_gradient_analysis``.

    Args:
        profile, benchmark, runs_root, data_root: which runs and data.
        index: the target val item.
        seed: whose model.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no data or no checkpoint.
    """
    import torch
    from matplotlib.colors import LogNorm

    from .. import course
    from ..labels import class_set_for
    from .analysis import LOSS_LABELS, LOSS_NAMES, pixel_gradient_norms

    cfg = _data_config(profile, benchmark, runs_root, data_root)
    found = _final_checkpoints(profile, benchmark, runs_root, data_root, ("adabn", "source"), seed)
    start = found[0] if found else None
    if start is None:
        raise MissingEvidence(f"no adabn or source checkpoint (final.pt) of seed {seed} in {benchmark}")
    try:
        val = course.dataset(cfg, "val")
        images, labels, _ = course.batch(val, [min(index, len(val) - 1)])
        model = course.load_run_model(start[1], start[2], which="final", device="cpu")
        with torch.no_grad():
            logits = model(images)[0]
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise MissingEvidence(f"cannot predict with the checkpoint of {benchmark}: {exc}") from exc
    probs = logits.softmax(1)[0]
    shares = {}
    for loss in LOSS_NAMES:
        g = pixel_gradient_norms(logits, loss)[0].numpy()
        shares[loss] = g / g.sum()
    cs = class_set_for(cfg.data.num_classes)
    positive = np.concatenate([v[v > 0] for v in shares.values()])
    norm = LogNorm(vmin=max(float(np.quantile(positive, 0.01)), 1e-12), vmax=float(positive.max()))
    with figure_style():
        fig, axes = plt.subplots(2, 3, figsize=(11.0, 4.4))
        axes[0, 0].imshow(denormalize_bgr(images[0].numpy()))
        axes[0, 0].set_title("image", fontsize=8)
        label_panel(axes[0, 1], labels[0].numpy(), cs)
        axes[0, 1].set_title("label", fontsize=8)
        confidence = probs.max(0).values.numpy()
        im = axes[0, 2].imshow(confidence, vmin=0, vmax=1, cmap="viridis")
        axes[0, 2].set_title(f"confidence\n({_label(start[0])} model)", fontsize=8)
        fig.colorbar(im, ax=axes[0, 2], fraction=0.03)
        top = confidence >= np.quantile(confidence, 0.5)
        for ax, loss in zip(axes[1], LOSS_NAMES):
            im = ax.imshow(np.maximum(shares[loss], norm.vmin), norm=norm, cmap="magma")
            ax.set_title(f"{LOSS_LABELS[loss]}\n{100 * shares[loss][top].sum():.0f} % of |∂L/∂z| on the "
                         "more confident half", fontsize=7.5)
        fig.colorbar(im, ax=list(axes[1]), fraction=0.02, label="share of the loss's gradient")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{benchmark}: where each target loss pushes, val image {index}, seed {seed}", fontsize=9)
    return fig


DOSE_BATCHES = 8
"""Batches (the first of the source and target train lists, not augmented) of :func:`dose_evidence`."""


def dose_evidence(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
                  data_root: str | None = None, seed: int = 0, batches: int = DOSE_BATCHES) -> dict:
    """:func:`~maxsq_lib.course.analysis.dose_at_start` of every loss for the source model of
    ``seed``, on the first ``batches`` source and target train batches (the profile's batch sizes).

    Returns:
        its dict, plus ``lambda_target`` (the profile's λ_T per method) and ``seed``.
    Raises:
        MissingEvidence: no data or no source checkpoint.
    """
    import torch

    from .. import course
    from ..engine.build import run_dir_for
    from .analysis import dose_at_start

    cfg = _data_config(profile, benchmark, runs_root, data_root)
    src_cfg = _course_config(profile, benchmark, None, runs_root, data_root, seed)
    if not (run_dir_for(src_cfg, "source") / "final.pt").is_file():
        raise MissingEvidence(f"no source checkpoint (final.pt) of seed {seed} in {benchmark}")
    try:
        model = course.load_run_model(src_cfg, "source", which="final", device="cpu")
        source, target = course.dataset(cfg, "source"), course.dataset(cfg, "target")
        bs, tbs = cfg.adapt.batch_size, cfg.adapt.target_batch_size
        n = min(batches, len(source) // bs, len(target) // tbs)
        pairs = []
        for k in range(n):
            s_images, s_labels, _ = course.batch(source, list(range(k * bs, (k + 1) * bs)))
            t_images, _, _ = course.batch(target, list(range(k * tbs, (k + 1) * tbs)))
            pairs.append((s_images, s_labels, t_images))
        torch.manual_seed(0)
        out = dose_at_start(model, pairs, LOSS_METHODS, lambda_seg=cfg.adapt.lambda_seg,
                            multi=src_cfg.source.multi, faithful_scale=cfg.adapt.faithful_scale,
                            iw_ratio=cfg.adapt.iw_ratio, threshold=cfg.adapt.threshold)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise MissingEvidence(f"cannot measure the dose in {benchmark}: {exc}") from exc
    lambdas = {m: _course_config(profile, benchmark, m, runs_root, data_root, seed).adapt.lambda_target
               for m in LOSS_METHODS}
    return {**out, "seed": seed, "lambda_target": lambdas}


def dose_markdown(dose: Mapping | None, reason: str | None = None) -> list[str]:
    """The dose table of ``results.md``."""
    lines = ["## Dose at the starting point", ""]
    if dose is None:
        return lines + [f"Skipped ({reason}).", ""]
    lines += [f"‖∇θ λ_T·L_T‖ / ‖∇θ CE_source‖ for the source model of seed {dose['seed']} on the first "
              f"{dose['batches']} source and target train batches (BatchNorm in train mode, as the "
              "loop starts), at λ_T = 1 and at the table's λ_T; and the ratio of the logit gradient "
              "‖∂L_T/∂z‖ to MaxSquare's (the authors' constants), which sets the matched λ.", "",
              "| method | ratio at λ_T = 1 (min–max over batches) | table λ_T | ratio at the table's λ_T | "
              "logit gradient / MaxSquare's |", "|---|---|---|---|---|"]
    for m, v in dose["methods"].items():
        lam = dose["lambda_target"][m]
        lines.append(f"| {m} | {v['ratio']:.3g} ({v['ratio_min']:.3g}–{v['ratio_max']:.3g}) | {lam:g} | "
                     f"{lam * v['ratio']:.3g} | {v['logit_ratio_to_maxsquare']:.2f} |")
    return lines + [""]


# ------------------------------------------------------------------------------------ results.md

def _display_path(path: Path) -> str:
    """A path as the results tables show it: relative to the project root when inside it."""
    from .notebook import project_root

    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def _provenance_lines(course: CourseRuns) -> list[str]:
    all_runs = [m for runs in course.by_benchmark.values() for m in runs]
    prov = [m.get("provenance") or {} for m in all_runs]
    dates = sorted({str(p["date"]) for p in prov if p.get("date")})
    commits = sorted({str(p["commit"]) for p in prov if p.get("commit")})
    torch_versions = sorted({str(p["torch"]) for p in prov if p.get("torch")})
    lib_versions = sorted({str(p["maxsq_lib"]) for p in prov if p.get("maxsq_lib")})
    iterations: dict[str, set[int]] = {}
    for m in all_runs:
        if m.get("iterations") is not None:
            iterations.setdefault(str(m.get("stage")), set()).add(int(m["iterations"]))
    lines = [f"- profile: `{course.profile}`"]
    for b, table in course.tables.items():
        seeds = sorted({s for e in table.values() for s in e["seeds"]})
        lines.append(f"- `{b}`: {len(table)} runs, seeds {', '.join(map(str, seeds))}")
    lines.append(f"- run dates (from the runs' provenance): {', '.join(dates) or 'not recorded'}")
    lines.append(f"- commits: {', '.join(f'`{c}`' for c in commits) or 'not recorded'}"
                 + (f"; maxsq_lib {', '.join(lib_versions)}" if lib_versions else "")
                 + (f"; torch {', '.join(torch_versions)}" if torch_versions else ""))
    for stage in sorted(iterations):
        lines.append(f"- iterations, {stage} stage: {', '.join(map(str, sorted(iterations[stage])))}")
    return lines


def paper_tables_markdown() -> str:
    """The paper's tables (GTA5/SYNTHIA→Cityscapes and Cityscapes→NTHU) as markdown, cited."""
    order = ("source",) + LOSS_METHODS
    head = "| benchmark (metric) | " + " | ".join(_label(m) for m in order) + " |"
    rows = [head, "|" + "---|" * (len(order) + 1)]
    for name, table in (("GTA5→Cityscapes (mIoU-19)", PAPER_GTA5_CITYSCAPES),
                        ("SYNTHIA→Cityscapes (mIoU-16)", PAPER_SYNTHIA_16),
                        ("SYNTHIA→Cityscapes (mIoU*-13)", PAPER_SYNTHIA_13)):
        rows.append(f"| {name} | " + " | ".join(f"{table[m]:.1f}" for m in order) + " |")
    rows += ["", "| Cityscapes→NTHU (mIoU-13) | source only | MaxSquare | MaxSquare+IW |", "|---|---|---|---|"]
    for city in CITIES:
        v = PAPER_NTHU[city]
        rows.append(f"| {city} | {v['source']:.1f} | {v['maxsquare']:.1f} | {v['maxsquare_iw']:.1f} |")
    return "\n".join(rows) + "\n"


def _beside_paper_markdown(course: CourseRuns) -> list[str]:
    lines = ["## Beside the paper", "",
             f"The paper's numbers ({PAPER_CITATION}; the SYNTHIA rows from that README before "
             "2019-07-25, whose MinEnt rows are the authors' own MinEnt runs). They are, most likely, the "
             "best of ten per-epoch evaluations on the target val set (selection with target labels), "
             "with flip ensembling for the Multi rows; our 'best on val' column is the comparable "
             "selection, 'last' the honest one.", "", paper_tables_markdown()]
    if course.main is None:
        return lines
    table = course.tables[course.main]
    source = source_on_target(table)
    rows = ["| method | paper mIoU | paper gain | here mIoU | here gain (paired) |", "|---|---|---|---|---|",
            f"| source only | {PAPER_GTA5_CITYSCAPES['source']:.1f} | – | {_pm(list(source.values()))} | – |"]
    for m in _present(table, ADAPT_METHODS):
        paper = PAPER_GTA5_CITYSCAPES.get(m)
        ptext = "–" if paper is None else f"{paper:.1f}"
        gtext = "–" if paper is None else f"{paper - PAPER_GTA5_CITYSCAPES['source']:+.1f}"
        rows.append(f"| {_label(m)} | {ptext} | {gtext} | {_pm(list(_seed_values(table[m]).values()))} | "
                    f"{_pm(list(_gains(table, m).values()), signed=True)} |")
    lines += [f"GTA5→Cityscapes (paper) beside `{course.main}` (here), mIoU %, mean ± std over seeds:", ""]
    lines += rows + [""]
    return lines


def _noise_tolerance(table: Mapping[str, dict]) -> tuple[float, str]:
    """Threshold under which a difference is called level: 3 × the seed noise of a loss's paired
    gain over AdaBN (:func:`seed_noise`) with several seeds and an AdaBN row; else the larger seed
    std of MinEnt and MaxSquare; with one seed a fixed 0.5 points."""
    noise = seed_noise(table) if "adabn" in table else None
    if noise is not None:
        return 3 * noise, f"3 × the seed std of a loss's paired gain over AdaBN ({_pts(noise)} points)"
    stds = [table[m]["miou_std"] for m in ("minent", "maxsquare") if m in table and table[m]["miou_std"] is not None]
    if stds:
        return max(stds), "the larger std over seeds of MinEnt and MaxSquare"
    return 0.005, "a fixed 0.5 points: one seed gives no std"


def _matching_reference(runs: Sequence[dict], table: Mapping[str, dict]) -> tuple[float | None, float | None]:
    """(MinEnt's λ_T the matched run refers to, MaxSquare/MinEnt initial gradient-norm ratio).

    From the matched runs' ``lambda_matching`` record (λ = λ_ref·|g_ref|/|g|); else λ_ref from the
    MinEnt run and the ratio λ_ref/λ.
    """
    ratios, refs = [], []
    for m in runs:
        info = m.get("lambda_matching") or {}
        if (m["run"] == "maxsquare-match-minent" and info.get("gradient_norm")
                and info.get("reference_gradient_norm")):
            ratio = info["gradient_norm"] / info["reference_gradient_norm"]
            ratios.append(ratio)
            refs.append(m["lambda_target"] * ratio)
    if ratios:
        return _mean(refs), _mean(ratios)
    ref, lam = table["minent"]["lambda_target"], table["maxsquare-match-minent"]["lambda_target"]
    if isinstance(ref, (int, float)) and isinstance(lam, (int, float)) and lam > 0:
        return float(ref), float(ref) / float(lam)
    return None, None


def _minent_run_at(table: Mapping[str, dict], lam: float | None) -> str | None:
    """The MinEnt run (plain or sweep) trained at λ_T = ``lam``."""
    if lam is None:
        return "minent" if "minent" in table else None
    for name in ["minent", *_sweep_runs(table, "minent")]:
        value = table.get(name, {}).get("lambda_target")
        if isinstance(value, (int, float)) and abs(value - lam) <= 1e-3 * max(1.0, abs(lam)):
            return name
    return None


def _compare(diff: float, tol: float) -> str:
    return "ahead of" if diff > tol else "behind" if diff < -tol else "level with"


def _evidence_overview(name: str, table: Mapping[str, dict]) -> list[str]:
    """Seeds, the domain gap and the paired gains of the main methods."""
    out = []
    present = _present(table, ADAPT_METHODS)
    seeds = sorted({s for m in present for s in table[m]["seeds"]})
    if seeds:
        out.append(f"Main table `{name}`: {_seed_text(seeds)}"
                   + ("; with one seed there is no estimate of seed noise." if len(seeds) == 1 else "."))
    source, src = source_on_target(table), _source_entry(table)
    if source and src is not None and src["source_val_miou_mean"] is not None:
        s_mean = _mean(source.values())
        out.append(f"The source model reaches {_pts(s_mean)} mIoU on target val vs "
                   f"{_pts(src['source_val_miou_mean'])} on source val: a domain gap of "
                   f"{_pts(src['source_val_miou_mean'] - s_mean)} points.")
    if _reports(table):
        out.append(f"Every number below is the reported one: {SELECTION_RULE} (chosen on MiniCityscapes "
                   "dev, reported on test; nothing is chosen on test).")
    if present:
        gains = ", ".join(f"{_label(m)} {_pm(list(_gains(table, m).values()), signed=True)}" for m in present)
        out.append(f"Paired gains over the source model (points, mean ± std over seeds): {gains}.")
    beyond = [m for m in present if m != "adabn" and _reported_gains(table, m, "adabn")]
    if beyond:
        gains = ", ".join(f"{_label(m)} {_pm(list(_reported_gains(table, m, 'adabn').values()), signed=True)}"
                          for m in beyond)
        out.append(f"Paired gains over the BatchNorm-only control AdaBN (what the training adds beyond "
                   f"re-estimated BatchNorm statistics): {gains}.")
    return out


def _evidence_methods(table: Mapping[str, dict]) -> list[str]:
    """MaxSquare vs MinEnt, vs the BatchNorm-only control, the paper's order, IW and Multi."""
    out = []
    diffs = list(_paired_difference(table, "maxsquare", "minent").values())
    if diffs:
        ahead, behind = sum(v > 0 for v in diffs), sum(v < 0 for v in diffs)
        verdict = ("one seed, so this is not evidence of a difference" if len(diffs) == 1 else
                   "ahead on every seed" if ahead == len(diffs) else
                   "behind on every seed" if behind == len(diffs) else "mixed across seeds")
        out.append(f"At the paper's λ_T, MaxSquare − MinEnt (paired per seed) is {_pm(diffs, signed=True)} "
                   f"points; MaxSquare is ahead on {ahead} of {len(diffs)} seed(s) ({verdict}).")
    g_none, g_ms = _mean(_gains(table, "none").values()), _mean(_gains(table, "maxsquare").values())
    if "adabn" in table and _reports(table):
        pass  # the overview states every loss's gain over AdaBN
    elif g_none is not None and g_ms is not None:
        tail = (f"so on these runs the MaxSquare loss adds nothing beyond what target batches do through "
                f"BatchNorm ({_pts(g_ms - g_none, True)} points)" if g_ms <= g_none else
                f"so the MaxSquare loss adds {_pts(g_ms - g_none, True)} points beyond the BatchNorm effect")
        out.append(f"The control without a target loss ('none': target images only move the BatchNorm "
                   f"statistics) gains {_pts(g_none, True)}; MaxSquare gains {_pts(g_ms, True)}, {tail}.")
    order = [m for m in LOSS_METHODS if m in table]
    if len(order) >= 2:
        means = [_mean(_seed_values(table[m]).values()) for m in order]
        holds = all(a is not None and b is not None and a < b for a, b in zip(means, means[1:]))
        out.append(f"The paper's order ({' < '.join(_label(m) for m in order)}) "
                   f"{'holds' if holds else 'does not hold'} for the means here "
                   f"({', '.join(f'{_label(m)} {_pts(v)}' for m, v in zip(order, means))}).")
    for step, a, b in (("IW", "maxsquare", "maxsquare_iw"), ("Multi", "maxsquare_iw", "maxsquare_iw_multi")):
        diffs = list(_paired_difference(table, b, a).values())
        if diffs:
            paper_step = PAPER_GTA5_CITYSCAPES[b] - PAPER_GTA5_CITYSCAPES[a]
            out.append(f"Adding {step} ({_label(a)} → {_label(b)}) changes mIoU by {_pm(diffs, signed=True)} "
                       f"points, paired (the paper: {paper_step:+.1f}).")
    return out


def _evidence_lambda(table: Mapping[str, dict], runs: Sequence[dict], tol: float, tol_text: str) -> list[str]:
    """The λ_T sweep and the matched-gradient run (is it the shape or the size of the gradient?)."""
    out = []
    sweep_seeds = sorted({s for m in LOSS_METHODS for e in _sweep_runs(table, m).values() for s in e["seeds"]})
    best: dict[str, tuple[float, float]] = {}
    worst: dict[str, tuple[float, float]] = {}
    for m in LOSS_METHODS:
        points = dict(_sweep_points(table, m, sweep_seeds))
        if len(points) > 1:
            lams = sorted(points)
            best[m] = (hi := max(lams, key=points.get), points[hi])
            worst[m] = (lo := min(lams, key=points.get), points[lo])
    if best:
        parts = [f"{_label(m)} is best at λ_T = {lam:.3g} ({_pts(v)}) and lowest at λ_T = "
                 f"{worst[m][0]:.3g} ({_pts(worst[m][1])})" for m, (lam, v) in best.items()]
        sentence = f"In the λ_T sweep on {_seed_text(sweep_seeds)}, {'; '.join(parts)}."
        if "minent" in best and "maxsquare" in best:
            diff = best["maxsquare"][1] - best["minent"][1]
            spread = {m: best[m][1] - worst[m][1] for m in ("minent", "maxsquare")}
            sentence += (f" At its best λ_T MaxSquare is {_compare(diff, tol)} MinEnt at its best "
                         f"({_pts(diff, True)} points; best-on-test λ, so an upper bound for both); across "
                         f"the λ_T tried MinEnt varies by {_pts(spread['minent'])} points and MaxSquare by "
                         f"{_pts(spread['maxsquare'])}, so "
                         + ("MaxSquare is the less sensitive to λ_T here." if spread["maxsquare"] < spread["minent"] - tol
                            else "MinEnt is the less sensitive to λ_T here."
                            if spread["minent"] < spread["maxsquare"] - tol else
                            "both are about equally sensitive to λ_T here."))
        out.append(sentence)
        out += _evidence_dev_chosen_lambda(table, runs, sweep_seeds)
        out += _evidence_sensitivity(table, sweep_seeds, tol, tol_text)
    match = table.get("maxsquare-match-minent")
    if match is None or "minent" not in table:
        return out
    mseeds = sorted(match["seeds"])
    ref, ratio = _matching_reference(runs, table)
    reference_run = _minent_run_at(table, ref)
    if reference_run is None:
        out.append(f"The matched-gradient MaxSquare run refers to MinEnt at λ_T = {ref:.3g}, which was not "
                   "run: no comparison.")
        return out
    ms = _mean(_seed_values(match).values())
    me = _mean(_seed_values(table[reference_run], seeds=mseeds).values())
    if ms is None or me is None:
        return out
    diff, lam = ms - me, match["lambda_target"]
    lam_text = f"{lam:.3g}" if isinstance(lam, (int, float)) else str(lam)
    verdict = {"ahead of": "MaxSquare keeps an edge at equal gradient size here, so its advantage is not only "
                           "a smaller gradient",
               "behind": "at equal gradient size MaxSquare falls behind MinEnt here, so its edge at equal λ_T "
                         "comes from the gradient's size rather than its shape",
               "level with": "at equal gradient size the two losses are not distinguishable here, so an edge at "
                             "equal λ_T cannot be credited to the gradient's shape"}[_compare(diff, tol)]
    ref_text = f"{ref:.3g}" if ref is not None else "its λ_T"
    ratio_text = "" if ratio is None else f"; at equal λ_T, MaxSquare's initial gradient is {ratio:.2f}× MinEnt's"
    out.append(f"At matched initial gradient norm (MaxSquare λ_T = {lam_text}, whose target gradient w.r.t. the "
               f"logits equals MinEnt's at λ_T = {ref_text}{ratio_text}), MaxSquare reaches {_pts(ms)} vs MinEnt "
               f"{_pts(me)} on {_seed_text(mseeds)}: a difference of {_pts(diff, True)} points against a "
               f"tolerance of {_pts(tol)} ({tol_text}); {verdict}.")
    return out


def _evidence_dev_chosen_lambda(table: Mapping[str, dict], runs: Sequence[dict],
                                sweep_seeds: Sequence[int]) -> list[str]:
    """Each loss with λ_T chosen on dev (with its iteration), reported on test: the sweep's fair row."""
    by_run = {(m["run"], int(m["seed"])): m for m in runs}
    parts = []
    for m in LOSS_METHODS:
        names = list(_sweep_runs(table, m)) + ([m] if m in table else [])
        picks = []
        for seed in sweep_seeds:
            choices = [(c, n) for n in names if (n, seed) in by_run and (c := dev_choice(by_run[(n, seed)]))]
            if choices:
                c, n = max(choices, key=lambda t: t[0]["select_miou"])
                picks.append((c, table[n]["lambda_target"]))
        if picks:
            lam_text = ", ".join(f"{lam:g}" for _, lam in picks)
            parts.append(f"{_label(m)} λ_T {lam_text} → {_pts(_mean(c['miou'] for c, _ in picks))}")
    if not parts or not _reports(table):
        return []
    return [f"With λ_T and the iteration both chosen on dev (reported on test, {_seed_text(sweep_seeds)}): "
            f"{'; '.join(parts)}."]


def _evidence_sensitivity(table: Mapping[str, dict], sweep_seeds: Sequence[int], tol: float,
                          tol_text: str) -> list[str]:
    """Does the instrument resolve a loss's effect? The largest |effect| over AdaBN in the sweep."""
    if "adabn" not in table:
        return []
    ref = _mean(_seed_values(table["adabn"], seeds=sweep_seeds).values())
    effects = []
    for m in LOSS_METHODS:
        for lam, value in _sweep_points(table, m, sweep_seeds):
            effects.append((value - ref, m, lam))
    if ref is None or not effects:
        return []
    last = [(v - ref, m, lam) for m in LOSS_METHODS for lam, v in _sweep_points(table, m, sweep_seeds, "reported_last")]
    collapse = [e for e in last if e[0] < -tol]
    last_text = ("" if not _reports(table) else
                 f" At the last iteration (no rule protects it) {len(collapse)} of {len(last)} sweep points are "
                 f"resolved losses, down to {_pts(min(e[0] for e in last), True)} points ("
                 f"{_label(min(last)[1])} at λ_T = {min(last)[2]:.3g}): the dev rule falls back to the starting "
                 "point where adaptation collapses.")
    resolved = [e for e in effects if abs(e[0]) > tol]
    effect, m, lam = max(effects, key=lambda e: abs(e[0]))
    pos = [e for e in resolved if e[0] > 0]
    return [f"Sensitivity: {len(resolved)} of {len(effects)} sweep points differ from AdaBN by more than "
            f"{_pts(tol)} points ({tol_text}); the largest effect is {_label(m)} at λ_T = {lam:.3g}: "
            f"{_pts(effect, True)} points. "
            + (f"Resolved gains: {', '.join(f'{_label(x)} λ_T {l:.3g} {_pts(e, True)}' for e, x, l in pos)}."
               if pos else "No sweep point is a resolved gain over AdaBN"
               + ("; the resolved effects are losses." if resolved else "; no effect is resolved."))
            + last_text]


def _evidence_protocol(table: Mapping[str, dict], tol: float) -> list[str]:
    """BatchNorm mode, checkpoint selection and flip ensembling."""
    out = []
    frozen = table.get("maxsquare-bn-frozen")
    if frozen is not None and "maxsquare" in table:
        fseeds = sorted(frozen["seeds"])
        f_mean = _mean(_seed_values(frozen).values())
        t_mean = _mean(_seed_values(table["maxsquare"], seeds=fseeds).values())
        if f_mean is not None and t_mean is not None:
            out.append(f"MaxSquare with BatchNorm frozen reaches {_pts(f_mean)} vs {_pts(t_mean)} with BatchNorm "
                       f"in train mode on {_seed_text(fseeds)}: frozen is {_compare(f_mean - t_mean, tol)} train "
                       f"mode (tolerance {_pts(tol)} points).")
    rows = [r for m in _present(table, ADAPT_METHODS) for r in table[m]["seeds"].values()]

    def gap(key: str) -> float | None:
        return _mean(r[key] - r["miou"] for r in rows if r[key] is not None)

    best_gap, free_gap, flip_gap = gap("best_on_target_val"), gap("label_free_choice"), gap("miou_flip")
    if best_gap is not None:
        out.append(f"Selecting the best evaluation with target labels (the paper's protocol) adds "
                   f"{_pts(best_gap, True)} points over the last iteration on average over the methods"
                   + (f"; the label-free choice (lowest mean entropy) changes it by {_pts(free_gap, True)}."
                      if free_gap is not None else "."))
    if flip_gap is not None:
        out.append(f"Flip ensembling changes the last-iteration mIoU by {_pts(flip_gap, True)} points on "
                   "average over the methods.")
    return out


def _evidence_rare_classes(table: Mapping[str, dict], runs: Sequence[dict]) -> list[str]:
    """Mean per-class IoU change on the classes rarer than :data:`RARE_SHARE`."""
    share = _class_target_share(runs)
    if share is None:
        return []
    classes = next(iter(table.values()))["class_names"]
    rare = [c for c, s in zip(classes, share) if s < RARE_SHARE]
    parts = []
    control = "adabn" in table
    changes = {m: _mean(per_class_gains(runs, m).get(c) for c in rare)
               for m in (_present(table, ("none",) + LOSS_METHODS) if rare else [])}
    for m, change in changes.items():
        if change is not None:
            beyond = changes.get("none")
            extra = (f" ({_pts(change - beyond, True)} beyond none)"
                     if beyond is not None and m != "none" else "")
            parts.append(f"{_label(m)} {_pts(change, True)}{extra}")
    if not parts:
        return []
    what = "the BatchNorm-only control AdaBN (same seed)" if control else "the source model"
    return [f"On the rare classes ({', '.join(rare)}: each under {100 * RARE_SHARE:.0f} % of the target val "
            f"pixels) the mean per-class IoU change over {what} is: {', '.join(parts)}."]


def _evidence_cross_city(course: CourseRuns) -> list[str]:
    """Per city, one seed: MaxSquare and +IW against the source model and the controls, counting a
    win only beyond the 0.1-point rounding of the table (a one-seed difference of 0.0 is a tie)."""
    values = cross_city_values({c: course.tables[b] for c, b in course.cities.items()})
    counts = {"source": 0, "adabn": 0, "none": 0, "iw": 0}
    n, gains, ties = 0, [], 0
    margin = 0.0005
    for v in values.values():
        s, ada, none, ms, iw = (_mean(v.get(k, {}).values()) for k in ("source", "adabn", "none", "maxsquare",
                                                                        "maxsquare_iw"))
        if s is None or ms is None:
            continue
        n += 1
        gains.append(ms - s)
        counts["source"] += ms > s + margin
        counts["adabn"] += ada is not None and ms > ada + margin
        counts["none"] += none is not None and ms > none + margin
        if iw is not None:
            counts["iw"] += iw > ms + margin
            ties += abs(iw - ms) <= margin
    if not n:
        return []
    out = (f"Cross-city (13 classes, one seed, wins counted beyond 0.05 points): MaxSquare beats the source "
           f"model in {counts['source']} of {n} cities (mean gain {_pts(_mean(gains), True)} points) and +IW "
           f"beats MaxSquare in {counts['iw']} of {n} ({ties} level; the paper: 4 of 4 for both)")
    if any(values[c].get("adabn") for c in values):
        out += (f"; against the controls, MaxSquare beats AdaBN in {counts['adabn']} of {n} and none in "
                f"{counts['none']} of {n}")
    return [out + "."]


def evidence_sentences(course: CourseRuns) -> list[str]:
    """Conclusions computed from the numbers, phrased conditionally (results.md's last section).

    Args:
        course: the loaded runs.
    Returns:
        sentences (markdown bullets without the bullet).
    """
    out: list[str] = []
    if course.profile == "smoke":
        out.append("These are `smoke` runs (a few iterations on tiny data): they check the pipeline; "
                   "their numbers say nothing about the methods.")
    if course.main is not None:
        table, runs = course.tables[course.main], course.by_benchmark[course.main]
        tol, tol_text = _noise_tolerance(table)
        out += _evidence_overview(course.main, table)
        out += _evidence_methods(table)
        out += _evidence_lambda(table, runs, tol, tol_text)
        out += _evidence_protocol(table, tol)
        out += _evidence_rare_classes(table, runs)
    if course.cities:
        out += _evidence_cross_city(course)
    return out


def results_markdown(course: CourseRuns, notes: Mapping[str, str | None], dose: Mapping | None = None,
                     dose_reason: str | None = None, precision: Sequence[str] = ()) -> str:
    """The text of ``results.md`` (see :func:`regenerate`).

    Args:
        course: the loaded runs.
        notes: figure file name -> None when written, else why it was skipped.
        dose: :func:`dose_evidence` (None: skipped for ``dose_reason``).
        precision: the "Precision" section (:func:`~maxsq_lib.course.precision_study.precision_markdown`).
    Returns:
        markdown.
    """
    where = _display_path(course.runs_root / course.profile)
    lines = ["# Results", "",
             f"Generated by `maxsq figures` from `{where}` (the metrics.json of every finished run); "
             "do not edit by hand: regenerate it. mIoU in percent on the target val set.", ""]
    lines += _provenance_lines(course) + ["", "## Tables", ""]
    for benchmark, table in course.tables.items():
        lines.append(markdown_tables(benchmark, table))
    lines += _beside_paper_markdown(course)
    lines += dose_markdown(dose, dose_reason)
    lines += list(precision)
    lines += ["## Figures", ""]
    for name, text in FIGURES.items():
        reason = notes.get(name)
        lines.append(f"- `{name}`: {text}" if reason is None else f"- `{name}`: skipped ({reason}).")
    lines += ["", "## What the evidence here supports", ""]
    lines += [f"- {s}" for s in evidence_sentences(course)] or ["- No adaptation runs to compare."]
    return "\n".join(lines) + "\n"


def _precision_section(results: dict, runs: Sequence[dict], main: str | None) -> tuple[list[str], dict | None]:
    """results.md's "Precision" section and its comparison, for a study with a λ sweep (the
    committed one); the one-seed course has nothing to compare and gets no section."""
    from . import precision_study as ps
    from .notebook import project_root

    root = project_root()
    reference = ps.load_reference(root)
    if main is None or reference is None or not any("-lambda" in m["run"] for m in runs):
        return [], None
    comparison = ps.compare_with_reference(results["benchmarks"][main]["runs"], reference["runs"])
    comparisons = [(f"This study: {ps.describe_runs(runs)}", comparison)]
    for title, file in ps.TRIED_FILES.items():
        tried = ps.load_reference(root, file)
        if tried is not None:
            comparisons.append((title, ps.compare_with_reference(tried["runs"], reference["runs"])))
    lines = ps.precision_markdown(comparisons, reference["what"], ps.batchnorm_subset_check(runs),
                                  "no final model of seed 0 found")
    return lines, {"this_study": comparison, **{t: c for t, c in comparisons[1:]}}


# ------------------------------------------------------------------------------------ regenerate

def regenerate(runs_root: str | os.PathLike = "runs", profile: str = "cpu", data_root: str | None = None,
               out_dir: str | os.PathLike = "figures") -> list[Path]:
    """Rebuild every course figure, ``results.md`` and ``results.json`` from a profile's runs.

    Figures whose runs, data or checkpoints are missing are skipped with a note in
    ``results.md``; only the files named in :data:`FIGURES` and ``results.md`` are written in
    ``out_dir`` (atomically), nothing is deleted. Same runs → identical bytes.

    Args:
        runs_root: the runs folder.
        profile: the profile whose runs to read.
        data_root: dataset root for the data and qualitative figures (None: the profile's).
        out_dir: output folder.
    Returns:
        the written paths (figures in :data:`FIGURES` order, then ``results.md`` and
        ``results.json``, :func:`~maxsq_lib.course.tables.results_json`).
    Raises:
        FileNotFoundError: no finished run under ``<runs_root>/<profile>/``.
    """
    course = load_course_runs(runs_root, profile)
    out = Path(out_dir)
    main = course.main
    table = course.tables.get(main) if main else None
    runs = course.by_benchmark.get(main, []) if main else []
    paper = PAPER_SYNTHIA_16 if main == "synthia_cityscapes" else PAPER_GTA5_CITYSCAPES
    paper_name = "SYNTHIA→Cityscapes" if main == "synthia_cityscapes" else "GTA5→Cityscapes"

    def needs_main(build: Callable[[], Figure]) -> Callable[[], Figure]:
        def wrapped() -> Figure:
            if table is None:
                raise MissingEvidence("no main-table benchmark (e.g. minicity) among the runs")
            return build()
        return wrapped

    data_cache: dict[str, tuple[Figure, Figure]] = {}

    def data_figure(which: int) -> Callable[[], Figure]:
        def build() -> Figure:
            if "figs" not in data_cache:
                data_cache["figs"] = data_figures(profile, main, data_root, runs_root)
            return data_cache["figs"][which]
        return needs_main(build)

    builders: dict[str, Callable[[], Figure]] = {
        "results_minicity.png": needs_main(lambda: results_figure(table, paper, main, paper_name)),
        "per_class_gain.png": needs_main(lambda: per_class_gain_figure(runs, benchmark=main)),
        "training_curves.png": needs_main(lambda: training_curves_figure(runs, 0, benchmark=main)),
        "lambda_sweep.png": needs_main(lambda: lambda_sweep_figure(table, benchmark=main)),
        "dose_curves.png": needs_main(lambda: dose_curves_figure(runs, table, 0, benchmark=main)),
        "selection_rules.png": needs_main(lambda: selection_rules_figure(table, benchmark=main)),
        "bn_mode.png": needs_main(lambda: bn_mode_figure(table, benchmark=main)),
        "cross_city.png": lambda: cross_city_figure({c: course.tables[b] for c, b in course.cities.items()}),
        "flip.png": needs_main(lambda: flip_figure(table, benchmark=main)),
        "gradient_curves.png": gradient_curves_figure,
        "class_frequencies.png": data_figure(0),
        "sample_grid.png": data_figure(1),
        "qualitative.png": needs_main(lambda: qualitative_figure(profile, main, runs_root, data_root)),
        "reliability.png": needs_main(lambda: reliability_figure(profile, main, runs_root, data_root)),
        "gradient_map.png": needs_main(lambda: gradient_map_figure(profile, main, runs_root, data_root)),
        "gradient_shares_during.png": needs_main(lambda: gradient_shares_during_figure(runs, table, 0, benchmark=main)),
        "pseudo_labels.png": needs_main(lambda: pseudo_labels_figure(runs, table, 0, benchmark=main)),
    }
    written: list[Path] = []
    notes: dict[str, str | None] = {}
    for name in FIGURES:
        try:
            fig = builders[name]()
        except MissingEvidence as exc:
            notes[name] = str(exc)
            continue
        written.append(save_figure(fig, out / name))
        notes[name] = None
    for fig in data_cache.get("figs", ()):
        plt.close(fig)
    dose, dose_reason = None, None
    try:
        if main is None:
            raise MissingEvidence("no main-table benchmark among the runs")
        dose = dose_evidence(profile, main, runs_root, data_root)
    except MissingEvidence as exc:
        dose_reason = str(exc)
    results = results_json(course.by_benchmark, course.tables, course.profile)
    precision, comparison = _precision_section(results, runs, main)
    written.append(write_text_atomic(out / "results.md",
                                     results_markdown(course, notes, dose, dose_reason, precision)))
    if dose is not None:
        results["benchmarks"][main]["dose_at_start"] = dose
    if comparison is not None:
        results["benchmarks"][main]["precision_check"] = comparison
    written.append(write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n"))
    return written
