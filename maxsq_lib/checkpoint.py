"""Checkpoints: atomic saves that resume exactly, and one safe loader for every weight file.

Every file is read with ``torch.load(weights_only=True)`` (tensors and plain containers only; a
file that would need arbitrary Python objects is refused). :func:`read_weights` recognises what a
user may have, and :func:`load_weights` loads any of them into a model:

================================  ============================================================
format (``WeightsFile.format``)   what the file holds
================================  ============================================================
``maxsq``                         our training checkpoints (:func:`save_checkpoint`): model,
                                  optimizer, step, config (with its ``model.aspp_branches``),
                                  RNG states; :func:`load_checkpoint` also resumes from them
``authors``                       the authors' training checkpoints (``GTA5_source.pth``):
                                  ``{"state_dict": {"module.<key>": tensor}, "epoch",
                                  "iteration", "optimizer", "best_MIou"}`` from PyTorch 1.0
                                  (legacy serialization); their heads sum two ASPP branches
``state_dict_module``             a bare ``DataParallel`` state_dict (``module.`` keys)
``state_dict``                    a bare state_dict
``deeplab_init``                  the DeepLab init file (``DeepLab_resnet_pretrained_init-
                                  f81d91e8.pth``): ``Scale.<key>``; its own classifier
                                  (``layer5``) is skipped, so both heads keep their random init
================================  ============================================================

Every problem raises :class:`CheckpointError` naming the file; a weight mismatch lists the
missing, unexpected and wrongly shaped keys (see :class:`LoadReport`).

Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import glob
import os
import random
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .files import atomic_file
from .models import unwrap_model

CHECKPOINT_FORMAT = "maxsq-checkpoint"
"""Value of the ``format`` entry of files written by :func:`save_checkpoint`."""

CHECKPOINT_FORMAT_VERSION = 1

_DATA_PARALLEL_PREFIX = "module."
_INIT_PREFIX = "Scale."
_INIT_SKIPPED_TOP_LEVEL = "layer5"
_BACKBONE_TOP_LEVEL = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
_HEAD_TOP_LEVEL = ("layer5", "layer6")
_LIST_LIMIT = 5


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


# --------------------------------------------------------------------------------------------
# Load reports


@dataclass
class LoadReport:
    """What a loader did with each tensor of a file.

    Args:
        loaded: model keys that received a tensor from the file.
        missing: model keys the file does not provide.
        unexpected: file keys (after prefix removal) the model does not have.
        mismatched: ``(key, file shape, model shape)`` for keys present in both with other shapes.
        skipped: file keys deliberately not loaded (e.g. the init file's ``layer5`` classifier).
        info: the file's non-tensor entries (e.g. ``epoch``, ``iteration``, ``best_MIou``).
        note: one line saying what :func:`load_weights` loaded.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when no key is missing, unexpected or of the wrong shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors; missing {len(self.missing)}, unexpected "
                 f"{len(self.unexpected)}, shape mismatches {len(self.mismatched)}, "
                 f"skipped {len(self.skipped)}"]
        for title, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                            ("skipped keys", self.skipped)):
            if keys:
                lines.append(f"{title} ({len(keys)}):")
                lines += [f"  {line}" for line in _grouped(keys)]
        if self.mismatched:
            lines.append(f"shape mismatches ({len(self.mismatched)}), file vs model:")
            lines += [f"  {key}: file {_shape_text(fs)} vs model {_shape_text(ms)}"
                      for key, fs, ms in self.mismatched[:_LIST_LIMIT]]
            if len(self.mismatched) > _LIST_LIMIT:
                lines.append(f"  ... and {len(self.mismatched) - _LIST_LIMIT} more")
        lines += [f"hint: {hint}" for hint in _hints(self)]
        return "\n".join(lines)


def _top_level(key: str) -> str:
    return key.split(".", 1)[0]


def _shape_text(shape: Any) -> str:
    return f"[{', '.join(str(s) for s in shape)}]" if isinstance(shape, tuple) else str(shape)


