"""Every course figure, one module per chapter topic, and ``maxsq figures`` (:func:`regenerate`).

=================  ==========================================================================
module             figures
=================  ==========================================================================
``data``           class frequencies, sample grids (notebook ``01``)
``gradients``      analytic curves, measured shares, IW weights, a gradient map, the shares
                   during adaptation (notebooks ``03`` and ``05``)
``adaptation``     training curves, the λ_T sweep and its dose curves, pseudo-labels; the dose
                   at the starting point (notebooks ``04`` and ``05``)
``evaluation``     the results beside the paper's gains, per-class gains, selection rules,
                   BatchNorm's mode, flip, predictions, calibration (notebook ``05``)
``cross_city``     Cityscapes→NTHU per city (notebook ``06``)
``explorer``       the explorer's panels (notebook ``07``)
=================  ==========================================================================

Each course figure is registered once, where it is defined, with
:func:`~maxsq_lib.course.plots.base.figure` (its file name, its sentence in ``results.md``, the
study's values it needs, its place in the list); :data:`REGISTRY` holds them all and
:func:`regenerate` draws every one. Each function returns the matplotlib figure, so a notebook
shows exactly the course figure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...files import write_text_atomic
from ..evidence import precision_section, results_markdown
from ..paper import paper_for
from ..results import MissingEvidence, load_study, results_json
from ..style import save_figure
from . import adaptation, cross_city, data, evaluation, explorer, gradients
from .base import REGISTRY, FigureSpec, figure

__all__ = ["FIGURES", "REGISTRY", "FigureSpec", "MissingEvidence", "adaptation", "cross_city", "data",
           "evaluation", "explorer", "figure", "gradients", "regenerate", "registered"]


def registered() -> list[FigureSpec]:
    """Every registered figure, in ``results.md``'s order."""
    return sorted(REGISTRY.values(), key=lambda spec: (spec.order, spec.name))


FIGURES: dict[str, str] = {spec.name: spec.caption for spec in registered()}
"""Every figure :func:`regenerate` writes, with the sentence ``results.md`` gives it, in order."""


def regenerate(runs_root: str | os.PathLike = "runs", profile: str = "cpu", data_root: str | None = None,
               out_dir: str | os.PathLike = "figures") -> list[Path]:
    """Rebuild every course figure, ``results.md`` and ``results.json`` from a profile's runs.

    Reads the runs once (:func:`~maxsq_lib.course.results.load_study`). Figures whose runs, data
    or checkpoints are missing are skipped with a note in ``results.md``; only the registered
    files, ``results.md`` and ``results.json`` are written in ``out_dir`` (atomically), nothing is
    deleted. Regenerating from the same runs gives identical bytes: figures go through
    :func:`~maxsq_lib.course.style.save_figure` (no timestamps, fixed size and DPI), every
    iteration order is sorted, and ``results.md`` quotes the dates and commits recorded in the runs.

    Args:
        runs_root: the runs folder.
        profile: the profile whose runs to read.
        data_root: dataset root for the data and qualitative figures (None: the profile's).
        out_dir: output folder.
    Returns:
        the written paths (figures in :func:`registered` order, then ``results.md`` and
        ``results.json``, :func:`~maxsq_lib.course.results.results_json`).
    Raises:
        FileNotFoundError: no finished run under ``<runs_root>/<profile>/``.
    """
    study = load_study(runs_root, profile)
    out = Path(out_dir)
    main = study.main
    paper, paper_name = paper_for(main)
    given = {"table": study.tables.get(main) if main else None,
             "runs": study.records.get(main, []) if main else [],
             "benchmark": main, "paper": paper, "paper_name": paper_name,
             "tables_by_city": {c: study.tables[b] for c, b in study.cities.items()},
             "profile": profile, "runs_root": runs_root, "data_root": data_root}
    written: list[Path] = []
    notes: dict[str, str | None] = {}
    specs = registered()
    for spec in specs:
        try:
            fig = spec.build(given)
        except MissingEvidence as exc:
            notes[spec.name] = str(exc)
            continue
        written.append(save_figure(fig, out / spec.name))
        notes[spec.name] = None
    dose, dose_reason = None, None
    try:
        if main is None:
            raise MissingEvidence("no main-table benchmark among the runs")
        dose = adaptation.dose_evidence(profile, main, runs_root, data_root)
    except MissingEvidence as exc:
        dose_reason = str(exc)
    results = results_json(study)
    precision, comparison = precision_section(results, given["runs"], main)
    text = results_markdown(study, {s.name: s.caption for s in specs}, notes, dose, dose_reason, precision)
    written.append(write_text_atomic(out / "results.md", text))
    if dose is not None:
        results["benchmarks"][main]["dose_at_start"] = dose
    if comparison is not None:
        results["benchmarks"][main]["precision_check"] = comparison
    written.append(write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n"))
    return written
