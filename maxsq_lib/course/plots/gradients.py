"""Figures of where each target loss puts its gradient (notebooks ``03_gradient_analysis`` and
``05_evaluation``): the analytic curves, the measured shares by confidence and class, the image-wise
weights, one image's gradient map, and the shares during adaptation.

The maths is :mod:`maxsq_lib.course.analysis`'s; here it is only drawn. ``gradient_curves``,
``gradient_map`` and ``gradient_shares_during`` are registered course figures
(:func:`~maxsq_lib.course.plots.base.figure`); :func:`curves`, :func:`shares` and
:func:`iw_weights` draw what notebook 03 measures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ... import methods as method_registry
from ...config import LOSS_METHODS
from ..analysis import LOSS_LABELS, LOSS_METHOD, binary_gradient_curves, gradient_peaks
from ..results import MissingEvidence, as_records
from ..series import probe_entries, run_at
from ..style import denormalize_bgr, figure_style, label_panel, legend_handles
from .base import FROM_FILES, data_config, figure, final_checkpoints

_label = method_registry.label


def _loss_color(name: str) -> str:
    """The figure colour of a loss of :data:`~maxsq_lib.course.analysis.LOSS_NAMES`."""
    return method_registry.color(LOSS_METHOD[name])


@figure("gradient_curves.png",
        "analytic: gradient magnitude of entropy and MaxSquare for a binary prediction, w.r.t. the "
        "probability and w.r.t. the logit.", order=10)
def gradient_curves(p: np.ndarray | None = None) -> Figure:
    """|∂L/∂p| and |∂L/∂z| of entropy and MaxSquare for a binary prediction (two panels).

    W.r.t. the probability the entropy gradient grows without bound as p → 1 while MaxSquare's
    grows linearly (the paper's argument); w.r.t. the logit both vanish at p = 0.5 and p = 1 and
    the entropy's peaks at moderate confidence. Notebook ``03_gradient_analysis``.

    Args:
        p: probabilities of the predicted class (default: 0.5 … 0.995;
            :func:`~maxsq_lib.course.analysis.binary_gradient_curves`).
    Returns:
        the figure.
    """
    p = np.linspace(0.5, 0.995, 199) if p is None else np.asarray(p, dtype=np.float64)
    g = binary_gradient_curves(p)
    with figure_style():
        fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
        for key in ("entropy", "maxsquare"):
            color = _loss_color(key)
            axes[0].plot(p, np.abs(g[f"{key}_dp"]), color=color, lw=1.8, label=LOSS_LABELS[key])
            axes[1].plot(p, np.abs(g[f"{key}_dz"]), color=color, lw=1.8, label=LOSS_LABELS[key])
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


@figure("gradient_map.png",
        "one target val image: where entropy, MaxSquare and MaxSquare + IW put their logit gradient (per-pixel "
        "share of each loss's total) at the start of adaptation.", needs=FROM_FILES, order=14)
def gradient_map(profile: str, benchmark: str, runs_root: str | os.PathLike = "runs",
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

    from ... import course
    from ...labels import class_set_for
    from ..analysis import LOSS_NAMES, pixel_gradient_norms

    cfg = data_config(profile, benchmark, runs_root, data_root)
    found = final_checkpoints(profile, benchmark, runs_root, data_root, ("adabn", "source"), seed)
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


def _bin_names(edges: Sequence[float]) -> list[str]:
    return [f"{a:g}–{b:g}" for a, b in zip(edges[:-1], edges[1:])]


@figure("gradient_shares_during.png",
        "seed 0: share of each loss's logit gradient per confidence bin at every evaluation of "
        "adaptation, at the table's λ_T and at λ_T 1, against the share of pixels per bin.",
        needs=("runs", "table", "benchmark"), order=16)
def gradient_shares_during(runs: Sequence, table: Mapping[str, dict], seed: int = 0,
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
        runs: the records of one benchmark (or its ``metrics.json`` dicts).
        table: its :func:`~maxsq_lib.course.results.summarize_runs` table.
        seed: which seed.
        methods: one row each.
        lambdas: one column each: ``"table"`` (the table's λ_T) or a sweep value.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no run with probe records (runs trained before the probe existed).
    """
    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}

    def drawn(name):
        return name in by_name and bool(probe_entries(by_name[name]))

    # a λ no method was run at (e.g. the course's one-seed table has no sweep) gets no column
    lambdas = [lam for lam in lambdas if any(drawn(run_at(table, m, lam)) for m in methods)]
    cells = [[(run_at(table, m, lam), lam) for lam in lambdas] for m in methods]
    cells = [row for row in cells if any(drawn(n) for n, _ in row)]
    if not cells:
        raise MissingEvidence(f"no run of seed {seed} in {benchmark} has probe records (metrics.json "
                              f"history[i]['probe']): train the runs again with this version")
    edges = next(probe_entries(by_name[n])[0]["probe"]["bin_edges"] for row in cells for n, _ in row if drawn(n))
    colours = plt.get_cmap("YlOrRd")(np.linspace(0.15, 0.9, len(edges) - 1))
    with figure_style():
        rows, cols = len(cells), len(lambdas)
        # at least two panels wide, so that the title and the legend fit over a single column
        fig, axes = plt.subplots(rows, cols, figsize=(4.3 * max(cols, 2), 2.3 * rows + 0.9), sharex=True,
                                 sharey=True, squeeze=False)
        for r, row in enumerate(cells):
            for c, (name, lam) in enumerate(row):
                ax = axes[r, c]
                entries = probe_entries(by_name[name]) if name in by_name else []
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
                lam_value = by_name[name].lambda_target
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


