"""The figure of notebook ``08_lab``: a learner's loss over the iterations, beside the controls.

Not a registered course figure (``maxsq figures`` never draws a learner's loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ... import methods as method_registry
from ..results import MissingEvidence, as_records
from ..series import subset_curve, subset_miou
from ..style import figure_style

COMPARED = ("none", "maxsquare", "maxsquare_iw")
"""The runs drawn beside the lab run (AdaBN is the zero line)."""


def gain_curves(runs: Sequence, names: Sequence[str], seed: int = 0,
                subset: str = "test") -> dict[str, tuple[list[int], list[float]]]:
    """Each run's ``subset`` mIoU minus the ``adabn`` control's (same seed), in points, at every evaluation.

    Args:
        runs: records of one benchmark (the learner's and the lab run).
        names: the runs to draw.
        seed: which seed.
        subset: the scored half (``test`` reports).
    Returns:
        run -> (iterations, gain over AdaBN in points); runs not found are left out.
    Raises:
        MissingEvidence: no ``adabn`` run of that seed.
    """
    by_name = {r.run: r for r in as_records(runs) if r.seed == seed}
    if "adabn" not in by_name:
        raise MissingEvidence(f"no adabn run of seed {seed}: the gains are paired with it")
    base = 100 * subset_miou(by_name["adabn"].last, subset)  # its `before` is the source model itself
    out = {}
    for name in names:
        if name in by_name:
            its, values = subset_curve(by_name[name], subset)
            out[name] = (its, [v - base for v in values])
    return out


def lab_curves(runs: Sequence, run: str, seed: int = 0, resolution: float | None = None,
               subset: str = "test", benchmark: str = "minicity") -> Figure:
    """A lab run over the iterations: left, its ``subset`` mIoU minus AdaBN's beside ``none``,
    MaxSquare and +IW, with the band ± the resolution and a ring at the evaluation ``dev`` chooses;
    right, its target loss as logged (before λ_T). Introduced in notebook ``08_lab``.

    Args:
        runs: the records (:func:`maxsq_lib.course.lab.lab_records`).
        run: the lab run's name.
        seed: which seed.
        resolution: r (fraction) for the grey band, or None.
        subset: the scored half.
        benchmark: name for the title.
    Returns:
        the figure.
    Raises:
        MissingEvidence: no such run, or no adabn run of that seed.
    """
    records = {r.run: r for r in as_records(runs) if r.seed == seed}
    if run not in records:
        raise MissingEvidence(f"no lab run {run} of seed {seed}")
    lab = records[run]
    curves = gain_curves(runs, [*COMPARED, run], seed, subset)
    with figure_style():
        fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw={"width_ratios": (1.6, 1)})
        if resolution is not None:
            ax.axhspan(-100 * resolution, 100 * resolution, color="0.88", zorder=0,
                       label=f"± r = {100 * resolution:.1f} (not resolved)")
        ax.axhline(0, color=method_registry.color("adabn"), lw=1.0, label="AdaBN (no step)")
        for name, (its, gains) in curves.items():
            mine = name == run
            ax.plot(its, gains, color=method_registry.color(lab.method if mine else name),
                    lw=2.0 if mine else 1.1, ls=":" if name == "none" else "-", marker="o" if mine else None,
                    ms=3.5, label=method_registry.label(lab.method) + " (yours)" if mine else method_registry.label(name))
        if lab.report is not None and subset == "test":
            before = dict(zip(*curves[run]))[lab.report["iteration"]]
            ax.scatter([lab.report["iteration"]], [before], s=90, facecolors="none", linewidths=1.4, zorder=5,
                       edgecolors=method_registry.color(lab.method), label="the evaluation dev chooses")
        ax.set(xlabel="adaptation iteration", ylabel=f"{subset} mIoU − AdaBN's (points)",
               title=f"gain over AdaBN at every evaluation ({subset})")
        ax.legend(frameon=False, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
        pts = [(e["iteration"], e["target_loss"]) for e in lab.train_log if e.get("target_loss") is not None]
        if pts:
            ax_loss.plot(*zip(*pts), color=method_registry.color(lab.method), lw=1.2)
        ax_loss.set(xlabel="adaptation iteration", title="your loss L_T as logged (before λ_T)")
        fig.suptitle(f"{benchmark}: {run}, seed {seed}, λ_T {lab.lambda_target:.3g}", fontsize=10)
        fig.tight_layout()
    return fig
