"""The course's tooling, beside the core library: it imports the core, the core never imports it.

=====================  ======================================================================
module                 what it holds
=====================  ======================================================================
``notebook``           the helpers every notebook calls (set-up, train-or-load, predictions);
                       re-exported here, so ``from maxsq_lib import course; course.setup()``
``runner``             ``maxsq course``: training jobs, then the notebooks, then the figures
``plans``              the jobs of ``maxsq reproduce`` and the pool that runs them
``dryrun``             ``--dry-run``: what a command needs, what is present, what is missing
``tables``             results tables of finished runs (``summary.md`` / ``summary.json``)
``figures``            every course figure and ``results.md``, from ``runs/``; the paper's numbers
``analysis``           gradient shares by confidence and class (notebook ``03``)
``explorer``           the widgets of notebook ``07``
``stats``              class frequencies and sample grids (notebook ``01``)
``html_export``        the executed notebooks as HTML pages with an index (``maxsq course``)
``style``              the figure style and saving helper
=====================  ======================================================================
"""

from .notebook import (batch, config_for, dataset, ensure_run, load_run_model, predict,
                       project_root, setup)

__all__ = ["batch", "config_for", "dataset", "ensure_run", "load_run_model", "predict",
           "project_root", "setup"]