def curves(binary: dict, multiclass: dict | None = None, marks: Sequence[float] = ()):
    """Two panels: ``|∂L/∂p|`` and ``|∂L/∂z|`` vs the predicted class's probability.

    Solid lines: binary; dashed: the C-class curves (others share ``1-p`` evenly). The logit
    panel marks where each curve peaks.

    Args:
        binary: :func:`~maxsq_lib.course.analysis.binary_gradient_curves` result.
        multiclass: optional :func:`~maxsq_lib.course.analysis.multiclass_gradient_curves` result.
        marks: probabilities to mark with dotted vertical lines (e.g. the low and high
            confidence of :func:`~maxsq_lib.course.analysis.high_low_ratio`).
    Returns:
        a matplotlib figure.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    sets = [(binary, "-", "binary")]
    if multiclass is not None:
        sets.append((multiclass, "--", f"C = {multiclass['num_classes']}"))
    for g, style, tag in sets:
        peaks = gradient_peaks(g)
        for name in ("entropy", "maxsquare"):
            color = _loss_color(name)
            label = f"{LOSS_LABELS[name]}, {tag}"
            axes[0].plot(g["p"], np.abs(g[f"{name}_dp"]), style, color=color, label=label)
            dz = np.abs(g[f"{name}_dz"])
            axes[1].plot(g["p"], dz, style, color=color, label=label)
            peak = peaks[f"{name}_dz"]
            axes[1].plot([peak], [dz.max()], "o", color=color, markersize=4)
    axes[0].set_title(r"w.r.t. the probability: $|\partial L / \partial p|$")
    axes[1].set_title(r"w.r.t. its logit: $|\partial L / \partial z| = p(1-p)\,|\partial L/\partial p|$"
                      " (dots: peaks)")
    for ax in axes:
        for mark in marks:
            ax.axvline(mark, color="#999999", linestyle=":", linewidth=1)
        ax.set_xlabel("probability p of the predicted class")
        ax.set_ylabel("gradient magnitude (per pixel)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    return fig


def shares(measured: dict, class_names: Sequence[str] | None = None):
    """2×2 difference bars: each loss's gradient share minus the pixel share, per confidence bin
    (left) and per predicted class (right), w.r.t. the logits (top) and the probabilities (bottom).

    A bar above zero means the loss trains that group more than its number of pixels; the pixel
    share itself is in the bin labels, so no bar repeats it. Notebook ``03_gradient_analysis``.

    Args:
        measured: a :func:`~maxsq_lib.course.analysis.gradient_shares` result.
        class_names: names of the C classes (default: indices).
    Returns:
        a matplotlib figure.
    """
    edges = np.asarray(measured["bin_edges"])
    pixels = measured["pixels"]
    bin_labels = [f"{lo:g}–{hi:g}\n{100 * share:.0f} % px"
                  for lo, hi, share in zip(edges[:-1], edges[1:], pixels["bin"])]
    num_classes = len(pixels["class"])
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    class_labels = [f"{n} ({100 * share:.0f} %)" for n, share in zip(names, pixels["class"])]
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.4), constrained_layout=True, sharey="row",
                             gridspec_kw={"width_ratios": [len(bin_labels), max(num_classes, 1)]})
    for row, wrt in enumerate(("logits", "probs")):
        for col, (group, labels) in enumerate((("bin", bin_labels), ("class", class_labels))):
            ax = axes[row, col]
            series = list(measured[wrt].items())
            width = 0.8 / len(series)
            x = np.arange(len(labels))
            for k, (name, entry) in enumerate(series):
                ax.bar(x + (k - (len(series) - 1) / 2) * width, 100 * (entry[group] - pixels[group]), width,
                       color=_loss_color(name), label=LOSS_LABELS[name] if (row, col) == (0, 0) else None)
            ax.axhline(0.0, color="black", lw=0.8)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=0 if group == "bin" else 45,
                               ha="center" if group == "bin" else "right", fontsize=7.5)
            what = "max probability bin (pixel share)" if group == "bin" else "predicted class (pixel share)"
            ax.set_title(f"w.r.t. the {'logits' if wrt == 'logits' else 'probabilities'}, by {what}", fontsize=9)
            if col == 0:
                ax.set_ylabel("gradient share − pixel share\n(percentage points)")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Where each loss puts its gradient, against where the pixels are "
                 "(above 0: more gradient than pixels)", fontsize=10)
    return fig


def iw_weights(images: np.ndarray, predictions: np.ndarray, weights: np.ndarray,
               class_set, ratio: float = 0.2):
    """One row per image: the image, its prediction (with a legend of the classes it shows), and the
    IW weight map relative to uniform.

    The map shows ``w_n · N`` (N = pixels of the image), which equals ``(N / N_c)^α`` wherever
    the clamp ``max(·, 1)`` is inactive: 1 for a class covering the whole image, larger for rarer
    classes.

    Args:
        images: RGB images (e.g. :func:`maxsq_lib.course.style.denormalize_bgr` of dataset items).
        predictions: argmax maps.
        weights: :func:`~maxsq_lib.course.analysis.iw_weight_maps` output for the same images.
        class_set: a ClassSet (or its size) for the colours.
        ratio: α, for the colour-bar label.
    Shape:
        images (N, H, W, 3), predictions (N, H, W), weights (N, H, W).
    Returns:
        a matplotlib figure.
    """
    n = len(images)
    if not (len(predictions) == len(weights) == n) or n == 0:
        raise ValueError(f"images, predictions and weights: expected the same non-zero count, got "
                         f"{len(images)}, {len(predictions)}, {len(weights)}")
    relative = np.stack([w * w.size for w in weights])
    vmax = float(relative.max())
    height, width = np.asarray(images[0]).shape[:2]
    row_height = 2.9 * height / width + 0.3  # three panels of about 2.9 in wide, plus titles
    fig, axes = plt.subplots(n, 3, figsize=(9.5, 0.3 + n * row_height),
                             constrained_layout=True, squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(images[row])
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        label_panel(axes[row, 1], predictions[row], class_set)
        shown = axes[row, 2].imshow(relative[row], cmap="viridis", vmin=1.0, vmax=max(vmax, 1.0 + 1e-6))
        axes[row, 2].set_xticks([])
        axes[row, 2].set_yticks([])
        if row == 0:
            axes[row, 0].set_title("target image")
            axes[row, 1].set_title("the model's prediction")
            axes[row, 2].set_title(rf"IW weight $\times N = (N/N_c)^{{{ratio:g}}}$")
    fig.colorbar(shown, ax=axes[:, 2], shrink=0.8)
    present = np.unique(np.asarray(predictions))
    handles = [h for c, h in enumerate(legend_handles(class_set)) if c in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=7,
               frameon=False, title="predicted class", title_fontsize=7.5)
    return fig
