"""One figure helper with a fixed style and deterministic files, plus small image helpers.

Every figure of the course goes through :func:`save_figure`, so that regenerating ``figures/``
twice gives identical bytes (no timestamps or software versions in the metadata, fixed DPI, a
fixed font and hash salt). Introduced in notebook ``01_data``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import matplotlib.pyplot as plt

from ..data.transforms import denormalize_bgr  # noqa: F401  (re-exported for the figures)
from ..files import atomic_file
from ..labels import IGNORE_COLOR, ClassSet, class_set_for, colorize

STYLE: dict = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.interpolation": "nearest",
    "svg.hashsalt": "maxsq",
    "path.simplify": False,
}
"""The project's matplotlib style (applied by :func:`figure_style`)."""

_METADATA = {
    ".png": {"Software": None},
    ".svg": {"Date": None, "Creator": None},
    ".pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
}


@contextmanager
def figure_style():
    """Context manager applying :data:`STYLE` (use around figure creation)."""
    with plt.rc_context(STYLE):
        yield


def save_figure(fig, path: str | os.PathLike, close: bool = True) -> Path:
    """Save a figure deterministically (atomic write, no timestamps in metadata).

    Args:
        fig: a matplotlib figure.
        path: output file; the suffix (.png, .svg, .pdf) picks the format.
        close: close the figure afterwards (keep it open in notebooks to display it).
    Returns:
        the written path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _METADATA:
        raise ValueError(f"{path}: unsupported figure format {suffix!r}; use .png, .svg or .pdf")
    with atomic_file(path, "wb") as handle, plt.rc_context(STYLE):
        fig.savefig(handle, format=suffix[1:], metadata=_METADATA[suffix], bbox_inches=None)
    if close:
        plt.close(fig)
    return path


IGNORE_LEGEND = "ignored / not kept (white)"
"""Legend text of the :data:`~maxsq_lib.labels.IGNORE_COLOR` patch."""


def frame_image_axis(ax) -> None:
    """Remove an image axis's ticks and draw all four sides of its frame.

    The style hides the top and right spines (right for plots); around a label map they are
    needed, or ignored pixels (white) at the image's border would merge into the white page.

    Args:
        ax: a matplotlib axis showing an image.
    """
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.6)


def label_panel(ax, label: np.ndarray, class_set: ClassSet | int | str, title: str | None = None):
    """Draw a coloured label map (ignored pixels white) on a framed axis without ticks."""
    ax.imshow(colorize(label, class_set))
    frame_image_axis(ax)
    if title:
        ax.set_title(title)


def legend_handles(class_set: ClassSet | int | str, ignore: str | None = None):
    """Patches with the class colours, for a figure legend.

    Args:
        class_set: the set, or its size or name.
        ignore: if given, a last patch in :data:`~maxsq_lib.labels.IGNORE_COLOR` with this text
            (e.g. :data:`IGNORE_LEGEND`); it has a black edge, as white on white is invisible.
    Returns:
        a list of :class:`matplotlib.patches.Patch`.
    """
    from matplotlib.patches import Patch

    cs = class_set if isinstance(class_set, ClassSet) else class_set_for(class_set)
    handles = [Patch(color=np.asarray(c) / 255.0, label=n) for n, c in zip(cs.class_names, cs.colors)]
    if ignore is not None:
        handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="black",
                             linewidth=0.6, label=ignore))
    return handles
