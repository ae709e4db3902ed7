"""What a run is built from: device, seeds, datasets, model, optimizer, run folder, provenance.

The training loop (:mod:`maxsq_lib.engine.trainer`), the CLI, the course's tooling, the notebooks
and the benchmarks build their pieces here, so that a notebook's model is the one the loop trains.
Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from .. import config as C
from ..models import deeplabv2_from_preset
from ..optim import build_optimizer
from .runs import run_name, source_run_dir


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024.0


def provenance() -> dict:
    """When and from which commit a run was made (for the results tables)."""
    from .. import __version__

    commit = "unknown"
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            commit += "+changes" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit, "dirty": commit.endswith("+changes"),
            "maxsq_lib": __version__, "torch": str(torch.__version__),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}


def build_dataset(cfg: C.RunConfig, role: str):
    """One of the run's datasets.

    Args:
        cfg: the run config.
        role: ``"source"``, ``"target"`` (unlabelled training split), ``"val"`` (target val) or
            ``"source_val"``.
    Returns:
        a dataset with items ``(image, label, name)``.
    """
    from ..data import get_dataset

    d = cfg.data
    name, split, size, augment = {
        "source": (d.source, d.source_split, d.source_size, d.augment),
        "target": (d.target, d.target_split, d.target_size, d.augment),
        "val": (d.target, d.val_split, d.val_size, False),
        "source_val": (d.source, d.source_val_split, d.source_size, False),
    }[role]
    offset = {"source": 1, "target": 2}.get(role, 0)
    return get_dataset(name, root=d.root, split=split, size=tuple(size), num_classes=d.num_classes,
                       augment=augment, blur_p=0.5 if d.blur else 0.0, seed=cfg.seed * 1000 + offset,
                       full_resolution_labels=role == "val" and cfg.eval.full_resolution_labels,
                       city=d.city if name == "nthu" else None)


def build_model(cfg: C.RunConfig) -> torch.nn.Module:
    return deeplabv2_from_preset(cfg.model.preset, cfg.data.num_classes,
                                 aspp_branches=cfg.model.aspp_branches)


def build_optimizer_for(model, optim_cfg: C.OptimConfig):
    """The optimizer a stage's ``optim`` section describes (:func:`maxsq_lib.optim.build_optimizer`)."""
    return build_optimizer(model, optim_cfg.name, lr=optim_cfg.lr, head_lr_mult=optim_cfg.head_lr_mult,
                           momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay)


def eval_subsets(cfg: C.RunConfig, val_ds) -> dict[str, set[str]] | None:
    """Item names of each list of ``cfg.eval.subsets`` (e.g. ``dev`` and ``test``), each checked
    to lie inside the val split."""
    if not cfg.eval.subsets:
        return None
    from ..data import DatasetError, get_dataset

    names = {s.name for s in val_ds.samples}
    out = {}
    for split in cfg.eval.subsets:
        listed = get_dataset(cfg.data.target, root=cfg.data.root, split=split,
                             num_classes=cfg.data.num_classes, check_files=False,
                             city=cfg.data.city if cfg.data.target == "nthu" else None)
        members = {s.name for s in listed.samples}
        outside = sorted(members - names)
        if outside:
            raise DatasetError(f"eval.subsets: the {split!r} list names items that are not in the "
                               f"{cfg.data.val_split!r} split it must be part of, e.g. {outside[:3]}")
        out[split] = members
    return out


def run_dir_for(cfg: C.RunConfig, stage: str) -> Path:
    """The folder of a run (shared source runs live under their owner benchmark)."""
    return source_run_dir(cfg) if stage == "source" else cfg.run_dir(run_name(cfg, stage))


# ----------------------------------------------------------------------------------- starting weights
# Every command that takes a weight file comes here (``evaluate --checkpoint``, ``adapt
# --source-checkpoint``, ``train-source --init-checkpoint``), as do the notebooks and the explorer;
# :mod:`maxsq_lib.checkpoint` reads the file and holds the format, purpose and ASPP-head rules.

def start_file(cfg: C.RunConfig, stage: str) -> Path | None:
    """The weight file a run starts from: source training's init file (None: from scratch), or
    the adaptation's ``--source-checkpoint`` (default: its source run's ``final.pt``)."""
    if stage == "source":
        return Path(cfg.source.init_checkpoint) if cfg.source.init_checkpoint else None
    source = cfg.adapt.source_checkpoint
    return Path(source) if source else source_run_dir(cfg) / "final.pt"


def follow_file_heads(cfg: C.RunConfig, path: str | os.PathLike, *, chosen: bool, purpose: str) -> str:
    """Read a run's weight file and set ``cfg.model.aspp_branches`` from it
    (:meth:`~maxsq_lib.checkpoint.WeightsFile.heads_for`).

    Args:
        cfg: the run config; changed in place.
        path: the weight file.
        chosen: the user set ``model.aspp_branches`` explicitly.
        purpose: ``init``, ``start`` or ``evaluate``.
    Returns:
        a one-line note: the format recognised and the ASPP branches used.
    Raises:
        CheckpointError: the file is missing, unreadable, unsafe, or of the wrong kind.
    """
    wf = ckpt.read_weights(path)
    wf.check_purpose(purpose)
    cfg.model.aspp_branches, why = wf.heads_for(cfg.model.aspp_branches, chosen)
    return f"{wf.describe()}; {why}"


def follow_start_heads(cfg: C.RunConfig, stage: str, *, chosen: bool) -> str | None:
    """:func:`follow_file_heads` for the file a run starts from, when it is on disk already.

    Returns:
        the note to print, or None when the run starts from scratch or its file does not exist
        yet (training reports a missing file with its own hint).
    """
    path = start_file(cfg, stage)
    if path is None or not path.is_file():
        return None
    return follow_file_heads(cfg, path, chosen=chosen, purpose="init" if stage == "source" else "start")


def model_from_file(cfg: C.RunConfig, path: str | os.PathLike, *, chosen: bool = False,
                    purpose: str = "evaluate") -> tuple[torch.nn.Module, str]:
    """A model built for a weight file and loaded from it (evaluation, the explorer, notebooks):
    the preset and class count from ``cfg``, the ASPP branches following the file unless ``chosen``.

    Returns:
        ``(model in eval mode on the CPU, one-line note)``.
    """
    wf = ckpt.read_weights(path)
    wf.check_purpose(purpose)
    branches, why = wf.heads_for(cfg.model.aspp_branches, chosen)
    model = deeplabv2_from_preset(cfg.model.preset, cfg.data.num_classes, aspp_branches=branches)
    report = ckpt.load_weights(model, wf, purpose=purpose)
    return model.eval(), f"loaded {wf.describe()}: {len(report.loaded)} tensors; {why}"
