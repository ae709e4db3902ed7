"""Starting weights: any file a user has, the heads it was trained with, loaded into a model.

Every command that takes a weight file goes through here (``evaluate --checkpoint``, ``adapt
--source-checkpoint``, ``train-source --init-checkpoint``), and so do the notebooks' train-or-load
and the explorer. :func:`maxsq_lib.checkpoint.read_weights` recognises the format; this module adds
the two rules a run needs:

- **ASPP branches follow the file.** The authors' heads sum two of the four ASPP branches. A file
  that says how its heads were trained (a maxsq checkpoint's config; the authors' files: 2) decides
  ``model.aspp_branches`` unless the user chose a value (``--aspp-branches`` or ``--set
  model.aspp_branches=...``); the command says which value it uses and why.
- **The DeepLab init file only starts source training**: it has a backbone and no trained heads.

Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import os
from pathlib import Path
import torch

from .. import checkpoint as ckpt
from ..models import deeplabv2_from_preset, unwrap_model

PURPOSES = ("init", "start", "evaluate")
"""``init``: source training's initialisation; ``start``: the model an adaptation starts from;
``evaluate``: a model to score or look at."""


def _check_purpose(wf: ckpt.WeightsFile, purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if wf.format == "deeplab_init" and purpose != "init":
        raise ckpt.CheckpointError(
            f"{wf.path}: this is the DeepLab init file (a backbone with no trained heads); it starts "
            f"source training (maxsq train-source --init-checkpoint {wf.path}); expected a trained "
            f"model: a maxsq checkpoint or the authors' released .pth")


def heads_for(wf: ckpt.WeightsFile, configured: int, chosen: bool) -> tuple[int, str]:
    """The ASPP branches a model for this file should sum, and why, in words.

    Args:
        wf: the file, as read by :func:`~maxsq_lib.checkpoint.read_weights`.
        configured: ``model.aspp_branches`` of the run config.
        chosen: whether the user set that value (a flag or an override), not a profile default.

    Returns:
        ``(aspp_branches, note)``.
    """
    from_file = wf.aspp_branches
    if from_file is None:
        return configured, f"{configured} ASPP branches (the profile's; the file does not say)"
    if chosen or from_file == configured:
        why = "as chosen" if chosen and from_file != configured else "as the file's heads"
        note = f"{configured} ASPP branches ({why}"
        if chosen and from_file != configured:
            note += f"; the file's heads were trained with {from_file}"
        return configured, note + ")"
    source = "the authors' heads sum two" if wf.format != "maxsq" else "recorded in its config"
    return from_file, (f"{from_file} ASPP branches, following the file ({source}; "
                       f"pass --aspp-branches {configured} to override)")


def follow_file_heads(cfg, path: str | os.PathLike, *, chosen: bool, purpose: str) -> str:
    """Read a run's starting file and set ``cfg.model.aspp_branches`` from it (see module doc).

    Args:
        cfg: the run config; changed in place.
        path: the weight file the run starts from.
        chosen: the user set ``model.aspp_branches`` explicitly.
        purpose: ``init``, ``start`` or ``evaluate``.

    Returns:
        a one-line note: the format recognised and the ASPP branches used.

    Raises:
        CheckpointError: the file is missing, unreadable, unsafe, or of the wrong kind.
    """
    wf = ckpt.read_weights(path)
    _check_purpose(wf, purpose)
    branches, why = heads_for(wf, cfg.model.aspp_branches, chosen)
    cfg.model.aspp_branches = branches
    return f"{wf.describe()}; {why}"


def load_into(model: torch.nn.Module, path: str | os.PathLike, purpose: str = "evaluate") -> str:
    """Load any recognised weight file into ``model``, strictly.

    Args:
        model: a DeepLabV2 (bare or wrapped).
        path: the file.
        purpose: ``init``, ``start`` or ``evaluate``.

    Returns:
        a one-line description of what was loaded.

    Raises:
        CheckpointError: unreadable file, a file of the wrong kind, or keys that do not fit.
    """
    wf = ckpt.read_weights(path)
    _check_purpose(wf, purpose)
    report = ckpt.load_weights(model, wf)
    heads = getattr(unwrap_model(model), "aspp_branches", None)
    if wf.aspp_branches is not None and heads is not None and wf.aspp_branches != heads:
        note = f"; note: its heads were trained summing {wf.aspp_branches} ASPP branches, this model sums {heads}"
    else:
        note = ""
    skipped = f", {len(report.missing)} left at their init" if wf.format == "deeplab_init" else ""
    return f"loaded {wf.describe()}: {len(report.loaded)} tensors{skipped}{note}"


def model_from_file(cfg, path: str | os.PathLike, *, chosen: bool = False,
                    purpose: str = "evaluate") -> tuple[torch.nn.Module, str]:
    """A model built for a weight file and loaded from it (evaluation, the explorer, notebooks).

    The preset and class count come from ``cfg``; the ASPP branches follow the file unless
    ``chosen`` (see :func:`heads_for`).

    Returns:
        ``(model in eval mode on the CPU, one-line note)``.
    """
    wf = ckpt.read_weights(path)
    _check_purpose(wf, purpose)
    branches, why = heads_for(wf, cfg.model.aspp_branches, chosen)
    model = deeplabv2_from_preset(cfg.model.preset, cfg.data.num_classes, aspp_branches=branches)
    report = ckpt.load_weights(model, wf)
    return model.eval(), f"loaded {wf.describe()}: {len(report.loaded)} tensors; {why}"



def start_file(cfg, stage: str) -> Path | None:
    """The weight file a run starts from: source training's init file (None: from scratch), or
    the adaptation's ``--source-checkpoint`` (default: its source run's ``final.pt``)."""
    from .runs import source_run_dir

    if stage == "source":
        return Path(cfg.source.init_checkpoint) if cfg.source.init_checkpoint else None
    source = cfg.adapt.source_checkpoint
    return Path(source) if source else source_run_dir(cfg) / "final.pt"


def follow_start_heads(cfg, stage: str, *, chosen: bool) -> str | None:
    """:func:`follow_file_heads` for the file a run starts from, when it is on disk already.

    Returns:
        the note to print, or None when the run starts from scratch or its file does not exist
        yet (training reports a missing file with its own hint).
    """
    path = start_file(cfg, stage)
    if path is None or not path.is_file():
        return None
    return follow_file_heads(cfg, path, chosen=chosen, purpose="init" if stage == "source" else "start")