def _grouped(keys: Iterable[str]) -> list[str]:
    """One line per top-level module: ``name (count): first keys, ...``."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(_top_level(key), []).append(key)
    lines = []
    for top, members in groups.items():
        shown = ", ".join(members[:_LIST_LIMIT])
        more = f", ... (+{len(members) - _LIST_LIMIT})" if len(members) > _LIST_LIMIT else ""
        lines.append(f"{top} ({len(members)}): {shown}{more}")
    return lines


def _block_counts(keys: Iterable[str]) -> dict[str, int]:
    """Bottlenecks per backbone layer implied by state_dict keys (``layer3.22.conv1.weight`` -> 23)."""
    counts: dict[str, int] = {}
    for key in keys:
        match = re.match(r"(layer[1-4])\.(\d+)\.", key)
        if match:
            counts[match[1]] = max(counts.get(match[1], 0), int(match[2]) + 1)
    return counts


def _hints(report: LoadReport) -> list[str]:
    """Likely causes of a mismatch, in words a user can act on."""
    head_classes = {(fs[0], ms[0]) for key, fs, ms in report.mismatched
                    if _top_level(key) in _HEAD_TOP_LEVEL and isinstance(fs, tuple) and fs and ms
                    and fs[1:] == ms[1:]}
    hints = [f"the file's heads have {file_classes} classes, the model's {model_classes}: "
             f"build the model with num_classes={file_classes}"
             for file_classes, model_classes in sorted(head_classes)]
    stem = [(fs, ms) for key, fs, ms in report.mismatched if key == "conv1.weight"]
    if stem and isinstance(stem[0][0], tuple):
        hints.append(f"the stem has {stem[0][0][0]} channels in the file and {stem[0][1][0]} in the model: "
                     "the model was built with another size (the authors' files need the 'paper' size)")
    shared = [k for k, _, _ in report.mismatched]
    file_blocks = _block_counts(report.loaded + report.unexpected + shared)
    model_blocks = _block_counts(report.loaded + report.missing + shared)
    if any(file_blocks[layer] != model_blocks[layer] for layer in set(file_blocks) & set(model_blocks)):
        hints.append(f"bottlenecks per layer differ: file {file_blocks}, model {model_blocks} "
                     "(the authors' ResNet-101 has 3, 4, 23, 3)")
    if report.unexpected and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in report.unexpected):
        hints.append("the file's keys start with 'module.' (a DataParallel state_dict): "
                     "use load_weights, which removes the prefix")
    return hints


def compare_state_dicts(model_state: Mapping[str, Any], file_state: Mapping[str, Any]) -> LoadReport:
    """Match a file's tensors to a model's state_dict by key and shape (pure, loads nothing).

    Args:
        model_state: the model's ``state_dict()``.
        file_state: tensors read from a file, keys already without wrapper prefixes.

    Returns:
        A :class:`LoadReport` with ``loaded`` = keys whose shapes agree, in model order.
    """
    report = LoadReport()
    for key, target in model_state.items():
        if key not in file_state:
            report.missing.append(key)
            continue
        value = file_state[key]
        if not isinstance(value, torch.Tensor):
            report.mismatched.append((key, f"not a tensor ({type(value).__name__})", tuple(target.shape)))
        elif value.shape != target.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(target.shape)))
        else:
            report.loaded.append(key)
    report.unexpected = [key for key in file_state if key not in model_state]
    return report


# --------------------------------------------------------------------------------------------
# Reading files safely


def _numpy_scalar_globals() -> list:
    """The numpy objects needed to unpickle a numpy scalar (the authors' ``best_MIou``).

    ``numpy.core.multiarray.scalar(dtype, bytes)`` only builds a number, so allowing it (and
    ``numpy.dtype``) keeps ``weights_only`` safe. The authors' PyTorch-1.0 files name it under
    the pre-numpy-2 module path, hence the alias.
    """
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefdg"}
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtype_classes]


def _short_reason(exc: BaseException) -> str:
    message = str(exc)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\s*\n|$)", message, flags=re.S)
    text = match[1] if match else (message.strip().splitlines() or [""])[0]
    text = " ".join(text.split())
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_torch_file(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                     allow_numpy_scalars: bool = False, lazy: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file and the reason.

    Args:
        path: the file.
        map_location: where tensors go (``"cpu"`` by default).
        allow_numpy_scalars: also accept numpy scalars (needed for the authors' files, whose
            ``best_MIou`` is a ``numpy.float64``).
        lazy: map a zip file's tensors from disk instead of reading them (a legacy file is read).

    Returns:
        The unpickled object (tensors, dicts, lists, numbers, strings).

    Raises:
        CheckpointError: the file is missing, is not a torch file, is truncated, or needs a
            Python object that ``weights_only`` refuses to build (refused for safety).
    """
    p = Path(path)
    expected = "expected a PyTorch checkpoint written by torch.save (zip or legacy format)"
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p} ({expected})")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {p} ({expected})")
    allow = (torch.serialization.safe_globals(_numpy_scalar_globals()) if allow_numpy_scalars
             else contextlib.nullcontext())
    try:
        with allow:
            mmap = lazy and zipfile.is_zipfile(p)
            return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for damaged files; all mean "unreadable"
        blocked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if blocked:
            raise CheckpointError(
                f"{p}: refused for safety: unpickling it would call or build the Python object "
                f"{blocked[1]!r}, which torch.load(weights_only=True) does not allow (a file from an "
                "untrusted source can run code this way). Checkpoints may contain only tensors, "
                "numbers, strings and plain containers.") from exc
        raise CheckpointError(f"{p}: not a readable checkpoint ({_short_reason(exc)}); {expected}") from exc


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def _plain_info(obj: Mapping) -> dict:
    """Non-tensor scalars of a file's top level (epoch, iteration, best_MIou) as Python values."""
    info = {}
    for key, value in obj.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, str)) or value is None:
            info[str(key)] = value
    return info


