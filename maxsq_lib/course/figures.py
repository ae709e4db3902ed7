"""Kept for :mod:`maxsq_lib.course.runner`, which imports :func:`regenerate` from here: the figures now
live in :mod:`maxsq_lib.course.plots` (one module per chapter topic, each figure registered where it
is defined), the records and statistics in :mod:`maxsq_lib.course.results`, the text of
``results.md`` in :mod:`maxsq_lib.course.evidence` and the paper's numbers in
:mod:`maxsq_lib.course.paper`. Remove this module once the runner imports ``plots.regenerate``.
"""

from .plots import regenerate

__all__ = ["regenerate"]
