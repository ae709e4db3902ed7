"""The course's tooling, beside the core library: it imports the core, the core never imports it.

=====================  ======================================================================
module                 what it holds
=====================  ======================================================================
``notebook``           the helpers every notebook calls (set-up, train-or-load, predictions);
                       re-exported here, so ``from maxsq_lib import course; course.setup()``
``commands``           the course's sub-commands of ``maxsq`` (``reproduce``, ``course``, ``figures``,
                       ``summary``, ``doctor``) and ``--dry-run``, registered by ``maxsq_lib.cli``
``runner``             ``maxsq course``: training jobs, then the notebooks, then the figures
``plans``              the jobs of ``maxsq reproduce`` and the pool that runs them
``dryrun``             ``--dry-run``: what a command needs, what is present, what is missing
``results``            results as records: one loader, the selection rule, the paired gains,
                       ``results.json``, the learner's run against the study
``series``             what figures and ``results.md`` read out of a study (sweeps, per-class
                       gains, curves on a scored part, probe entries, cross-city values)
``costs``              what a run costs, as the dry run prints it (GPU memory, shared memory,
                       the measured time per iteration)
``tables``             results tables as markdown (``summary.md`` / ``summary.json``)
``evidence``           the text of ``results.md``
``plots``              every course figure, one module per chapter topic, registered where it is
                       defined; ``maxsq figures`` (``plots.regenerate``)
``paper``              the paper's numbers
``precision_study``    does the profile's precision change the study's conclusions?
``analysis``           gradient curves, shares by confidence and class, IW weights, the dose
``explorer``           the widgets of notebook ``07``
``stats``              class counts and frequencies (notebook ``01``)
``html_export``        the executed notebooks as HTML pages with an index (``maxsq course``)
``style``              the figure style and saving helper
=====================  ======================================================================
"""

from .notebook import (batch, config_for, dataset, ensure_run, load_run_model, predict,
                       project_root, setup, starting_model)

__all__ = ["batch", "config_for", "dataset", "ensure_run", "load_run_model", "predict",
           "project_root", "setup", "starting_model"]
