"""The registry every course figure is written into, and what the figures share.

A figure is registered once, where it is defined, by :func:`figure`::

    @figure("lambda_sweep.png", "reported mIoU against λ_T ...", needs=("table", "benchmark"), order=4)
    def lambda_sweep(table, methods=LOSS_METHODS, benchmark="minicity") -> Figure: ...

``needs`` names the parameters that :func:`maxsq_lib.course.plots.regenerate` fills from the study
(:data:`NEEDS`); ``order`` is the figure's place in ``results.md``'s list. Also here: the bar of a
mean over seeds with a dot per seed, the axes of grouped bars, MiniCity's dataset names, and the
run configs and checkpoints of the figures that predict with a model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ... import methods as method_registry
from ..results import MissingEvidence, finite

NEEDS: dict[str, str] = {
    "table": "the main benchmark's summary (results.summarize_runs)",
    "runs": "the main benchmark's records (results.RunRecord)",
    "benchmark": "the main benchmark's name",
    "paper": "the paper's table the main benchmark is set beside (paper.paper_for)",
    "paper_name": "that table's name",
    "tables_by_city": "city -> the summary of its cross-city benchmark",
    "profile": "the profile",
    "runs_root": "the runs folder",
    "data_root": "the dataset root (None: the profile's)",
}
"""What :func:`figure`'s ``needs`` may name (each a parameter of the registered function)."""

MAIN_NEEDS = frozenset({"table", "runs", "benchmark", "paper", "paper_name"})
"""Needs that exist only where the runs hold a main-table benchmark."""

FROM_FILES = ("profile", "benchmark", "runs_root", "data_root")
"""The needs of a figure that reads the data or predicts with the runs' checkpoints."""


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure: its file, the sentence ``results.md`` gives it, how to draw it."""

    name: str
    caption: str
    draw: Callable[..., Figure]
    needs: tuple[str, ...]
    order: int

    def build(self, given: Mapping[str, object]) -> Figure:
        """Draw the figure with the needed values of ``given`` (:data:`NEEDS`).

        Raises:
            MissingEvidence: a main-table need without a main benchmark, or the figure's own.
        """
        if MAIN_NEEDS.intersection(self.needs) and given.get("benchmark") is None:
            raise MissingEvidence("no main-table benchmark (e.g. minicity) among the runs")
        return self.draw(**{n: given[n] for n in self.needs})


REGISTRY: dict[str, FigureSpec] = {}
"""File name -> :class:`FigureSpec` of every registered figure (the plot modules fill it)."""


def figure(name: str, caption: str, needs: Sequence[str] = (), order: int = 1000):
    """Register the decorated function as the course figure ``name`` (see the module docstring).

    Args:
        name: the file written under ``figures/``.
        caption: its sentence in ``results.md``.
        needs: the function's parameters that ``maxsq figures`` fills (:data:`NEEDS`).
        order: its place in ``results.md``'s list of figures (and the order they are written).
    """
    unknown = [n for n in needs if n not in NEEDS]
    if unknown:
        raise ValueError(f"figure {name!r}: unknown needs {unknown}; known: {list(NEEDS)}")

    def register(draw: Callable[..., Figure]) -> Callable[..., Figure]:
        if name in REGISTRY and REGISTRY[name].draw.__qualname__ != draw.__qualname__:
            raise ValueError(f"figure {name!r} is registered twice ({REGISTRY[name].draw.__qualname__})")
        REGISTRY[name] = FigureSpec(name, caption, draw, tuple(needs), order)
        return draw

    return register


# ------------------------------------------------------------------------------------ bars

def bar_with_seeds(ax, x: float, per_seed: Mapping[int, float], color: str, width: float = 0.7,
                   scale: float = 100.0, label: str | None = None, hatch: str | None = None,
                   annotate: bool = True, fontsize: float = 7.5) -> None:
    """One bar (mean over seeds), a dot per seed, an error bar (std) with two or more seeds."""
    vals = np.asarray(finite(per_seed.values())) * scale
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


def grouped_bar_axes(ax, names: Sequence[str], title: str, ncol: int) -> None:
    """Ticks, labels, head room and legend of a figure with a group of bars per run."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([method_registry.label(n) for n in names], rotation=20, ha="right")
    ax.set_ylabel("target val mIoU (%)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.22)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=ncol)


# ------------------------------------------------------------------------------------ data, checkpoints

QUALITATIVE_INDICES: tuple[int, ...] = (0, 1, 2, 3)
"""Target val images of the qualitative grid and the sample grid (fixed, for determinism)."""

MINICITY_DATASET_NAMES = {"gta5": "MiniGTA", "cityscapes": "MiniCityscapes", "nthu": "MiniNTHU"}
"""How MiniCity's datasets are named in figures (the configs use the real datasets' names)."""


def dataset_label(name: str, profile: str) -> str:
    """A dataset's name in a figure: MiniGTA / MiniCityscapes on MiniCity profiles, else as given."""
    from ...config import MINICITY_PROFILES

    return MINICITY_DATASET_NAMES.get(name, name) if profile in MINICITY_PROFILES else name


def course_config(profile: str, benchmark: str, method: str | None, runs_root, data_root, seed: int = 0):
    """The run config of a course run, without augmentation (figures must be deterministic).

    Raises:
        MissingEvidence: the profile has no such configuration.
    """
    from ... import course
    from ...config import ConfigError

    try:
        return course.config_for(profile, benchmark, method, runs_root=str(runs_root), data_root=data_root,
                                 seed=seed, device="cpu", overrides={"data": {"augment": False}})
    except ConfigError as exc:
        raise MissingEvidence(f"no configuration for {profile}/{benchmark}: {exc}") from exc


def data_config(profile: str, benchmark: str, runs_root, data_root):
    """:func:`course_config` of the source model, checked to have its data.

    Raises:
        MissingEvidence: no data under the config's root.
    """
    cfg = course_config(profile, benchmark, None, runs_root, data_root)
    if not Path(cfg.data.root).is_dir():
        raise MissingEvidence(f"no data under {cfg.data.root}")
    return cfg


def final_checkpoints(profile: str, benchmark: str, runs_root: str | os.PathLike, data_root,
                      names: Sequence[str], seed: int) -> list[tuple[str, object, str]]:
    """``(name, run config, stage)`` of each of ``names`` (``source`` or an adaptation run) whose
    ``final.pt`` of ``seed`` exists, in the given order."""
    from ...engine.build import run_dir_for

    found = []
    for name in names:
        stage = "source" if name == "source" else "adapt"
        run_cfg = course_config(profile, benchmark, None if name == "source" else name, runs_root, data_root, seed)
        if (run_dir_for(run_cfg, stage) / "final.pt").is_file():
            found.append((name, run_cfg, stage))
    return found
