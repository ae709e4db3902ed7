"""Figures of what is reported (notebook ``05_evaluation``): the results beside the paper's gains,
per-class gains, selection rules, BatchNorm's mode, flip ensembling, predictions and calibration.

Each function returns the matplotlib figure, so a notebook shows exactly the course figure; each
is registered (:func:`~maxsq_lib.course.plots.base.figure`) as the file ``maxsq figures`` writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ... import methods as method_registry
from ...config import LOSS_METHODS, TABLE_METHODS as ADAPT_METHODS
from ..paper import PAPER_CITATION, PAPER_GTA5_CITYSCAPES
from ..results import (RARE_SHARE, MissingEvidence, as_records, has_reports, mean, present, reported_gains,
                       reported_what, seed_text, seed_values, source_entry, source_on_target)
from ..series import class_target_share, per_class_gains, sweep_points
from ..style import denormalize_bgr, figure_style, label_panel, legend_handles
from .base import (FROM_FILES, QUALITATIVE_INDICES, bar_with_seeds, data_config, dataset_label, figure,
                   final_checkpoints, grouped_bar_axes)

_label = method_registry.label

RELIABILITY_METHODS = ("source", "adabn", "minent", "maxsquare")
"""Models of the reliability diagram: the source model, the BatchNorm-only control, the two losses."""

_SELECTION_COLORS = ("#4c72b0", "#dd8452", "#55a868")


@figure("results_minicity.png",
        "reported mIoU per method (MiniCityscapes test at the evaluation dev chooses; bars: mean over "
        "seeds, dots: seeds, line: the source model on source val) and, beside it, the paired gains over "
        "the source model (next to the paper's GTA5→Cityscapes gains) and over the AdaBN control.",
        needs=("table", "paper", "benchmark", "paper_name"), order=1)
def main_results(table: Mapping[str, dict], paper: Mapping[str, float] | None = PAPER_GTA5_CITYSCAPES,
                 benchmark: str = "minicity", paper_name: str = "GTA5→Cityscapes") -> Figure:
    """Main results: target val mIoU per method, and gains over source beside the paper's.

    Left: bars = mean over seeds, dots = seeds, error bars = std (two or more seeds), dashed line =
    the source model on source val. Right: the paired gain of each method over the source model of
    the same seed (ours) next to the paper's gain over its source model, so gains are compared
    rather than absolute numbers from different data. Introduced in notebook ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table of the main benchmark.
        paper: the paper's mIoU (%) per method incl. ``source``; None: no paper bars.
        benchmark: the benchmark's name (titles).
        paper_name: the paper benchmark's name (legend).
    Returns:
        the figure.
    Raises:
        MissingEvidence: neither a source run nor any main adaptation run.
    """
    source = source_on_target(table)
    methods = present(table, ADAPT_METHODS)
    if not source and not methods:
        raise MissingEvidence(f"no source run and none of {list(ADAPT_METHODS)} in {benchmark}")
    with figure_style():
        fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1.15, 1]})
        names = (["source"] if source else []) + methods
        seeds = sorted({s for n in methods for s in table[n]["seeds"]} | set(source))
        for i, name in enumerate(names):
            values = source if name == "source" else seed_values(table[name])
            bar_with_seeds(ax, i, values, method_registry.color(name))
        src_entry = source_entry(table)
        if src_entry is not None and src_entry["source_val_miou_mean"] is not None:
            level = 100 * src_entry["source_val_miou_mean"]
            ax.axhline(level, color="black", ls="--", lw=1, zorder=1,
                       label=f"source model on source val: {level:.1f}")
            ax.legend(frameon=False, fontsize=7.5, loc="upper left")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([_label(n) for n in names], rotation=25, ha="right")
        ax.set_ylabel("target val mIoU (%)")
        ax.set_ylim(0, max(ax.get_ylim()[1], 10) * 1.08)
        ax.set_ylabel(f"{'MiniCityscapes test' if has_reports(table) else 'target val'} mIoU (%)")
        ax.set_title(f"{benchmark}: {reported_what(table)}, {seed_text(seeds)}", fontsize=9)

        gain_methods = [m for m in methods if m != "adabn"]
        with_control = "adabn" in table and has_reports(table)
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
            bar_with_seeds(ax_gain, at[1], reported_gains(table, name), color, width=width, fontsize=6.5)
            if with_control:
                bar_with_seeds(ax_gain, at[2], reported_gains(table, name, "adabn"), color,
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


@figure("per_class_gain.png",
        "per-class IoU gain of each method over the BatchNorm-only control (AdaBN) of the same seed "
        "(mean over seeds); rare classes are marked.", needs=("runs", "benchmark"), order=2)
def per_class_gain(runs: Sequence, methods: Sequence[str] = ("none",) + LOSS_METHODS,
                   benchmark: str = "minicity") -> Figure:
    """Heatmap of per-class IoU gains over the BatchNorm-only control (rows methods, columns classes).

    Values are paired on the seed with the ``adabn`` run (where missing, each run's ``before``),
    on the reported split, then averaged; the colour map is diverging and centred at 0; column
    labels give the control's IoU; classes with less than
    :data:`RARE_SHARE` of the labelled target-val pixels are starred. Notebook ``05_evaluation``.

    Args:
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        methods: rows (those present are drawn).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no adaptation run with a ``before`` evaluation.
    """
    runs = as_records(runs)
    rows = [m for m in methods if any(r.run == m and r.before for r in runs)]
    if not rows:
        raise MissingEvidence(f"no adaptation runs of {list(methods)} with a 'before' evaluation in {benchmark}")
    first = next(r for r in runs if r.run == rows[0])
    classes = list(first.class_names)
    gains = np.array([[np.nan if (v := per_class_gains(runs, m).get(c)) is None else 100 * v
                       for c in classes] for m in rows])
    controls = [r for r in runs if r.run == "adabn"]
    reference = "AdaBN" if controls else "source"
    if controls:
        source_iou = [mean(r.reported_per_class.get(c) for r in controls) for c in classes]
    else:
        befores = [r for r in runs if r.run == rows[0] and r.before]
        source_iou = [mean(r.before["per_class_iou"].get(c) for r in befores) for c in classes]
    share = class_target_share(runs)
    seeds = sorted({r.seed for r in runs if r.run in rows})
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
                     f"{seed_text(seeds)})", fontsize=9)
        if share is not None:
            fig.text(0.01, 0.01, f"* fewer than {100 * RARE_SHARE:.0f} % of the labelled target val "
                     f"pixels. '{reference}': its IoU (%).", fontsize=7.5, color="#444444")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


@figure("selection_rules.png",
        "last iteration vs the best evaluation on target val (uses target labels, the paper's protocol) "
        "vs the label-free choice (lowest mean entropy).", needs=("table", "benchmark"), order=6)
def selection_rules(table: Mapping[str, dict], methods: Sequence[str] = ("source",) + ADAPT_METHODS,
                    benchmark: str = "minicity") -> Figure:
    """Which evaluation is reported: last iteration, best on target val, or the label-free choice.

    "Best on target val" uses the target labels (the paper's protocol); the label-free choice takes
    the evaluation with the lowest mean prediction entropy. Means over seeds. Notebook
    ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table.
        methods: groups (``source`` = the source run).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run with these evaluations.
    """
    rows = []
    for m in methods:
        entry = source_entry(table) if m == "source" else table.get(m)
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
                bar_with_seeds(ax, i + (k - 1) * width, seed_values(entry, key), _SELECTION_COLORS[k],
                                width=width, label=text if i == 0 else None, fontsize=6.5)
        grouped_bar_axes(ax, [n for n, _ in rows], f"{benchmark}: selection rules, mean over {seed_text(seeds)}", ncol=3)
        fig.tight_layout()
    return fig


@figure("bn_mode.png",
        "MaxSquare with BatchNorm in train mode (the authors') vs frozen, beside the BatchNorm-only "
        "control and the source model.", needs=("table", "benchmark"), order=7)
def bn_mode(table: Mapping[str, dict], benchmark: str = "minicity") -> Figure:
    """MaxSquare with BatchNorm in train mode (the authors') vs frozen, beside ``none`` and source.

    All bars use the seeds of the ``maxsquare-bn-frozen`` run. Notebook ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table.
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
                     seed_values(table["none"], seeds=seeds)))
    if "maxsquare" in table:
        bars.append(("MaxSquare\n(BN train, authors)", method_registry.color("maxsquare"),
                     seed_values(table["maxsquare"], seeds=seeds)))
    bars.append(("MaxSquare\n(BN frozen)", "#f4a6a6", seed_values(frozen)))
    with figure_style():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for i, (_, color, values) in enumerate(bars):
            bar_with_seeds(ax, i, values, color)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([b[0] for b in bars], fontsize=8)
        ax.set_ylabel("target val mIoU (%)")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.1)
        ax.set_title(f"{benchmark}: BatchNorm during adaptation, {seed_text(seeds)}")
        fig.tight_layout()
    return fig


