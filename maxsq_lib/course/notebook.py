"""Helpers the notebooks call: set-up, train-or-load, loading models and predictions.

Every notebook starts the same way: its first code cell sets ``OMP_WAIT_POLICY=PASSIVE`` (before
torch starts), the cell tagged ``parameters`` holds ``profile``, ``benchmark``, ``runs_root``,
``data_root``, ``seed``, ``device`` (and notebook-specific values), the next cell derives the run
config with :func:`config_for` (relative paths are taken from the project root, so they mean the
same in JupyterLab, whose working folder is ``notebooks/``, and under papermill), and a set-up cell
calls :func:`setup`, which seeds and prints the versions and the device. Introduced in notebook
``00_setup``.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import torch

from .. import __version__
from .. import config as C
from ..files import at_root, project_root  # noqa: F401  (the course's names for them)


def config_for(profile: str = "cpu", benchmark: str | None = None, method: str | None = None,
               *, runs_root: str = "runs", data_root: str | None = None, seed: int = 0,
               device: str = "auto", tag: str | None = None,
               overrides: dict[str, Any] | list[str] | None = None) -> C.RunConfig:
    """The run config a notebook's parameters describe (same layers as the CLI).

    Args:
        profile: ``smoke``, ``cpu``, ``gpu`` or ``paper``.
        benchmark: a benchmark of the profile, or None for its first.
        method: adaptation method, or None / ``"source"`` for source pretraining.
        runs_root: where runs live (relative to the project root).
        data_root: dataset root (relative to the project root), or None for the profile's.
        seed: run seed.
        device: ``auto``, ``cpu``, ``cuda``.
        tag: run-name suffix for variants (``maxsquare-<tag>``).
        overrides: applied last: a nested mapping, or a list of ``KEY=VALUE`` strings as
            ``maxsq --set`` takes them (the notebooks' ``overrides`` parameter).
    Returns:
        the resolved :class:`maxsq_lib.config.RunConfig`; its relative paths (runs, data,
        checkpoints) are made absolute under the project root (:func:`at_root`).
    """
    extra: dict[str, Any] = {"runs_root": runs_root, "seed": seed}
    if device != "auto" or profile in ("gpu", "paper"):
        extra["device"] = device
    if data_root:
        extra["data"] = {"root": data_root}
    if tag:
        extra["tag"] = tag
    if overrides and not isinstance(overrides, dict):  # a dot-list, as `maxsq --set` takes it
        overrides = C.parse_overrides(overrides)
    if overrides:
        C.deep_update(extra, overrides)
    cfg = C.resolve(profile, benchmark, method, extra)
    cfg.runs_root, cfg.data.root = at_root(cfg.runs_root), at_root(cfg.data.root)
    if cfg.source.init_checkpoint:
        cfg.source.init_checkpoint = at_root(cfg.source.init_checkpoint)
    if cfg.adapt.source_checkpoint:
        cfg.adapt.source_checkpoint = at_root(cfg.adapt.source_checkpoint)
    # A starting file the notebook names decides the heads (the profile's own runs already agree
    # with the profile: their reuse check says so), so only such a file is read here.
    stage, key = (("adapt", "source_checkpoint") if method not in (None, "source")
                  else ("source", "init_checkpoint"))
    if ((overrides or {}).get(stage) or {}).get(key):
        from ..engine.build import follow_start_heads

        chosen = "aspp_branches" in ((overrides or {}).get("model") or {})
        note = follow_start_heads(cfg, stage, chosen=chosen)
        if note:
            print(f"starting weights: {note}")
    return cfg


def setup(cfg: C.RunConfig | None = None, seed: int | None = None) -> torch.device:
    """Seed, print versions, the project root and the device; returns the device."""
    root = project_root()
    from ..engine.build import resolve_device, seed_everything

    device = resolve_device(cfg.device if cfg else "auto")
    seed_everything(cfg.seed if cfg and seed is None else (seed or 0))
    if cfg is not None and cfg.threads:
        torch.set_num_threads(cfg.threads)
    lines = [
        f"maxsq_lib {__version__} | torch {torch.__version__} | numpy {np.__version__} | "
        f"python {platform.python_version()}",
        f"project root: {root}",
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                               f" ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
                               f"{os.environ.get('OMP_WAIT_POLICY', 'unset')})"),
    ]
    if cfg is not None:
        lines.append(f"profile {cfg.profile} | benchmark {cfg.benchmark} | seed {cfg.seed} | "
                     f"data {cfg.data.root} | runs {cfg.runs_root}")
    print("\n".join(lines))
    return device


def ensure_run(cfg: C.RunConfig, stage: str, progress: bool = True) -> dict:
    """Train-or-load: the metrics of a finished run, training it first if needed.

    Args:
        cfg: the run config.
        stage: ``"source"`` or ``"adapt"``.
        progress: tqdm bars while training.
    Returns:
        the run's ``metrics.json`` content.
    """
    from ..engine import is_finished, read_metrics, run_dir_for, train
    from ..engine.runs import check_reusable

    run_dir = run_dir_for(cfg, stage)
    if is_finished(run_dir):
        check_reusable(run_dir, cfg.to_dict(), stage)
        print(f"reusing the finished run in {run_dir}")
        return read_metrics(run_dir)
    resume = (run_dir / "last.pt").is_file()
    print(f"{'resuming' if resume else 'training'} {run_dir} ...")
    # `make course` may be training this very run: wait for it and use its result
    return train(cfg, stage, resume=resume, progress=progress, wait_for_lock=True)


def load_run_model(cfg: C.RunConfig, stage: str, which: str = "final",
                   device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model of a finished run (``final``, ``best`` or ``last`` checkpoint) in eval mode; its
    heads follow the checkpoint's recorded ASPP branches."""
    from ..engine.build import model_from_file, run_dir_for

    model, _note = model_from_file(cfg, run_dir_for(cfg, stage) / f"{which}.pt")
    return model.to(device).eval()


def starting_model(cfg: C.RunConfig, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model an adaptation run starts from, in eval mode: its ``adapt.source_checkpoint`` when
    set, else its own source run (trained first if missing: the multi-level one for Multi, as the
    engine chooses). Introduced in notebook ``04_adaptation``."""
    from ..engine.build import model_from_file, start_file

    if not cfg.adapt.source_checkpoint:
        ensure_run(cfg, "source")
    model, _note = model_from_file(cfg, start_file(cfg, "adapt"), purpose="start")
    return model.to(device).eval()


def dataset(cfg: C.RunConfig, role: str = "val"):
    """One of a run's datasets: ``source``, ``target``, ``val`` or ``source_val``."""
    from ..engine.build import build_dataset

    return build_dataset(cfg, role)


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
            flip: bool = False) -> dict[str, np.ndarray]:
    """Predictions for a batch, as numpy arrays for plotting.

    Shape:
        images (B, 3, H, W) -> ``probs`` (B, C, H, W), ``pred`` (B, H, W), ``entropy`` (B, H, W),
        ``aux_probs`` (B, C, H, W).
    """
    from ..engine.evaluation import normalized_entropy, predict_probabilities

    images = images.to(device)
    probs = predict_probabilities(model, images, flip=flip)
    aux = model(images)[1].float().softmax(1)
    return {"probs": probs.cpu().numpy(), "pred": probs.argmax(1).cpu().numpy(),
            "entropy": normalized_entropy(probs).cpu().numpy(), "aux_probs": aux.cpu().numpy()}


def batch(ds, indices) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack dataset items into ``(images, labels, names)``."""
    items = [ds[i] for i in indices]
    return (torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]),
            [it[2] for it in items])
