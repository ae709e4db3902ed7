"""The interactive explorer of notebook ``07_explorer``: one target image, one model, every map.

:class:`Explorer` loads the finished runs of a benchmark (the source model and every adaptation
run found under ``<runs>/<profile>/<benchmark>/``), predicts a target val image once per
``(run, image)`` (cached) and computes the panels the notebook shows, as plain arrays:

====================  =========  ===========================================================
panel                 shape      what it is
====================  =========  ===========================================================
``image``             (H, W, 3)  the input image, RGB uint8
``label``             (H, W)     ground truth, ``-1`` = ignored (drawn white,
                                 :data:`maxsq_lib.labels.IGNORE_COLOR`)
``prediction``        (H, W)     ``argmax_c p_c`` of the main head
``probabilities``     (C, H, W)  ``p = softmax(main logits)``
``entropy``           (H, W)     ``-Σ_c p_c log p_c / log C`` in [0, 1]
``max_square``        (H, W)     ``Σ_c p_c²`` in [1/C, 1] (:func:`maxsq_lib.losses.pixel_square_sum`)
``iw_weight``         (H, W)     image-wise weight of each pixel's predicted class at ratio α
                                 (:func:`maxsq_lib.losses.iw_pixel_weights`)
``pseudo_label``      (H, W)     fused multi-level pseudo-labels at threshold δ, ``-1`` = not
                                 kept (:func:`maxsq_lib.losses.fused_pseudo_label`)
``predicted_counts``  (C,)       pixels predicted as each class (sums to H·W)
``label_counts``      (C,)       labelled pixels of each class (sums to the non-ignored pixels)
====================  =========  ===========================================================

:meth:`Explorer.render` draws them into PNG bytes with matplotlib (Agg, no pyplot state), and
:meth:`Explorer.widget` wraps that in ipywidgets controls: an ``ipywidgets.Image`` updated through
``observe``, so the figure looks the same in JupyterLab, in classic Notebook and in an executed
(papermill / nbconvert) copy, without ``%matplotlib widget``. Introduced in notebook ``07_explorer``.
"""

from __future__ import annotations

import html
import io
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ..config import RunConfig, from_dict, load_yaml
from ..engine.runs import is_finished, source_run_dir
from ..labels import IGNORE_INDEX, ClassSet, class_set_for
from .plots.explorer import panel_figure
from .results import load_records, run_order_key
from .style import STYLE, denormalize_bgr

SOURCE = "source"
"""Name under which the explorer lists the source-only model (whatever its run folder is called)."""

RENDER_CACHE_SIZE = 32
"""Rendered views kept by :meth:`Explorer.render` (about 100 kB each)."""

WIDGET_CHILDREN: tuple[str, ...] = ("image", "method", "threshold", "alpha", "status", "figure")
"""Order of ``Explorer.widget().children``: four controls, an HTML status line, the PNG image."""

PANEL_KEYS: tuple[str, ...] = ("image", "label", "prediction", "probabilities", "entropy", "max_square",
                               "iw_weight", "pseudo_label", "predicted_counts", "label_counts")
"""Keys of :meth:`Explorer.panels` (see the module table)."""


# ----------------------------------------------------------------------------------------------
# finding runs
# ----------------------------------------------------------------------------------------------


def find_explorable_runs(cfg: RunConfig) -> dict[str, Path]:
    """Finished runs of ``cfg``'s profile, benchmark and seed that have a final checkpoint.

    The source model is listed as ``"source"`` (it may live under another benchmark, e.g. the
    four cross-city targets share ``minicity_nthu_rome/source_multi``); adaptation runs keep their
    run names (``maxsquare``, ``minent-lambda0.3``, ...), from the benchmark's records
    (:func:`maxsq_lib.course.results.load_records`), in the tables' order (source first).

    Args:
        cfg: any run config of the benchmark (only profile, benchmark, seed, runs_root are read).
    Returns:
        ordered ``{name: run folder}``; empty if nothing is finished yet.
    """
    found: dict[str, Path] = {}
    source_dir = source_run_dir(cfg)
    if is_finished(source_dir) and (source_dir / "final.pt").is_file():
        found[SOURCE] = source_dir
    for r in load_records(cfg.runs_root, cfg.profile, cfg.benchmark):
        if r.seed == cfg.seed and not r.run.startswith("source") and (Path(r.run_dir) / "final.pt").is_file():
            found[r.run] = Path(r.run_dir)
    return {name: found[name] for name in sorted(found, key=run_order_key)}