@figure("flip.png", "target val mIoU without and with flip ensembling (mean of the two softmaxes).",
        needs=("table", "benchmark"), order=9)
def flip(table: Mapping[str, dict], methods: Sequence[str] = ("source",) + ADAPT_METHODS,
         benchmark: str = "minicity") -> Figure:
    """Target val mIoU without vs with flip ensembling (``last`` vs ``last_flip``), per method.

    Arguments as :func:`selection_rules`. Notebook ``05_evaluation``.

    Raises:
        MissingEvidence: no run has a flip evaluation.
    """
    rows = []
    for m in methods:
        entry = source_entry(table) if m == "source" else table.get(m)
        if entry is not None and seed_values(entry, "miou_flip"):
            rows.append((m, entry))
    if not rows:
        raise MissingEvidence(f"no flip evaluations (last_flip) in {benchmark}")
    seeds = sorted({s for _, e in rows for s in e["seeds"]})
    with figure_style():
        fig, ax = plt.subplots(figsize=(8.6, 4.0))
        width = 0.38
        for i, (name, entry) in enumerate(rows):
            color = method_registry.color(name)
            bar_with_seeds(ax, i - width / 2, seed_values(entry, "miou"), color, width=width,
                            label="no flip" if i == 0 else None, fontsize=6.5)
            bar_with_seeds(ax, i + width / 2, seed_values(entry, "miou_flip"), color, width=width,
                            hatch="///", label="flip (mean of the softmaxes)" if i == 0 else None, fontsize=6.5)
        grouped_bar_axes(ax, [n for n, _ in rows], f"{benchmark}: flip ensembling, last iteration, {seed_text(seeds)}", ncol=2)
        fig.tight_layout()
    return fig


