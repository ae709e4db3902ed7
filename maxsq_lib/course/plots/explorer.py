"""The figure of the explorer (notebook ``07_explorer``): one target image's panels in a 2 × 4 grid.

:func:`panel_figure` draws the arrays of :meth:`maxsq_lib.course.explorer.Explorer.panels` (the
image, label, prediction, pseudo-labels, entropy, max-square and IW-weight maps, pixels per class)
on an Agg canvas without pyplot state, so the widget can render it to PNG bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...labels import ClassSet, colorize
from ..style import IGNORE_LEGEND, STYLE, frame_image_axis, legend_handles


def class_histogram_panel(ax, panels: Mapping[str, np.ndarray], class_set: ClassSet) -> None:
    """Pixels per class (%) of the prediction (class colours) beside the label's (hatched)."""
    x = np.arange(class_set.num_classes)
    total_pred = max(int(panels["predicted_counts"].sum()), 1)
    total_label = max(int(panels["label_counts"].sum()), 1)
    colors = np.asarray(class_set.colors) / 255.0
    ax.bar(x - 0.2, 100.0 * panels["predicted_counts"] / total_pred, width=0.4, color=colors,
           edgecolor="black", linewidth=0.4, label="prediction")
    ax.bar(x + 0.2, 100.0 * panels["label_counts"] / total_label, width=0.4, color="white",
           edgecolor="black", linewidth=0.6, hatch="////", label="label")
    ax.set_xticks(x)
    ax.set_xticklabels(class_set.class_names, rotation=60, ha="right", fontsize=7)
    ax.set_title("pixels per class (%)")
    ax.legend(frameon=False, fontsize=7)


def panel_figure(panels: Mapping[str, np.ndarray], class_set: ClassSet, title: str = "",
                 threshold: float | None = None, alpha: float | None = None,
                 stats: Mapping[str, float] | None = None):
    """Draw the panels of :meth:`Explorer.panels` into one figure (2 × 4 grid and a legend).

    Args:
        panels: the panel dict.
        class_set: colours and names of the classes.
        title: figure title.
        threshold, alpha: shown in the panel titles.
        stats: :meth:`Explorer.image_stats` (kept fraction in the pseudo-label title).
    Returns:
        a :class:`matplotlib.figure.Figure` with an Agg canvas.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = class_set.num_classes
    h, w = panels["label"].shape
    panel_w = 3.0
    panel_h = max(1.2, panel_w * h / w)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4 * panel_w + 1.0, 2 * panel_h + 2.3))
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(2, 4, left=0.02, right=0.97, top=0.87, bottom=0.2, wspace=0.38,
                                hspace=0.32)
        axes = [[fig.add_subplot(grid[r, k]) for k in range(4)] for r in range(2)]
        for ax in axes[0] + axes[1][:3]:  # every panel but the histogram is an image
            frame_image_axis(ax)

        axes[0][0].imshow(panels["image"])
        axes[0][0].set_title("image")
        axes[0][1].imshow(colorize(panels["label"], class_set))
        axes[0][1].set_title("label")
        axes[0][2].imshow(colorize(panels["prediction"], class_set))
        axes[0][2].set_title("prediction (argmax p)")
        kept = (stats or {}).get("kept")
        pl_title = "pseudo-labels" + (f" (δ = {threshold:.2f})" if threshold is not None else "")
        if kept is not None:
            pl_title += f"\n{100 * kept:.1f}% of pixels kept"
        axes[0][3].imshow(colorize(panels["pseudo_label"], class_set))
        axes[0][3].set_title(pl_title)

        def heat(ax, values, title, cmap, vmin, vmax):
            im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(title)
            # an inset colour bar keeps the map as large as the label panels above it
            fig.colorbar(im, cax=ax.inset_axes([1.03, 0.0, 0.05, 1.0]))

        heat(axes[1][0], panels["entropy"], r"entropy $-\Sigma_c\, p_c \log p_c\, /\, \log C$",
             "magma", 0.0, 1.0)
        heat(axes[1][1], panels["max_square"], r"max-square map $\Sigma_c\, p_c^2$", "viridis",
             1.0 / c, 1.0)
        # N·w = (N / N_c)^α: 1 for a class filling the image, and everywhere at α = 0
        scaled = panels["iw_weight"] * panels["iw_weight"].size
        iw_title = r"IW weight $\times N$" + (f" (α = {alpha:.2f})" if alpha is not None else "")
        heat(axes[1][2], scaled, iw_title, "cividis", min(1.0, float(scaled.min())),
             max(float(scaled.max()), 1.0 + 1e-6))

        class_histogram_panel(axes[1][3], panels, class_set)
        handles = legend_handles(class_set, ignore=IGNORE_LEGEND)
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False,
                   fontsize=8, bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title)
    return fig
