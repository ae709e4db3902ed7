"""Run folders, their names, and reading finished runs back.

Layout: ``<runs>/<profile>/<benchmark>/<run name>/seed<k>/`` where the run name is ``source`` (or
``source_multi`` when the source model also trains the aux head) for pretraining, and the method
name, optionally followed by ``-<tag>`` (e.g. ``maxsquare-lambda0.03``), for adaptation.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..files import write_text_atomic

FINISHED_MARKER = "FINISHED"


class RunExistsError(FileExistsError):
    """A run folder already holds outputs that this command would overwrite."""


def run_name(cfg, stage: str) -> str:
    """The folder name of a run (see the module docstring)."""
    if stage == "source":
        return "source_multi" if cfg.source.multi else "source"
    return cfg.adapt.method + (f"-{cfg.tag}" if cfg.tag else "")


def source_run_dir(cfg) -> Path:
    """The source run an adaptation starts from; benchmarks that share a source model (the four
    cross-city targets) name the owner in ``source_benchmark``."""
    owner = cfg.source_benchmark or cfg.benchmark
    return Path(cfg.runs_root) / cfg.profile / owner / run_name(cfg, "source") / f"seed{cfg.seed}"


def is_finished(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / FINISHED_MARKER).is_file() and (Path(run_dir) / "metrics.json").is_file()


# What decides a run's model: a finished run is reused only if these settings are unchanged.
# Paths (data and checkpoints may move), threads, devices, logging and the evaluation period are not.
# Precision decides the model (bf16 and float32 runs differ); the memory format only reorders floats.
_SOURCE_KEYS = ("seed", "amp", "model.", "source.", "data.source", "data.num_classes")
_ADAPT_KEYS = _SOURCE_KEYS + ("adapt.", "data.", "eval.flip", "eval.full_resolution_labels", "eval.limit",
                              "eval.bn_statistics", "eval.bn_images")
_NOT_COMPARED = ("data.root", "data.workers", "source.init_checkpoint", "adapt.source_checkpoint")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def config_mismatches(saved: dict, wanted: dict, stage: str) -> list[str]:
    """Settings that make a finished run different from the run that ``wanted`` would train.

    Args:
        saved: the run's ``config.yaml`` (a :class:`~maxsq_lib.config.RunConfig` as a dict).
        wanted: the config resolved now, as a dict.
        stage: ``"source"`` (compares the source data, model and source recipe) or ``"adapt"``
            (also the adaptation recipe, the target data and the evaluation protocol).
    Returns:
        ``"key: <saved> there, <wanted> now"`` lines; empty when the run can be reused. (A
        matched-gradient run's measured λ_T is in its metrics, not its config.)
    """
    keys = _SOURCE_KEYS if stage == "source" else _ADAPT_KEYS
    a, b = _flatten(saved), _flatten(wanted)
    return [f"{key}: {a.get(key)!r} there, {b.get(key)!r} now" for key in sorted(set(a) | set(b))
            if key not in _NOT_COMPARED and key.startswith(keys) and a.get(key) != b.get(key)]


def check_reusable(run_dir: str | os.PathLike, wanted: dict, stage: str) -> None:
    """Raise :class:`RunExistsError` if the finished run in ``run_dir`` was made with settings
    that differ from ``wanted`` (a profile changed since, or other ``--set`` values)."""
    from ..config import load_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunExistsError(f"{run_dir} is marked finished but has no config.yaml; remove the folder "
                             f"to train it again")
    mismatches = config_mismatches(load_yaml(path), with_concrete_amp(wanted), stage)
    if mismatches:
        shown = "\n  ".join(mismatches[:8]) + (f"\n  ... and {len(mismatches) - 8} more" if len(mismatches) > 8 else "")
        raise RunExistsError(
            f"{run_dir} is a finished run made with other settings than this command's:\n  {shown}\n"
            f"Remove that folder (or its whole runs/<profile>/ tree) to train it again, or pass --runs DIR "
            f"to keep both.")


def with_concrete_amp(cfg: dict) -> dict:
    """A config dict whose ``amp: auto`` is replaced by what this machine resolves it to (a run's
    ``config.yaml`` holds the concrete precision it trained in)."""
    if cfg.get("amp") != "auto":
        return cfg
    from .precision import resolve_amp

    return {**cfg, "amp": resolve_amp("auto", cfg.get("device", "auto"))[0]}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (NaN/inf as null) atomically."""
    return write_text_atomic(path, json.dumps(_json_safe(data), indent=1, sort_keys=False) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> dict:
    """The ``metrics.json`` of a finished run; a clear error otherwise."""
    run_dir = Path(run_dir)
    if not is_finished(run_dir):
        raise FileNotFoundError(f"no finished run in {run_dir} (expected {FINISHED_MARKER} and "
                                f"metrics.json)")
    return json.loads((run_dir / "metrics.json").read_text())


def find_runs(runs_root: str | os.PathLike, profile: str, benchmark: str | None = None) -> list[dict]:
    """Metrics of every finished run under ``<runs_root>/<profile>/[<benchmark>/]``, sorted."""
    base = Path(runs_root) / profile
    pattern = f"{benchmark}/*/seed*" if benchmark else "*/*/seed*"
    return [{**read_metrics(run_dir), "run_dir": str(run_dir)} for run_dir in sorted(base.glob(pattern))
            if is_finished(run_dir)]