def _as_state_dict(obj: Any, path: Path, expected: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensor mapping inside a loaded file (``obj["state_dict"]`` or ``obj`` itself), and info."""
    info: dict = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        info = _plain_info(obj)
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: no tensors found ({expected}); got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not named tensors: {bad[:_LIST_LIMIT]} ({expected})")
    return dict(obj), info


def _apply_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, strict: bool,
                 init: bool = False) -> LoadReport:
    """Load ``state`` into the unwrapped model; strict: raise with a report on any mismatch. ``init``:
    the DeepLab init file's tensors (keys without the wrapper name, ``layer5`` removed) fill the
    backbone; any unexpected or wrongly shaped key is refused, and (strict) a backbone tensor it lacks."""
    net = unwrap_model(model)
    report = compare_state_dicts(net.state_dict(), state)
    if init:
        expected = "expected the DeepLab init state_dict with keys like 'Scale.conv1.weight'"
        missing_backbone = [k for k in report.missing
                            if _top_level(k) in _BACKBONE_TOP_LEVEL and not k.endswith("num_batches_tracked")]
        if report.unexpected or report.mismatched or (strict and missing_backbone):
            details = [str(report)]
            if strict and missing_backbone:
                details.append(f"backbone tensors the file lacks ({len(missing_backbone)}): "
                               + "; ".join(_grouped(missing_backbone)))
            raise CheckpointError(f"{path}: the init weights do not fit the model ({expected}):\n"
                                  + "\n".join(details))
    elif strict and not report.ok:
        raise CheckpointError(f"{path}: the weights do not fit the model:\n{report}")
    # the tensors that fit; the others keep their values (the init file: both heads and
    # num_batches_tracked, which it lacks)
    net.load_state_dict({k: state[k] for k in report.loaded}, strict=strict and not init)
    return report


# --------------------------------------------------------------------------------------------
# RNG states


def capture_rng_states() -> dict:
    """The states of Python's ``random``, numpy's global RNG, torch CPU and CUDA, as tensors.

    Returns:
        A dict that ``torch.load(weights_only=True)`` can read back (numpy's ``uint32`` key
        and Python's state tuple are stored as int64 tensors).
    """
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {"python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                       "gauss_next": py_gauss},
            "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                      "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                      "cached_gaussian": float(np_cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states: Mapping) -> None:
    """Restore the RNG states captured by :func:`capture_rng_states` (e.g. from a checkpoint).

    CUDA states are restored for the devices present (a file from a machine with more GPUs
    restores the first ones; a CPU-only machine ignores them).

    Args:
        states: the ``"rng"`` entry of a checkpoint.

    Raises:
        ValueError: the mapping lacks an entry or holds wrongly typed values.
    """
    try:
        py = states["python"]
        random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
        npy = states["numpy"]
        np.random.set_state((str(npy["name"]), npy["keys"].numpy().astype(np.uint32), int(npy["pos"]),
                             int(npy["has_gauss"]), float(npy["cached_gaussian"])))
        torch.set_rng_state(states["torch"].cpu().to(torch.uint8))
        cuda_states = list(states.get("cuda", []))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError("RNG states must be a dict with 'python', 'numpy', 'torch' (and 'cuda') entries "
                         f"as written by capture_rng_states: {exc!r}") from exc
    if cuda_states and torch.cuda.is_available():
        for device, state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu().to(torch.uint8), device=device)


# --------------------------------------------------------------------------------------------
# Our own checkpoints


def to_storable(obj: Any, where: str = "value") -> Any:
    """Convert a config / metadata value into types that ``torch.load(weights_only=True)`` reads.

    Conversions: ``os.PathLike`` -> str, numpy scalar -> Python number, numpy array -> tensor,
    Enum -> its value, dataclass -> dict, set -> sorted list; dicts, lists and tuples recursively.
    Tensors, numbers, strings, bytes, None, ``torch.dtype``/``torch.device`` stay as they are.

    Args:
        obj: the value.
        where: its name, for the error message (e.g. ``"extra['history']"``).

    Returns:
        The converted value.

    Raises:
        TypeError: a value of another type (e.g. a function or a module), named by ``where``.
    """
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, enum.Enum):
        return to_storable(obj.value, where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not (key is None or isinstance(key, (bool, int, float, str))):
                raise TypeError(f"{where}: dict key {key!r} of type {type(key).__name__} cannot be stored")
            out[key] = to_storable(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_storable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(to_storable(v, f"{where}{{}}") for v in obj)
        except TypeError:
            return [to_storable(v, f"{where}{{}}") for v in obj]
    raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be stored in a "
                    "checkpoint (allowed: tensors, numbers, strings, bytes, None, paths, numpy values, "
                    "enums, dataclasses, and dicts / lists / tuples of them)")


def _temp_pattern(name: str) -> str:
    """Glob of the temporary files :func:`save_checkpoint` makes for ``name``."""
    return f".{glob.escape(name)}.*.tmp"


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete temporary files that a save killed mid-write left behind (``.<name>.XXXX.tmp``).

    Args:
        folder: a run folder.
        name: only those of this checkpoint file name; None: those of every checkpoint.

    Returns:
        the files removed.
    """
    removed = []
    for stale in Path(folder).glob(_temp_pattern(name) if name else ".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, step: int, config: Mapping | None = None,
                    extra: Mapping | None = None) -> Path:
    """Write a training checkpoint atomically (temporary file in the same folder, then rename).

    The file holds ``format``, ``format_version``, ``step``, ``model`` (state_dict without any
    ``module.`` prefix, whatever wrapper the model is in), ``optimizer``,
    ``config``, ``extra``, ``rng`` (:func:`capture_rng_states`) and ``torch_version``, all
    readable by ``torch.load(weights_only=True)``. A failed save leaves no temporary file and
    any earlier file at ``path`` untouched.

    Args:
        path: destination file; its folder is created if needed.
        model: the model (bare or wrapped in DDP / DataParallel / torch.compile).
        optimizer: its state is saved when given.
        step: training iterations done (the step to resume from).
        config: the resolved run configuration (converted by :func:`to_storable`).
        extra: any other metadata (metrics, history), converted by :func:`to_storable`.

    Returns:
        The path written.

    Raises:
        CheckpointError: a value cannot be stored, or writing failed (the message names the path).
    """
    p = Path(path)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise CheckpointError(f"{p}: step must be a non-negative int, got {step!r}")
    try:
        payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION,
                   "step": int(step), "model": unwrap_model(model).state_dict(),
                   "optimizer": None if optimizer is None else optimizer.state_dict(),
                   "config": to_storable(config, "config"), "extra": to_storable(extra, "extra"),
                   "rng": capture_rng_states(),
                   "torch_version": str(torch.__version__)}  # TorchVersion is not weights_only-safe
    except TypeError as exc:
        raise CheckpointError(f"{p}: cannot save checkpoint: {exc}") from exc
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(p.parent, p.name)  # a kill during an earlier save leaves one
    try:
        with atomic_file(p, "wb", fsync=True) as handle:
            torch.save(payload, handle)
    except Exception as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # torch.save turns a Ctrl-C during a write into a RuntimeError
            raise exc.__context__ from None
        raise CheckpointError(f"{p}: writing the checkpoint failed ({_short_reason(exc)})") from exc
    return p


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    map_location: str | torch.device | None = "cpu", restore_rng: bool = False,
                    strict: bool = True) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` and restore what is given.

    Args:
        path: the file.
        model: receives the weights (bare or wrapped); strict key and shape match by default.
        optimizer: receives the optimizer state (the file must contain one).
        map_location: where tensors are loaded (``"cpu"`` by default).
        restore_rng: also restore Python / numpy / torch / CUDA RNG states, for exact resume.
        strict: with False, load the matching tensors and ignore the rest.

    Returns:
        The checkpoint dict: ``step``, ``config``, ``extra``, ``model``,
        ``optimizer``, ``rng``, ...

    Raises:
        CheckpointError: unreadable or unsafe file, not a maxsq checkpoint, or weights / optimizer
            state that do not fit.
    """
    p = Path(path)
    ckpt = _read_torch_file(p, map_location=map_location, allow_numpy_scalars=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and ("state_dict" in ckpt
                                       or any(str(k).startswith("module.") for k in ckpt)):
            hint = ("; it looks like one of the authors' released files: use load_weights, which reads "
                    "every format")
        raise CheckpointError(f"{p}: not a maxsq checkpoint (expected a dict with "
                              f"format={CHECKPOINT_FORMAT!r} written by save_checkpoint){hint}")
    if model is not None:
        _apply_state(model, ckpt["model"], p, strict)
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise CheckpointError(f"{p}: the checkpoint holds no optimizer state")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{p}: the optimizer state does not fit the optimizer: {exc}") from exc
    if restore_rng:
        try:
            restore_rng_states(ckpt["rng"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{p}: cannot restore RNG states: {exc}") from exc
    return ckpt


# --------------------------------------------------------------------------------------------
# One loader for every weight file

WEIGHT_FORMATS = {
    "maxsq": "maxsq checkpoint",
    "authors": "the authors' training checkpoint ('state_dict' with 'module.' keys)",
    "state_dict_module": "a bare DataParallel state_dict ('module.' keys)",
    "state_dict": "a bare state_dict",
    "deeplab_init": "the DeepLab init file ('Scale.' keys; its layer5 classifier skipped)",
}
"""The formats :func:`read_weights` recognises, with the words it prints for each."""

AUTHORS_ASPP_BRANCHES = 2
"""ASPP branches the authors' heads sum (docs/authors_code.md §3.2): their files need this value."""

PURPOSES = ("init", "start", "evaluate")
"""What a weight file is loaded for: ``init``, source training's initialisation; ``start``, the
model an adaptation starts from; ``evaluate``, a model to score or look at. The DeepLab init file
(a backbone with no trained heads) serves ``init`` only."""

_WEIGHTS_EXPECTED = ("expected a maxsq checkpoint, the authors' checkpoint (a dict with 'state_dict'), a "
                     "bare state_dict (keys with or without 'module.') or the DeepLab init file "
                     "('Scale.' keys)")


@dataclass
class WeightsFile:
    """A weight file read and recognised, not yet loaded into a model.

    Args:
        path: the file.
        format: a key of :data:`WEIGHT_FORMATS`.
        state: the model tensors, keys without wrapper prefixes (the init file's ``layer5``
            already removed).
        skipped: file keys deliberately not loaded (the init file's ``Scale.layer5.*``).
        info: the file's plain entries (``epoch``, ``iteration``, ``best_MIou``, or our ``step``).
        config: the resolved run config a maxsq checkpoint was trained with, else None.
    """

    path: Path
    format: str
    state: dict[str, torch.Tensor]
    skipped: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    config: dict | None = None

    @property
    def aspp_branches(self) -> int | None:
        """ASPP branches the file's heads were trained with: a maxsq checkpoint records it in its
        config; the authors' files (and bare ``module.`` state_dicts, which is how theirs look)
        sum two; None when the file does not say (a bare state_dict, the init file)."""
        if self.format == "maxsq":
            value = ((self.config or {}).get("model") or {}).get("aspp_branches")
            return int(value) if value is not None else None
        if self.format in ("authors", "state_dict_module"):
            return AUTHORS_ASPP_BRANCHES
        return None

    def heads_for(self, configured: int, chosen: bool) -> tuple[int, str]:
        """The ASPP branches a model for this file should sum, and why, in words.

        A file that says how its heads were trained (a maxsq checkpoint's config; the authors'
        files: 2) decides ``model.aspp_branches`` unless the user chose a value.

        Args:
            configured: ``model.aspp_branches`` of the run config.
            chosen: the user set that value (a flag or an override), not a profile default.
        Returns:
            ``(aspp_branches, note)``.
        """
        from_file = self.aspp_branches
        if from_file is None:
            return configured, f"{configured} ASPP branches (the profile's; the file does not say)"
        if chosen or from_file == configured:
            why = "as chosen" if chosen and from_file != configured else "as the file's heads"
            note = f"{configured} ASPP branches ({why}"
            if chosen and from_file != configured:
                note += f"; the file's heads were trained with {from_file}"
            return configured, note + ")"
        source = "the authors' heads sum two" if self.format != "maxsq" else "recorded in its config"
        return from_file, (f"{from_file} ASPP branches, following the file ({source}; "
                           f"pass --aspp-branches {configured} to override)")

    def check_purpose(self, purpose: str) -> None:
        """Refuse a file that cannot serve ``purpose`` (one of :data:`PURPOSES`)."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
        if self.format == "deeplab_init" and purpose != "init":
            raise CheckpointError(
                f"{self.path}: this is the DeepLab init file (a backbone with no trained heads); it "
                f"starts source training (maxsq train-source --init-checkpoint {self.path}); expected "
                f"a trained model: a maxsq checkpoint or the authors' released .pth")

    def describe(self) -> str:
        """One line: the format recognised and what the file says about itself."""
        details = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in self.info.items() if k in ("step", "epoch", "iteration", "best_MIou")]
        if self.skipped:
            details.append(f"{len(self.skipped)} classifier tensors skipped")
        extra = f" ({', '.join(details)})" if details else ""
        return f"{self.path}: {WEIGHT_FORMATS[self.format]}{extra}"


def read_weights(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                 lazy: bool = False) -> WeightsFile:
    """Read any weight file a user has and recognise its format (see the module docstring).

    Args:
        path: the file.
        map_location: where tensors go (``"cpu"`` by default).
        lazy: map a zip file's tensors from disk instead of reading them (the dry run's check).

    Returns:
        A :class:`WeightsFile`.

    Raises:
        CheckpointError: missing, unreadable or unsafe file, or one that holds no named tensors.
    """
    p = Path(path)
    obj = _read_torch_file(p, map_location=map_location, allow_numpy_scalars=True, lazy=lazy)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        state = obj.get("model")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{p}: a maxsq checkpoint without its 'model' entry ({_WEIGHTS_EXPECTED})")
        config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
        return WeightsFile(p, "maxsq", dict(state), info={"step": obj.get("step")}, config=config)
    authors = isinstance(obj, Mapping) and "state_dict" in obj
    state, info = _as_state_dict(obj, p, _WEIGHTS_EXPECTED)
    if all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        return WeightsFile(p, "authors" if authors else "state_dict_module",
                           _strip_prefix(state, _DATA_PARALLEL_PREFIX), info=info)
    if all(k.startswith(_INIT_PREFIX) for k in state):
        kept = {k[len(_INIT_PREFIX):]: v for k, v in state.items()
                if _top_level(k[len(_INIT_PREFIX):]) != _INIT_SKIPPED_TOP_LEVEL}
        skipped = [k for k in state if k[len(_INIT_PREFIX):] not in kept]
        return WeightsFile(p, "deeplab_init", kept, skipped=skipped, info=info)
    return WeightsFile(p, "authors" if authors else "state_dict", state, info=info)


def load_weights(model: nn.Module, weights: WeightsFile | str | os.PathLike, *, purpose: str = "evaluate",
                 strict: bool = True) -> LoadReport:
    """Load any recognised weight file into a model.

    The DeepLab init file fills the backbone and leaves both heads (and ``num_batches_tracked``,
    which it lacks) at their initial values; every other format must fit the model key for key
    (with ``strict=False``: the matching tensors load and the rest is reported).

    Args:
        model: a :class:`~maxsq_lib.models.DeepLabV2` (bare or wrapped).
        weights: a :class:`WeightsFile` from :func:`read_weights`, or a path.
        purpose: one of :data:`PURPOSES` (the init file serves ``init`` only).
        strict: raise on missing, unexpected or wrongly shaped keys.

    Returns:
        A :class:`LoadReport`; ``info`` holds the file's entries and ``format``; ``note`` says in
        one line what was loaded.

    Raises:
        CheckpointError: the file cannot be read, cannot serve ``purpose``, or (strict) its keys
            or shapes do not fit the model (the message lists them, with hints).
    """
    wf = weights if isinstance(weights, WeightsFile) else read_weights(weights)
    wf.check_purpose(purpose)
    report = _apply_state(model, wf.state, wf.path, strict=strict, init=wf.format == "deeplab_init")
    report.skipped = list(wf.skipped)
    report.info = {**wf.info, "format": wf.format}
    heads = getattr(unwrap_model(model), "aspp_branches", None)
    note = ""
    if wf.aspp_branches is not None and heads is not None and wf.aspp_branches != heads:
        note = f"; note: its heads were trained summing {wf.aspp_branches} ASPP branches, this model sums {heads}"
    left = f", {len(report.missing)} left at their init" if wf.format == "deeplab_init" else ""
    report.note = f"loaded {wf.describe()}: {len(report.loaded)} tensors{left}{note}"
    return report
