"""The one registry of adaptation methods: what each target loss computes and how it is shown.

A row names a method, says how the course labels and colours it, whether it trains the auxiliary
head, and holds its unweighted target loss ``loss(main, aux, params) -> (loss, logs)``. The
strategies (:mod:`maxsq_lib.engine.strategies`), the config check, the CLI's choices, the course's
tables, figure legends and the dry run all read this table, so a new target loss touches its loss
function, one :func:`register_method` call and its tests. Introduced in notebook ``04_adaptation``;
notebook ``08_lab`` registers a learner's own loss.

=====================  =============================================================================
method                 unweighted target loss (the loop adds λ_T times it; λ_seg = ``lambda_seg``)
=====================  =============================================================================
adabn                  none: BatchNorm statistics re-estimated on target images, no gradient step
none                   none: target images still pass through BatchNorm in train mode
minent                 entropy(P)
maxsquare              MaxSquare(P)
maxsquare_iw           IW-MaxSquare(P; α)
maxsquare_iw_multi     IW-MaxSquare(P; α) + λ_seg · CE(aux, fused pseudo-label)
hard                   CE(main, argmax P where max P > threshold)
=====================  =============================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from . import losses


@dataclass(frozen=True)
class LossParams:
    """The constants a target loss may read (the run's ``adapt`` section).

    Args:
        lambda_seg: λ_seg, the aux-head weight of multi-level guidance.
        threshold: confidence threshold δ of pseudo-labels.
        iw_ratio: α of the image-wise class weights.
        faithful_scale: use the authors' loss constants (docs/authors_code.md §4.2).
    """

    lambda_seg: float = 0.1
    threshold: float = 0.95
    iw_ratio: float = 0.2
    faithful_scale: bool = True


LossFn = Callable[[Tensor, "Tensor | None", LossParams], "tuple[Tensor, dict[str, Tensor]]"]
PseudoLabelFn = Callable[[Tensor, "Tensor | None", LossParams], Tensor]


@dataclass(frozen=True)
class Method:
    """One row of the registry.

    Args:
        name: the name configs and commands use (``adapt.method``).
        label: how tables and legends show it.
        color: its colour in every figure.
        role: ``"source"`` (a table row, not an adaptation method), ``"control"`` (no target loss)
            or ``"loss"``.
        loss: ``(main, aux, params) -> (unweighted scalar loss, {name: detached 0-d tensor})``;
            ``None`` for the source rows and the controls.
        uses_aux: the loss trains the aux head (the loop then also adds λ_seg·CE(aux) on source).
        pseudo_labels: ``(main, aux, params) -> (B, H, W)`` labels (-1: not kept) of methods that
            train on pseudo-labels, else ``None`` (the probe reports their kept share).
    Shape:
        main, aux: (B, C, H, W) logits at input resolution.
    """

    name: str
    label: str
    color: str
    role: str = "loss"
    loss: LossFn | None = None
    uses_aux: bool = False
    pseudo_labels: PseudoLabelFn | None = None


def _minent(main, aux, p):
    return losses.entropy(main, faithful=p.faithful_scale), {}


def _maxsquare(main, aux, p):
    return losses.max_square(main, faithful=p.faithful_scale), {}


def _maxsquare_iw(main, aux, p):
    return losses.iw_max_square(main, ratio=p.iw_ratio, faithful=p.faithful_scale), {}


def _fused_labels(main, aux, p):
    return losses.fused_pseudo_label(main, aux, threshold=p.threshold)


def _confident_labels(main, aux, p):
    return losses.hard_pseudo_label(main, threshold=p.threshold)


def _maxsquare_iw_multi(main, aux, p):
    main_loss = losses.iw_max_square(main, ratio=p.iw_ratio, faithful=p.faithful_scale)
    aux_ce, pseudo = losses.multi_level_guidance(main, aux, threshold=p.threshold)
    # λ_T multiplies the sum, so the aux term ends up weighted λ_seg·λ_T as in docs/authors_code.md §4.1.
    return main_loss + p.lambda_seg * aux_ce, {"target_main_loss": main_loss.detach(),
                                               "target_aux_ce": aux_ce.detach(),
                                               "pseudo_label_fraction": (pseudo >= 0).float().mean()}


def _hard(main, aux, p):
    pseudo = _confident_labels(main, aux, p)
    return losses.source_cross_entropy(main, pseudo), {"pseudo_label_fraction": (pseudo >= 0).float().mean()}


_REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("source", "source only", "#7f7f7f", role="source"),
    Method("source_multi", "source only (aux head)", "#7f7f7f", role="source"),
    Method("adabn", "AdaBN (BN statistics only)", "#8172b3", role="control"),
    Method("none", "none (no target loss)", "#bcbd22", role="control"),
    Method("minent", "MinEnt", "#1f77b4", loss=_minent),
    Method("maxsquare", "MaxSquare", "#d62728", loss=_maxsquare),
    Method("maxsquare_iw", "MaxSquare+IW", "#ff7f0e", loss=_maxsquare_iw),
    Method("maxsquare_iw_multi", "MaxSquare+IW+Multi", "#2ca02c", loss=_maxsquare_iw_multi, uses_aux=True,
           pseudo_labels=_fused_labels),
    Method("hard", "hard pseudo-labels", "#9467bd", loss=_hard, pseudo_labels=_confident_labels),
)}

_SPARE_COLORS = ("#17becf", "#e377c2", "#8c564b", "#393b79", "#637939", "#843c39")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def register_method(name: str, loss: LossFn, *, label: str | None = None, color: str | None = None,
                    uses_aux: bool = False, pseudo_labels: PseudoLabelFn | None = None,
                    replace: bool = False) -> Method:
    """Add a target loss to the registry, so configs, the CLI, the course runner and the figures
    know it (``maxsq_lib.course.lab`` checks it on real logits before any training).

    Args:
        name: lower-case letters, digits and ``_`` (a run folder is named after it).
        loss: ``(main, aux, params) -> (unweighted scalar loss, logs dict)``; see :class:`Method`.
        label, color: how figures show it (default: the name, a spare colour).
        replace: allow re-registering a name added earlier by this function (a notebook cell run
            twice); the paper's methods are never replaced.
    Returns:
        the new row.
    """
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"method name {name!r}: expected lower-case letters, digits and _ "
                         f"(starting with a letter, at most 40 characters)")
    if name in _REGISTRY and (not replace or name in _BUILT_IN):
        raise ValueError(f"method {name!r} is already registered" +
                         ("" if name in _BUILT_IN else "; pass replace=True to redefine it"))
    if not callable(loss):
        raise ValueError(f"method {name!r}: loss must be a function (main, aux, params) -> (loss, logs)")
    added = [n for n in _REGISTRY if n not in _BUILT_IN and n != name]
    row = Method(name, label or name, color or _SPARE_COLORS[len(added) % len(_SPARE_COLORS)], "loss",
                 loss, uses_aux, pseudo_labels)
    _REGISTRY[name] = row
    return row


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method` (the paper's methods stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"method {name!r} is one of the paper's and cannot be removed")
    _REGISTRY.pop(name, None)


def get_method(name: str) -> Method:
    """The registry row of a method or source row; unknown names raise ``ValueError``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown adaptation method {name!r}; expected one of {adaptation_methods()}") from None


def adaptation_methods() -> tuple[str, ...]:
    """Every method ``adapt.method`` accepts, in display order (controls first)."""
    return tuple(n for n, m in _REGISTRY.items() if m.role != "source")


def loss_methods() -> tuple[str, ...]:
    """Methods with a target loss (those gradient matching accepts)."""
    return tuple(n for n, m in _REGISTRY.items() if m.role == "loss")


def label(name: str) -> str:
    """How tables and legends show a method or source row (its name when unknown)."""
    row = _REGISTRY.get(name)
    return row.label if row else name


def color(name: str) -> str:
    """A method's colour in every figure (grey when unknown)."""
    row = _REGISTRY.get(name)
    return row.color if row else "#999999"


def display_rank(name: str) -> int:
    """A method's place in tables (source rows, controls, the paper's losses, then added ones)."""
    order = list(_REGISTRY)
    return order.index(name) if name in order else len(order)


_BUILT_IN = frozenset(_REGISTRY)
