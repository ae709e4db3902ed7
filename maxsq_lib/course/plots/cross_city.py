"""The cross-city figure (notebook ``06_cross_city``): Cityscapes→NTHU's protocol on MiniCity's city
variants, beside the paper's numbers. Registered (:func:`~maxsq_lib.course.plots.base.figure`) as
``cross_city.png``.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ... import methods as method_registry
from ...config import CROSS_CITY_METHODS
from ..paper import PAPER_CITATION, PAPER_NTHU
from ..results import MissingEvidence, cross_city_values, seed_text
from ..style import figure_style
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