def _load_run_model(run_dir: Path, fallback: RunConfig) -> torch.nn.Module:
    """The final model of a run, built from the run's own ``config.yaml`` when it has one."""
    from ..engine.build import model_from_file

    cfg_path = run_dir / "config.yaml"
    run_cfg = from_dict(load_yaml(cfg_path), str(cfg_path)) if cfg_path.is_file() else fallback
    model, _note = model_from_file(run_cfg, run_dir / "final.pt")
    return model


# ----------------------------------------------------------------------------------------------
# the maps (pure functions of the logits)
# ----------------------------------------------------------------------------------------------


def class_histogram(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class in a label map; ``-1`` and other out-of-range values are not counted.

    Shape:
        (H, W) -> (C,) int64.
    """
    flat = np.asarray(label_map).ravel().astype(np.int64)
    flat = flat[(flat >= 0) & (flat < num_classes)]
    return np.bincount(flat, minlength=num_classes).astype(np.int64)


@torch.no_grad()
def maps_from_logits(main_logits: torch.Tensor, aux_logits: torch.Tensor, threshold: float,
                     alpha: float) -> dict[str, np.ndarray]:
    """The model-dependent panels of one image from its main and aux logits.

    Args:
        main_logits: main-head (layer6) logits of one image.
        aux_logits: aux-head (layer5) logits, same shape.
        threshold: δ of the fused pseudo-labels.
        alpha: IW ratio α.
    Shape:
        (1, C, H, W), (1, C, H, W) -> ``probabilities`` (C, H, W), the maps (H, W).
    Returns:
        ``prediction``, ``probabilities``, ``entropy``, ``max_square``, ``iw_weight``,
        ``pseudo_label`` as numpy arrays (see the module table).
    """
    num_classes = main_logits.shape[1]
    probs = losses.softmax_probabilities(main_logits)
    return {
        "prediction": probs.argmax(dim=1)[0].numpy(),
        "probabilities": probs[0].numpy(),
        "entropy": (losses.pixel_entropy(main_logits) / math.log(num_classes))[0].numpy(),
        "max_square": losses.pixel_square_sum(main_logits)[0].numpy(),
        "iw_weight": losses.iw_pixel_weights(main_logits, ratio=alpha)[0].numpy(),
        "pseudo_label": losses.fused_pseudo_label(main_logits, aux_logits, threshold)[0].numpy(),
    }


# ----------------------------------------------------------------------------------------------
# the explorer
# ----------------------------------------------------------------------------------------------


class Explorer:
    """Panels and an ipywidgets UI for the target val images of one benchmark.

    Args:
        cfg: a run config of the benchmark (profile, benchmark, seed, runs_root, data, adapt
            defaults for δ and α).
        device: where the models run.
        models: optional ``{name: model}`` to explore instead of the finished runs (models return
            ``(main, aux)`` logits, e.g. an untrained :func:`maxsq_lib.models.deeplabv2`).
        dataset: optional dataset with items ``(image, label, name)`` instead of the target val
            split of ``cfg``.
    Raises:
        FileNotFoundError: no finished run to explore (names the folder and what to run).
    """

    def __init__(self, cfg: RunConfig, device: torch.device | str = "cpu", *,
                 models: Mapping[str, torch.nn.Module] | None = None, dataset: Any = None) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.class_set: ClassSet = class_set_for(cfg.data.num_classes)
        if models is not None:
            if not models:
                raise ValueError("models: pass at least one model (or None to use the finished runs)")
            self.run_dirs: dict[str, Path] = {}
            self._models = {name: m.to(self.device).eval() for name, m in models.items()}
            self.methods = list(models)
        else:
            self.run_dirs = find_explorable_runs(cfg)
            if not self.run_dirs:
                where = Path(cfg.runs_root) / cfg.profile / cfg.benchmark
                raise FileNotFoundError(
                    f"no finished run to explore under {where} (nor the source run "
                    f"{source_run_dir(cfg)}); train the source model first "
                    f"(notebook 02_source_pretraining or course.ensure_run(cfg, 'source'))")
            self._models = {}
            self.methods = list(self.run_dirs)
        if dataset is None:
            from ..engine.build import build_dataset

            dataset = build_dataset(cfg, "val")
        if len(dataset) == 0:
            raise ValueError(f"the target val dataset {dataset!r} is empty")
        self.dataset = dataset
        self.default_threshold = float(cfg.adapt.threshold)
        self.default_alpha = float(cfg.adapt.iw_ratio)
        self._logits: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._items: dict[int, tuple[np.ndarray, np.ndarray, str]] = {}
        self._png: OrderedDict[tuple, bytes] = OrderedDict()

    # -- inputs ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.dataset)

    def _check(self, image_index: int, method: str, threshold: float, alpha: float) -> None:
        if not 0 <= int(image_index) < len(self):
            raise IndexError(f"image_index {image_index} out of range: the target val set has "
                             f"{len(self)} images (0..{len(self) - 1})")
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r}; finished runs: {', '.join(self.methods)}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not float(alpha) >= 0.0:
            raise ValueError(f"alpha (IW ratio) must be >= 0, got {alpha}")

    def model(self, method: str) -> torch.nn.Module:
        """The model of a run (loaded once, in eval mode, on the explorer's device)."""
        if method not in self._models:
            if method not in self.run_dirs:
                raise ValueError(f"unknown method {method!r}; finished runs: {', '.join(self.methods)}")
            self._models[method] = _load_run_model(self.run_dirs[method], self.cfg).to(self.device)
        return self._models[method]

    def item(self, image_index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``(network input (3, H, W) float32, label (H, W) int64, name)`` of a val image (cached)."""
        index = int(image_index)
        if index not in self._items:
            image, label, name = self.dataset[index]
            self._items[index] = (np.asarray(image, dtype=np.float32),
                                  np.asarray(label, dtype=np.int64), str(name))
        return self._items[index]

    @torch.no_grad()
    def logits(self, method: str, image_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Main and aux logits of a model on a val image, at the label's size (cached).

        Shape:
            -> (1, C, H, W), (1, C, H, W) float32 on the CPU.
        """
        key = (method, int(image_index))
        if key not in self._logits:
            image, label, _ = self.item(image_index)
            x = torch.from_numpy(image)[None].to(self.device)
            main, aux = self.model(method)(x)[:2]
            size = tuple(label.shape[-2:])
            if tuple(main.shape[-2:]) != size:  # full-resolution labels: upsample as the evaluation does
                main = F.interpolate(main, size=size, mode="bilinear", align_corners=True)
                aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=True)
            self._logits[key] = (main.float().cpu(), aux.float().cpu())
        return self._logits[key]

    # -- panels ------------------------------------------------------------------------------

    def panels(self, image_index: int, method: str, threshold: float | None = None,
               alpha: float | None = None) -> dict[str, np.ndarray]:
        """Every panel of one view (see the module table for keys, shapes and meanings).

        Args:
            image_index: index into the target val set.
            method: one of :attr:`methods`.
            threshold: δ of the pseudo-labels (default: the config's ``adapt.threshold``).
            alpha: IW ratio α (default: the config's ``adapt.iw_ratio``).
        Returns:
            ``{panel name: array}``.
        """
        threshold = self.default_threshold if threshold is None else float(threshold)
        alpha = self.default_alpha if alpha is None else float(alpha)
        self._check(image_index, method, threshold, alpha)
        image, label, _ = self.item(image_index)
        main, aux = self.logits(method, image_index)
        out = {"image": denormalize_bgr(image), "label": label}
        out.update(maps_from_logits(main, aux, threshold, alpha))
        c = self.class_set.num_classes
        out["predicted_counts"] = class_histogram(out["prediction"], c)
        out["label_counts"] = class_histogram(label, c)
        return out

    def image_stats(self, panels: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Per-image numbers for the status line.

        Returns:
            ``pixel_accuracy`` (over labelled pixels; NaN if none), ``mean_entropy``,
            ``mean_max_square``, ``kept`` (fraction of pixels with a pseudo-label),
            ``pseudo_accuracy`` (kept and labelled pixels whose pseudo-label is right; NaN if
            none), ``iw_min``/``iw_max`` (the weights × number of pixels; 1 = uniform).
        """
        label, pred, pseudo = panels["label"], panels["prediction"], panels["pseudo_label"]
        labelled = label != IGNORE_INDEX
        kept = pseudo != IGNORE_INDEX
        scaled = panels["iw_weight"] * panels["iw_weight"].size

        def share(hits: np.ndarray, where: np.ndarray) -> float:
            return float(hits[where].mean()) if where.any() else float("nan")

        return {
            "pixel_accuracy": share(pred == label, labelled),
            "mean_entropy": float(panels["entropy"].mean()),
            "mean_max_square": float(panels["max_square"].mean()),
            "kept": float(kept.mean()),
            "pseudo_accuracy": share(pseudo == label, kept & labelled),
            "iw_min": float(scaled.min()),
            "iw_max": float(scaled.max()),
        }

    def threshold_sweep(self, method: str, thresholds: Sequence[float],
                        image_indices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """How δ trades pseudo-label quantity for quality, pooled over several val images.

        Args:
            method: one of :attr:`methods`.
            thresholds: values of δ.
            image_indices: val images to pool (default: the first 16).
        Shape:
            -> each entry (len(thresholds),).
        Returns:
            ``threshold``, ``kept`` (fraction of pixels with a pseudo-label) and ``accuracy``
            (fraction of kept, labelled pixels whose pseudo-label equals the label; NaN if none).
        """
        indices = list(range(min(16, len(self)))) if image_indices is None else list(image_indices)
        for delta in thresholds:
            self._check(0, method, float(delta), 0.0)
        kept = np.zeros(len(thresholds), dtype=np.int64)
        right = np.zeros(len(thresholds), dtype=np.int64)
        kept_labelled = np.zeros(len(thresholds), dtype=np.int64)
        pixels = 0
        for index in indices:
            self._check(index, method, 0.0, 0.0)
            main, aux = self.logits(method, index)
            label = torch.from_numpy(self.item(index)[1])
            pixels += label.numel()
            for k, delta in enumerate(thresholds):
                pseudo = losses.fused_pseudo_label(main, aux, float(delta))[0]
                keep = pseudo != IGNORE_INDEX
                labelled = keep & (label != IGNORE_INDEX)
                kept[k] += int(keep.sum())
                kept_labelled[k] += int(labelled.sum())
                right[k] += int((labelled & (pseudo == label)).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(kept_labelled > 0, right / np.maximum(kept_labelled, 1), np.nan)
        return {"threshold": np.asarray(thresholds, dtype=np.float64),
                "kept": kept / max(pixels, 1), "accuracy": accuracy}

    # -- drawing -----------------------------------------------------------------------------

    def figure(self, image_index: int, method: str, threshold: float | None = None,
               alpha: float | None = None):
        """A matplotlib :class:`~matplotlib.figure.Figure` of one view (no pyplot state involved)."""
        threshold = self.default_threshold if threshold is None else float(threshold)
        alpha = self.default_alpha if alpha is None else float(alpha)
        p = self.panels(image_index, method, threshold, alpha)
        name = self.item(image_index)[2]
        return panel_figure(p, self.class_set, title=f"{name}  ·  {method}  ·  δ = {threshold:.2f}"
                                                    f"  ·  α = {alpha:.2f}",
                            threshold=threshold, alpha=alpha, stats=self.image_stats(p))

    def render(self, image_index: int, method: str, threshold: float | None = None,
               alpha: float | None = None) -> bytes:
        """One view as PNG bytes (deterministic: same inputs, same bytes).

        The last :data:`RENDER_CACHE_SIZE` images are kept, so going back to a view (or showing
        the snapshot's view again in the widget) costs nothing; :meth:`clear_cache` empties it.
        """
        import matplotlib

        threshold = self.default_threshold if threshold is None else float(threshold)
        alpha = self.default_alpha if alpha is None else float(alpha)
        key = (int(image_index), method, round(threshold, 9), round(alpha, 9))
        if key in self._png:
            self._png.move_to_end(key)
            return self._png[key]
        fig = self.figure(image_index, method, threshold, alpha)
        buffer = io.BytesIO()
        with matplotlib.rc_context(STYLE):
            fig.savefig(buffer, format="png", metadata={"Software": None})
        self._png[key] = buffer.getvalue()
        while len(self._png) > RENDER_CACHE_SIZE:
            self._png.popitem(last=False)
        return self._png[key]

    def clear_cache(self) -> None:
        """Forget cached predictions and rendered images (models stay loaded)."""
        self._logits.clear()
        self._png.clear()

    def status_html(self, image_index: int, method: str, threshold: float | None = None,
                    alpha: float | None = None) -> str:
        """The one-line summary shown above the figure in the widget."""
        threshold = self.default_threshold if threshold is None else float(threshold)
        alpha = self.default_alpha if alpha is None else float(alpha)
        s = self.image_stats(self.panels(image_index, method, threshold, alpha))
        name = html.escape(self.item(image_index)[2])

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"

        return (f"<b>{name}</b> · <b>{html.escape(method)}</b>: pixel accuracy {pct(s['pixel_accuracy'])}, "
                f"mean normalised entropy {s['mean_entropy']:.3f}, mean Σp² {s['mean_max_square']:.3f} · "
                f"pseudo-labels at δ = {threshold:.2f}: {pct(s['kept'])} of pixels kept, "
                f"{pct(s['pseudo_accuracy'])} of them right · IW weights at α = {alpha:.2f}: "
                f"{s['iw_min']:.2f}–{s['iw_max']:.2f} × uniform")

    # -- the widget --------------------------------------------------------------------------

    def widget(self, image_index: int = 0, method: str | None = None, threshold: float | None = None,
               alpha: float | None = None):
        """The interactive explorer (see :func:`explorer_widget`); an ``ipywidgets.VBox``."""
        return explorer_widget(self, image_index, method, threshold, alpha)


def explorer_widget(ex: Explorer, image_index: int = 0, method: str | None = None,
                    threshold: float | None = None, alpha: float | None = None):
    """The interactive explorer: sliders and a dropdown above an ``ipywidgets.Image``.

    Children, in the order of :data:`WIDGET_CHILDREN`: image slider (``IntSlider``), method
    (``Dropdown``), threshold δ (``FloatSlider``), IW ratio α (``FloatSlider``), status
    (``HTML``), figure (``Image``, PNG bytes from :meth:`Explorer.render`). Every control calls
    ``observe(..., names="value")``; errors are shown in the status line instead of being lost
    in the kernel log (what JupyterLab does with exceptions raised in widget callbacks).

    Args:
        ex: the explorer.
        image_index, method, threshold, alpha: the initial view (defaults: image 0, the last
            method found, the config's δ and α).
    Returns:
        an ``ipywidgets.VBox``; show it with ``display(...)``.
    """
    import ipywidgets as w

    method = method if method is not None else ex.methods[-1]
    threshold = ex.default_threshold if threshold is None else float(threshold)
    alpha = ex.default_alpha if alpha is None else float(alpha)
    ex._check(image_index, method, threshold, alpha)
    wide = w.Layout(width="460px")
    style = {"description_width": "170px"}
    controls = {
        "image": w.IntSlider(value=int(image_index), min=0, max=len(ex) - 1, step=1,
                             description="target val image", continuous_update=False,
                             layout=wide, style=style),
        "method": w.Dropdown(options=list(ex.methods), value=method, description="run",
                             layout=wide, style=style),
        "threshold": w.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01,
                                   description="pseudo-label threshold δ", readout_format=".2f",
                                   continuous_update=False, layout=wide, style=style),
        "alpha": w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05,
                               description="IW ratio α", readout_format=".2f",
                               continuous_update=False, layout=wide, style=style),
    }
    status = w.HTML(value="", layout=w.Layout(width="100%"))
    figure = w.Image(format="png", layout=w.Layout(width="100%", max_width="1100px"))

    def refresh(_change: Any = None) -> None:
        args = (controls["image"].value, controls["method"].value, controls["threshold"].value,
                controls["alpha"].value)
        try:
            png = ex.render(*args)
            text = ex.status_html(*args)
        except Exception as exc:  # noqa: BLE001 - shown to the learner, not swallowed
            status.value = (f"<span style='color:#b00'>error: {html.escape(type(exc).__name__)}: "
                            f"{html.escape(str(exc))}</span>")
            return
        figure.value = png
        status.value = text

    for control in controls.values():
        control.observe(refresh, names="value")
    refresh()
    box = w.VBox([controls["image"], controls["method"], controls["threshold"], controls["alpha"],
                  status, figure])
    box.refresh = refresh  # type: ignore[attr-defined]  # lets tests and notebooks redraw
    return box
