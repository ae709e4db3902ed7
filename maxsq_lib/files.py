"""Where files go, and atomic writes.

Paths: relative paths (``runs/``, ``datasets/``, ``notebooks/``) mean the same folder for every
command, notebook and job: the project root of :func:`project_root`.

Atomic writes: a temporary file beside the target, renamed into place only when complete.

A reader never sees half a file, and a write that fails (or is killed) leaves the previous file
as it was; a killed write leaves a ``.<name>.<random>.tmp`` that the next save of that file removes
(see :func:`maxsq_lib.checkpoint.remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


ROOT_ENV = "MAXSQ_ROOT"
"""Environment variable holding an explicit root (``maxsq --root DIR``; jobs and kernels inherit it)."""


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder relative paths mean: ``$MAXSQ_ROOT`` if set, else the checkout (the folder with
    ``pyproject.toml`` and ``maxsq_lib/``) that holds ``start`` (default: the working folder), else
    the working folder itself. Never the installed package's own folder."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "maxsq_lib").is_dir():
            return folder
    return here


def at_root(path: str | os.PathLike) -> str:
    """A path relative to the project root, made absolute (absolute paths stay as they are), so
    that it means the same in a terminal, in JupyterLab (working folder ``notebooks/``) and under
    papermill."""
    path = Path(path)
    return str(path if path.is_absolute() else project_root() / path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False,
                **open_kwargs) -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder; rename it to ``path`` when the block succeeds.

    Args:
        path: the destination (its folder is created).
        mode: ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
        fsync: flush to disk before the rename (checkpoints).
    Yields:
        the open file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return Path(path)
