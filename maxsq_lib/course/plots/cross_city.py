"""The cross-city figures (notebook ``06_cross_city``): Cityscapes→NTHU's protocol on MiniCity's city
variants, beside the paper's numbers. :func:`cross_city` is registered
(:func:`~maxsq_lib.course.plots.base.figure`) as ``cross_city.png``; the chapter draws
:func:`city_gains` (the gains per city as differences on one scale, the learner's runs on the
study's), :func:`city_samples` (the looks) and prints :func:`compare_city` (the course's one rule,
with the main benchmark's resolution, since each city has one seed).
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ... import methods as method_registry
from ...config import CROSS_CITY_METHODS
from ..paper import PAPER_CITATION, PAPER_NTHU
from ..results import MissingEvidence, Study, agreement, mean, resolution, seed_text
from ..series import cross_city_values
from ..style import denormalize_bgr, figure_style
from .base import bar_with_seeds, figure

_label = method_registry.label


@figure("cross_city.png",
        "Cityscapes→NTHU protocol (13 classes) per city: source, AdaBN, none, MaxSquare, MaxSquare+IW, "
        "beside the paper's numbers.", needs=("tables_by_city",), order=8)
def cross_city(tables_by_city: Mapping[str, Mapping[str, dict]],
               paper: Mapping[str, Mapping[str, float]] | None = PAPER_NTHU) -> Figure:
    """Cityscapes→NTHU protocol per city: source / AdaBN / none / MaxSquare / +IW, beside the paper.

    Notebook ``06_cross_city``.

    Args:
        tables_by_city: city -> :func:`~maxsq_lib.course.results.summarize_runs` table (cities in display order).
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
                bar_with_seeds(ax, i + (k - (len(names) - 1) / 2) * width, values[city][name],
                                method_registry.color(name), width=width,
                                label=_label(name) if i == 0 else None, fontsize=5.5)
        ax.set_title(f"here: MiniCity city variants, {seed_text(seeds)}")
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


# ------------------------------------------------------------------------------------ chapter 06

CITY_QUANTITIES = ("mIoU", "gain over source", "gain over adabn")
"""What :func:`compare_city` compares: a city's target mIoU at the last iteration, or its paired
difference to the source model or to ``adabn`` on the same seed."""


def city_values(study: Study) -> dict[str, dict[str, dict[int, float]]]:
    """:func:`~maxsq_lib.course.results.cross_city_values` of every city of a study (its
    ``<prefix>_nthu_<city>`` benchmarks). Notebook ``06_cross_city``.

    Returns:
        city -> {"source" | "adabn" | "none" | "maxsquare" | "maxsquare_iw": {seed: mIoU (fraction)}}.
    """
    return cross_city_values({c: study.tables[b] for c, b in study.cities.items()})


def _city_quantity(per_run: Mapping[str, Mapping[int, float]], quantity: str, run: str) -> dict[int, float]:
    values = per_run.get(run, {})
    if quantity == "mIoU":
        return dict(values)
    ref = per_run.get("source" if quantity == "gain over source" else "adabn", {})
    return {s: v - ref[s] for s, v in values.items() if s in ref}


def compare_city(mine: Study, study: Study, city: str, quantity: str, run: str, seed: int | None = None) -> dict:
    """Print one line: the learner's ``quantity`` of ``run`` in ``city`` beside the study's, and
    whether it agrees, by the course's one rule (:func:`~maxsq_lib.course.results.compare`):
    within 3 × the study's seed std of the same quantity. The committed study has one seed per
    city, so no such std exists; the tolerance is then the main benchmark's resolution
    (:func:`~maxsq_lib.course.results.resolution`, 0.7 points), the smallest difference one seed
    can resolve anywhere in the course. Notebook ``06_cross_city``.

    Args:
        mine: the learner's runs (:func:`~maxsq_lib.course.results.load_study`).
        study: the reference study (:func:`~maxsq_lib.course.results.load_committed_study`).
        city: Rome, Rio, Tokyo or Taipei.
        quantity: one of :data:`CITY_QUANTITIES`.
        run: ``adabn``, ``none``, ``maxsquare`` or ``maxsquare_iw``.
        seed: the learner's seed (default: the mean over the learner's seeds).
    Returns:
        ``{"mine", "study_mean", "study_std", "difference", "tolerance", "agrees"}`` (fractions; None
        where a side has no such run).
    Raises:
        KeyError: an unknown quantity.
    """
    if quantity not in CITY_QUANTITIES:
        raise KeyError(f"quantity {quantity!r}: one of {list(CITY_QUANTITIES)}")
    return agreement(f"{city}, {run}, {quantity}:", _city_quantity(city_values(mine).get(city, {}), quantity, run),
                     _city_quantity(city_values(study).get(city, {}), quantity, run), mine.profile,
                     signed=quantity != "mIoU", seed=seed,
                     fallback=resolution(study.tables[study.main]) if study.main else None,
                     fallback_rule="the resolution, one seed per city")