@figure("qualitative.png",
        "four target val images: label and the predictions of the source model, the controls and each "
        "method (seed 0, final checkpoints).", needs=FROM_FILES, order=13)
def qualitative(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
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

    from ... import course
    from ...labels import class_set_for

    cfg = data_config(profile, benchmark, runs_root, data_root)
    columns = [(name, run_cfg) for name, run_cfg, _ in
               final_checkpoints(profile, benchmark, runs_root, data_root, ("source",) + tuple(methods), seed)]
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


@figure("reliability.png",
        "seed 0: accuracy against confidence of the target val pixels for the source model, AdaBN, "
        "MinEnt and MaxSquare, with the expected calibration error.",
        needs=FROM_FILES, order=15)
def reliability(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
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

    from ... import course
    from ...labels import IGNORE_INDEX
    from ..analysis import calibration_bins

    cfg = data_config(profile, benchmark, runs_root, data_root)
    models = final_checkpoints(profile, benchmark, runs_root, data_root, methods, seed)
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



# ------------------------------------------------------------------------------------ drawn in notebook 05 only
# (not registered with @figure: they are the chapter's, not files of figures/)

def waterfall_steps(table: Mapping[str, dict], methods: Sequence[str] = ("none",) + LOSS_METHODS
                    ) -> list[tuple[str, float, float, dict[int, float]]]:
    """The steps of :func:`waterfall`: the source model's level, then AdaBN's paired gain over it,
    then each of ``methods``' paired gain over ``adabn`` (each step starts at AdaBN's level).
    Introduced in notebook ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table with ``dev``/``test`` reports.
    Returns:
        ``[(run, base, height, {seed: gain})]`` (fractions): ``("source", 0, level, per seed)``,
        ``("adabn", level, mean gain over source, ...)``, then one row per method present.
    Raises:
        MissingEvidence: no source or ``adabn`` run with reports.
    """
    source = source_on_target(table)
    over_source = reported_gains(table, "adabn", "source")
    if not source or not over_source:
        raise MissingEvidence("the waterfall needs the source model and adabn with dev/test reports")
    level = mean(source.values())
    steps = [("source", 0.0, level, source), ("adabn", level, mean(over_source.values()), over_source)]
    adabn = level + steps[1][2]
    for m in present(table, methods):
        gains = reported_gains(table, m, "adabn")
        if gains:
            steps.append((m, adabn, mean(gains.values()), gains))
    return steps


def waterfall(table: Mapping[str, dict], resolution: float | None = None,
              methods: Sequence[str] = ("none",) + LOSS_METHODS, benchmark: str = "minicity") -> Figure:
    """Where the gain over the source model comes from: source → AdaBN → ``none`` and each loss.

    Left: the reported mIoU as a waterfall (the source level, AdaBN's step, then each run's step
    beyond AdaBN from AdaBN's level); right: the steps beyond AdaBN enlarged, as paired differences
    with one dot per seed. The grey band is ± ``resolution`` around AdaBN's level (left) and around
    zero (right): a step inside it is not resolved. Introduced in notebook ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table with ``dev``/``test`` reports.
        resolution: the band's half-width (fraction; :func:`~maxsq_lib.course.results.resolution`),
            None for no band.
        methods: the runs after AdaBN.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: see :func:`waterfall_steps`.
    """
    steps = waterfall_steps(table, methods)
    level, adabn = steps[0][2], steps[1][1] + steps[1][2]
    seeds = sorted(steps[0][3])
    with figure_style():
        fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
        for i, (name, base, height, _) in enumerate(steps):
            ax.bar(i, 100 * height, bottom=100 * base, color=method_registry.color(name), width=0.65)
            ax.text(i, 100 * (base + max(height, 0)) + 0.3, f"{100 * height:+.1f}" if i else f"{100 * height:.1f}",
                    ha="center", fontsize=7.5)
        if resolution is not None:
            ax.axhspan(100 * (adabn - resolution), 100 * (adabn + resolution), color="#bbbbbb", alpha=0.5, lw=0)
        ax.axhline(100 * adabn, color="black", lw=0.6, ls=":")
        ax.set_ylim(100 * level - 4, 100 * adabn + 3)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([_label(s[0]) for s in steps], rotation=30, ha="right", fontsize=7.5)
        ax.set_ylabel("test mIoU (%), dev-chosen")
        ax.set_title("the steps: source → AdaBN → beyond AdaBN", fontsize=9)
        later = steps[2:]
        for i, (name, _, height, per_seed) in enumerate(later):
            zoom.bar(i, 100 * height, color=method_registry.color(name), width=0.6)
            zoom.scatter([i] * len(per_seed), [100 * v for v in per_seed.values()], color="black", s=12, zorder=3)
        if resolution is not None:
            zoom.axhspan(-100 * resolution, 100 * resolution, color="#bbbbbb", alpha=0.5, lw=0,
                         label=f"resolution ± {100 * resolution:.1f}")
            zoom.legend(frameon=False, fontsize=7, loc="upper left")
        zoom.axhline(0, color="black", lw=0.8)
        zoom.set_xticks(range(len(later)))
        zoom.set_xticklabels([_label(s[0]) for s in later], rotation=30, ha="right", fontsize=7.5)
        zoom.set_ylabel("gain over AdaBN (points, paired)")
        zoom.set_title("beyond AdaBN, enlarged (dots: seeds)", fontsize=9)
        fig.suptitle(f"{benchmark}: what BatchNorm does and what each loss adds, {seed_text(seeds)}", fontsize=10)
        fig.tight_layout()
    return fig


def dose_points(table: Mapping[str, dict], dose: Mapping, methods: Sequence[str] = LOSS_METHODS,
                key: str = "reported_last") -> dict[str, list[tuple[float, float, float]]]:
    """The points of :func:`dose_response`: for each loss, its runs at every λ_T (the sweep and the
    table's run) on the dose's seed, at dose = λ_T × the loss's gradient ratio to the source
    cross-entropy at the start (``dose["methods"][m]["ratio"]``). Introduced in notebook
    ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table.
        dose: :func:`~maxsq_lib.course.results.committed_dose` (or ``dose_evidence``).
        key: ``reported_last`` (test at the last iteration, where collapse shows) or ``reported``.
    Returns:
        ``{method: [(dose, λ_T, mIoU)]}`` sorted by dose (fractions).
    """
    seed = dose.get("seed", 0)
    out = {}
    for m in methods:
        ratio = (dose["methods"].get(m) or {}).get("ratio")
        points = sweep_points(table, m, [seed], key) if ratio is not None else []
        if points:
            out[m] = [(lam * ratio, lam, v) for lam, v in points]
    return out


def dose_response(table: Mapping[str, dict], dose: Mapping, resolution: float | None = None,
                  methods: Sequence[str] = LOSS_METHODS, benchmark: str = "minicity") -> Figure:
    """The thesis in one picture: test mIoU at the last iteration against the dose, one curve per
    loss, with AdaBN's level ± ``resolution`` (grey band). If the curves lie on one another, the
    size of the gradient and not the shape of the loss decides. Introduced in notebook
    ``05_evaluation``.

    Args:
        table: :func:`~maxsq_lib.course.results.summarize_runs` table with the λ sweep.
        dose: :func:`~maxsq_lib.course.results.committed_dose`.
        resolution: the band's half-width (fraction), None for no band.
        methods: one curve each.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no loss has runs at two λ_T.
    """
    points = {m: p for m, p in dose_points(table, dose, methods).items() if len(p) > 1}
    if not points:
        raise MissingEvidence(f"no λ sweep in {benchmark}")
    seed = dose.get("seed", 0)
    adabn = seed_values(table["adabn"], seeds=[seed]).get(seed) if "adabn" in table else None
    with figure_style():
        fig, ax = plt.subplots(figsize=(8.5, 4.6))
        if adabn is not None:
            ax.axhline(100 * adabn, color=method_registry.color("adabn"), lw=1.2, label="AdaBN")
            if resolution is not None:
                ax.axhspan(100 * (adabn - resolution), 100 * (adabn + resolution), color="#bbbbbb", alpha=0.5,
                           lw=0, label=f"AdaBN ± resolution ({100 * resolution:.1f})")
        for m, marker in zip(points, ("s", "o", "^", "v", "D")):
            x, lams, y = zip(*points[m])
            ax.plot(x, [100 * v for v in y], marker=marker, ms=6, color=method_registry.color(m), label=_label(m))
            # the small λ_T sit on top of one another near the band; the large ones are where curves part
            for xi, lam, yi in ((a, b, c) for a, b, c in zip(x, lams, y) if b >= 0.3):
                ax.annotate(f"{lam:g}", (xi, 100 * yi), textcoords="offset points", xytext=(4, -9), fontsize=6,
                            color=method_registry.color(m))
        ax.set_xscale("log")
        ax.set_xlabel("dose at the start: λ_T × ‖∇ target loss‖ / ‖∇ source CE‖ (small numbers: λ_T from 0.3)")
        ax.set_ylabel("test mIoU at the last iteration (%)")
        ax.set_title(f"{benchmark}: final test mIoU against the dose, seed {seed}", fontsize=9)
        ax.legend(frameon=False, fontsize=7, loc="lower left")
        fig.tight_layout()
    return fig
