"""Figures of how adaptation runs (notebooks ``04_adaptation`` and ``05_evaluation``): the curves of a
seed, the λ_T sweep and its dose curves, and Multi's pseudo-labels over adaptation; and the dose
measured at the starting point (:func:`dose_evidence`), which ``results.md`` tabulates.

Each figure function returns the matplotlib figure and is registered
(:func:`~maxsq_lib.course.plots.base.figure`) as the file ``maxsq figures`` writes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ... import methods as method_registry
from ...config import LOSS_METHODS, TABLE_METHODS as ADAPT_METHODS
from ..results import (MissingEvidence, as_records, has_reports, mean, reported_what, seed_noise,
                       seed_text, seed_values, source_on_target)
from ..series import probe_entries, subset_curve, subset_miou, sweep_points, sweep_runs
from ..style import figure_style
from .base import course_config, data_config, figure

_label = method_registry.label


@figure("training_curves.png",
        "seed 0: target val mIoU during adaptation (iteration 0 = the source model) and the logged "
        "source cross-entropy and target loss per method.", needs=("runs", "benchmark"), order=3)
def training_curves(runs: Sequence, seed: int = 0, methods: Sequence[str] = ADAPT_METHODS,
                    benchmark: str = "minicity") -> Figure:
    """Adaptation curves of one seed: target val mIoU, source CE and target loss vs iteration.

    Iteration 0 is the source model (``before``). Losses are the values the trainer logged
    (``train_log``, averaged over ``log_every`` iterations), unweighted by λ_T. Notebook
    ``04_adaptation``.

    Args:
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        seed: which seed.
        methods: runs to draw.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: none of the methods has a run of this seed.
    """
    chosen = {r.run: r for r in as_records(runs) if r.run in methods and r.seed == seed}
    names = [m for m in methods if m in chosen]
    if not names:
        raise MissingEvidence(f"no adaptation runs of seed {seed} in {benchmark}")
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.0))
        for name in names:
            run, color = chosen[name], method_registry.color(name)
            its, miou = subset_curve(run)
            axes[0].plot(its, miou, marker="o", ms=3, color=color, label=_label(name))
            log = run.train_log
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


@figure("lambda_sweep.png",
        "reported mIoU against λ_T for every loss, with MaxSquare at MinEnt's initial gradient norm as a "
        "separate marker, the controls, and a band of 3 × the seed std of a loss's gain around AdaBN.",
        needs=("table", "benchmark"), order=4)
def lambda_sweep(table: Mapping[str, dict], methods: Sequence[str] = LOSS_METHODS,
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
        table: :func:`~maxsq_lib.course.results.summarize_runs` table of the main benchmark.
        methods: the swept losses.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no sweep runs.
    """
    sweeps = {m: sweep_runs(table, m) for m in methods}
    if not any(sweeps.values()):
        names = ", ".join(f"{m}-lambda<v>" for m in methods)
        raise MissingEvidence(f"no λ-sweep runs ({names}) in {benchmark}")
    seeds = sorted({s for runs in sweeps.values() for e in runs.values() for s in e["seeds"]})
    with figure_style():
        fig, ax = plt.subplots(figsize=(10.5, 4.8))
        lambdas: set[float] = set()  # the swept values (the x ticks)
        for method, marker in zip(methods, ("s", "o", "^", "v", "D")):
            points = sweep_points(table, method, seeds)
            if points:
                x, y = zip(*points)
                lambdas.update(x)
                ax.plot(x, [100 * v for v in y], marker=marker, ms=6, color=method_registry.color(method),
                        label=_label(method) + (" (dev-chosen)" if has_reports(table) else ""))
            last = sweep_points(table, method, seeds, "reported_last") if has_reports(table) else []
            if last:
                x, y = zip(*last)
                ax.plot(x, [100 * v for v in y], marker=marker, ms=4, ls="--", lw=1, alpha=0.6,
                        color=method_registry.color(method), label=f"{_label(method)} (last iteration)")
        match, matched_lambda = table.get("maxsquare-match-minent"), None
        if match is not None and isinstance(match["lambda_target"], (int, float)):
            value = mean(seed_values(match, seeds=seeds).values())
            if value is not None:
                matched_lambda = float(match["lambda_target"])
                ax.scatter([match["lambda_target"]], [100 * value], marker="*", s=160, zorder=5,
                           color=method_registry.color("maxsquare"), edgecolor="black", linewidths=0.6,
                           label=f"MaxSquare at MinEnt's gradient norm (λ_T={match['lambda_target']:.3g})")
        source = mean(v for s, v in source_on_target(table).items() if s in seeds)
        if source is not None:
            ax.axhline(100 * source, color=method_registry.color("source"), ls="--", lw=1, label="source model")
        noise = seed_noise(table)
        for control, ls in (("adabn", "-"), ("none", ":")):
            if control in table:
                level = mean(seed_values(table[control], seeds=seeds).values())
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
        ax.set_ylabel(f"{'MiniCityscapes test' if has_reports(table) else 'target val'} mIoU (%)")
        ax.set_title(f"{benchmark}: λ_T sweep ({reported_what(table)}), {seed_text(seeds)}", fontsize=9)
        ax.legend(frameon=False, fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
    return fig


@figure("dose_curves.png",
        "seed 0: test mIoU over adaptation for every λ_T of the sweep, one panel per loss, with the none "
        "curve and the AdaBN level (ring: dev's choice).", needs=("runs", "table", "benchmark"), order=5)
def dose_curves(runs: Sequence, table: Mapping[str, dict], seed: int = 0,
                methods: Sequence[str] = LOSS_METHODS, subset: str = "test",
                benchmark: str = "minicity") -> Figure:
    """Target mIoU against adaptation iteration for every λ_T of the sweep, one panel per loss.

    Each line is one run of seed ``seed`` (the sweep's ``<method>-lambda<v>`` and the table's
    ``<method>``), coloured by λ; the ``none`` control's curve and the ``adabn`` level are drawn in
    every panel; a ring marks the evaluation that ``dev`` chooses. Iteration 0 is the starting
    point. Notebook ``05_evaluation``.

    Args:
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        table: its :func:`~maxsq_lib.course.results.summarize_runs` table.
        seed: which seed (the sweep's).
        methods: one panel each.
        subset: the scored half to draw (``test``: the reported one).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no sweep run of this seed.
    """
    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}
    panels = [(m, sorted(((float(e["lambda_target"]), n) for n, e in
                          list(sweep_runs(table, m).items()) + ([(m, table[m])] if m in table else [])
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
                x, y = subset_curve(by_name["none"], subset)
                ax.plot(x, y, color="black", ls=":", lw=1.4, label="none (no target loss)")
            if "adabn" in by_name:  # its result is its last evaluation (its `before` is the source model)
                ax.axhline(100 * subset_miou(by_name["adabn"].last, subset), color=method_registry.color("adabn"),
                           lw=1.2, label="AdaBN")
            for lam, name in lines:
                x, y = subset_curve(by_name[name], subset)
                ax.plot(x, y, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=f"λ_T {lam:g}")
                choice = by_name[name].report
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


@figure("pseudo_labels.png",
        "seed 0: MaxSquare+IW+Multi's fused pseudo-labels over adaptation for every λ_T: kept fraction, "
        "precision of the kept ones, and the test mIoU.",
        needs=("runs", "table", "benchmark"), order=17)
def pseudo_labels(runs: Sequence, table: Mapping[str, dict], seed: int = 0,
                  method: str = "maxsquare_iw_multi", subset: str = "test",
                  benchmark: str = "minicity") -> Figure:
    """Multi-level guidance's pseudo-labels over adaptation, per λ_T: kept fraction, precision.

    One line per run of ``method`` (the table's and the sweep's, seed ``seed``), coloured by λ_T:
    the fraction of target val pixels whose fused pseudo-label passes the threshold, the share of
    the kept, labelled ones that are right (dotted: the accuracy of every labelled pixel, the
    precision with no threshold), and the ``subset`` mIoU of the same evaluations. Measured by the
    probe on the scored model (:mod:`maxsq_lib.engine.probe`). Notebook ``05_evaluation``.

    Args:
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        table: its :func:`~maxsq_lib.course.results.summarize_runs` table.
        seed: which seed.
        method: a pseudo-label method (``maxsquare_iw_multi``).
        subset: the scored half of the third panel.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run of ``method`` with pseudo-label records.
    """
    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}
    names = [n for n in [method, *sweep_runs(table, method)] if n in by_name]
    lines = sorted((float(by_name[n].lambda_target), n) for n in names
                   if isinstance(by_name[n].lambda_target, (int, float)) and
                   any("pseudo_labels" in e["probe"] for e in probe_entries(by_name[n])))
    if not lines:
        raise MissingEvidence(f"no {method} run of seed {seed} in {benchmark} has pseudo-label probe "
                              f"records: train the runs again with this version")
    cmap = plt.get_cmap("viridis")
    colour = {lam: cmap(i / max(1, len(lines) - 1)) for i, (lam, _) in enumerate(lines)}
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
        for lam, name in lines:
            entries = [e for e in probe_entries(by_name[name]) if "pseudo_labels" in e["probe"]]
            x = [int(e["iteration"]) for e in entries]
            kept = [100 * e["probe"]["pseudo_labels"]["kept_fraction"] for e in entries]
            precision = [np.nan if e["probe"]["pseudo_labels"]["precision"] is None
                         else 100 * e["probe"]["pseudo_labels"]["precision"] for e in entries]
            accuracy = [np.nan if e.get("pixel_accuracy") is None else 100 * e["pixel_accuracy"] for e in entries]
            tag = f"λ_T {lam:g}" + (" (table)" if name == method else "")
            axes[0].plot(x, kept, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
            axes[1].plot(x, precision, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
            axes[1].plot(x, accuracy, ls=":", lw=1.1, color=colour[lam])
            cx, cy = subset_curve(by_name[name], subset)
            axes[2].plot(cx, cy, marker="o", ms=2.5, lw=1.3, color=colour[lam], label=tag)
        if "adabn" in by_name:
            axes[2].axhline(100 * subset_miou(by_name["adabn"].last, subset), color=method_registry.color("adabn"),
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


DOSE_BATCHES = 8
"""Batches (the first of the source and target train lists, not augmented) of :func:`dose_evidence`."""


def dose_evidence(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
                  data_root: str | None = None, seed: int = 0, batches: int = DOSE_BATCHES) -> dict:
    """:func:`~maxsq_lib.course.analysis.dose_at_start` of every loss for the source model of
    ``seed``, on the first ``batches`` source and target train batches (the profile's batch sizes):
    the dose table of ``results.md`` (:func:`maxsq_lib.course.evidence.dose_markdown`) and
    ``results.json``. Notebook ``05_evaluation``.

    Returns:
        its dict, plus ``lambda_target`` (the profile's λ_T per method) and ``seed``.
    Raises:
        MissingEvidence: no data or no source checkpoint.
    """
    import torch

    from ... import course
    from ...engine.build import run_dir_for
    from ..analysis import dose_at_start, start_batches

    cfg = data_config(profile, benchmark, runs_root, data_root)
    src_cfg = course_config(profile, benchmark, None, runs_root, data_root, seed)
    if not (run_dir_for(src_cfg, "source") / "final.pt").is_file():
        raise MissingEvidence(f"no source checkpoint (final.pt) of seed {seed} in {benchmark}")
    try:
        model = course.load_run_model(src_cfg, "source", which="final", device="cpu")
        pairs = start_batches(cfg, batches)
        torch.manual_seed(0)
        out = dose_at_start(model, pairs, LOSS_METHODS, lambda_seg=cfg.adapt.lambda_seg,
                            multi=src_cfg.source.multi, faithful_scale=cfg.adapt.faithful_scale,
                            iw_ratio=cfg.adapt.iw_ratio, threshold=cfg.adapt.threshold)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise MissingEvidence(f"cannot measure the dose in {benchmark}: {exc}") from exc
    lambdas = {m: course_config(profile, benchmark, m, runs_root, data_root, seed).adapt.lambda_target
               for m in LOSS_METHODS}
    return {**out, "seed": seed, "lambda_target": lambdas}


def method_curves(runs: Sequence, method: str, seed: int = 0, subset: str = "test",
                  benchmark: str = "minicity") -> Figure:
    """One method's adaptation beside its controls: mIoU over the iterations and its logged losses.

    Left: the ``subset`` mIoU of ``method`` (and of ``none``, dotted) at every evaluation; each curve
    starts at its run's ``before`` (under ``eval.bn_statistics: target`` that is the source model with
    target BatchNorm statistics). Iteration 0 also holds the source model's own marker (the source
    run, its running statistics); AdaBN is a labelled horizontal line; a ring marks the evaluation
    ``dev`` chooses. Middle and right: the logged source cross-entropy and target loss (unweighted
    by λ_T). Legends sit below the axes. Not a registered course figure: notebook ``04_adaptation``
    introduces it.

    Args:
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        method: the adaptation run to draw (a run name: ``maxsquare``, ``maxsquare-lambda1``).
        seed: which seed.
        subset: the scored half (``test``: the reported one; the whole split where a run has none).
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run ``method`` of this seed.
    """
    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}
    if method not in by_name:
        raise MissingEvidence(f"no run {method} of seed {seed} in {benchmark}")
    run = by_name[method]
    color = method_registry.color(method.split("-")[0])
    with figure_style():
        fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.2), gridspec_kw={"width_ratios": (1.6, 1, 1)})
        ax = axes[0]
        if "none" in by_name and method != "none":
            x, y = subset_curve(by_name["none"], subset)
            ax.plot(x, y, ls=":", lw=1.4, color="black", label="none (the loop, no target loss)")
        x, y = subset_curve(run, subset)
        ax.plot(x, y, marker="o", ms=3.5, color=color, label=method)
        if run.report is not None and subset == "test":
            ax.scatter([run.report["iteration"]], [100 * run.report["miou"]], s=90, facecolors="none",
                       edgecolors=color, linewidths=1.4, zorder=5, label="the evaluation dev chooses")
        source = next((r for r in by_name.values() if r.stage == "source"), None)
        if source is not None:
            ax.scatter([0], [100 * subset_miou(source.last, subset)], marker="s", s=55, zorder=6,
                       color=method_registry.color("source"), label="source model")
        if "adabn" in by_name:
            ax.axhline(100 * subset_miou(by_name["adabn"].last, subset), color=method_registry.color("adabn"),
                       lw=1.2, label="AdaBN (no step)")
        ax.set(xlabel="adaptation iteration", ylabel=f"{subset} mIoU (%)", title=f"{subset} mIoU")
        for ax, key, title in ((axes[1], "source_ce", "source cross-entropy"),
                               (axes[2], "target_loss", "target loss L_T (before λ_T)")):
            pts = [(e["iteration"], e[key]) for e in run.train_log if e.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), color=color, lw=1.2)
            ax.set(xlabel="adaptation iteration", title=f"{title} (logged)")
        axes[0].legend(frameon=False, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        fig.suptitle(f"{benchmark}: {method}, seed {seed}", fontsize=10)
        fig.tight_layout()
    return fig