def city_gains(values: Mapping[str, Mapping[str, Mapping[int, float]]],
               mine: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
               paper: Mapping[str, Mapping[str, float]] | None = PAPER_NTHU,
               resolution_band: float | None = None, what: str = "committed study") -> Figure:
    """Per city, what each run gains, in three panels on one y scale: over the source model (the
    study), beyond AdaBN (the study), and over the source model in the paper (no BatchNorm
    control there). The learner's runs are black crosses on the study's bars. Notebook
    ``06_cross_city``.

    Args:
        values: city -> run -> {seed: mIoU} (:func:`city_values` of the study).
        mine: the same for the learner's runs (None: none drawn).
        paper: the paper's numbers per city (:data:`~maxsq_lib.course.paper.PAPER_NTHU`; None: no panel).
        resolution_band: drawn as a grey band ± this (fraction) in the study's panels.
        what: the name of the study in the titles.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no city.
    """
    if not values:
        raise MissingEvidence("no cross-city benchmarks (<prefix>_nthu_<city>)")
    cities = list(values)
    panels = [("over the source model", ("adabn", "none", "maxsquare", "maxsquare_iw"), "gain over source"),
              ("beyond AdaBN", ("none", "maxsquare", "maxsquare_iw"), "gain over adabn")]
    seeds = sorted({s for v in values.values() for per in v.values() for s in per})
    with figure_style():
        n = len(panels) + (1 if paper else 0)
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), sharey=True, squeeze=False)
        axes = axes[0]
        for ax, (title, runs, quantity) in zip(axes, panels):
            width = 0.8 / len(runs)
            if resolution_band:
                ax.axhspan(-100 * resolution_band, 100 * resolution_band, color="#dddddd", zorder=0)
            for k, run in enumerate(runs):
                xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(cities))]
                ys = [100 * (mean(_city_quantity(values[c], quantity, run).values()) or np.nan) for c in cities]
                ax.bar(xs, ys, width=width, color=method_registry.color(run), label=_label(run), zorder=2)
                if mine:
                    ys_mine = [100 * (mean(_city_quantity(mine.get(c, {}), quantity, run).values()) or np.nan)
                               for c in cities]
                    ax.plot(xs, ys_mine, "x", color="black", ms=5, zorder=3,
                            label="your run" if k == 0 else None)
            ax.set_title(f"{what}, {seed_text(seeds)}:\ngain {title}", fontsize=9)
        if paper:
            ax = axes[-1]
            runs = ("maxsquare", "maxsquare_iw")
            width = 0.8 / len(runs)
            for k, run in enumerate(runs):
                xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(cities))]
                ys = [paper[c][run] - paper[c]["source"] if c in paper else np.nan for c in cities]
                ax.bar(xs, ys, width=width, color=method_registry.color(run), zorder=2)
            ax.set_title("paper, Cityscapes→NTHU (no AdaBN control):\ngain over the source model", fontsize=9)
        for ax in axes:
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(range(len(cities)))
            ax.set_xticklabels(cities)
        axes[0].set_ylabel("mIoU-13 difference (points)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def city_samples(datasets: Mapping[str, object], per_row: int = 4) -> Figure:
    """A few images per domain, one row each (spread evenly over the split). Notebook ``06_cross_city``.

    Args:
        datasets: row name -> dataset with items ``(image, label, name)`` (images as the loaders give them).
        per_row: images per row.
    Returns:
        the figure.
    """
    with figure_style():
        fig, axes = plt.subplots(len(datasets), per_row, figsize=(2.5 * per_row, 1.45 * len(datasets) + 0.4),
                                 squeeze=False)
        for row, (name, ds) in enumerate(datasets.items()):
            for ax, index in zip(axes[row], np.linspace(0, len(ds) - 1, per_row).round().astype(int)):
                ax.imshow(denormalize_bgr(np.asarray(ds[int(index)][0])))
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center")
        fig.suptitle("Images per domain: the source's val split, then each city's test split")
        fig.tight_layout()
    return fig
