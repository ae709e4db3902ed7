"""One writer per run folder: a lock held for the life of a run.

Two processes that train the same run folder (a learner's notebook 04 while ``make course`` trains
that run, two ``maxsq`` commands started together) would interleave ``train.log`` and overwrite
each other's checkpoints. Every run therefore holds an exclusive ``flock`` on
``<run folder>/.writer.lock`` while it trains, and writes its holder (pid, host, start time,
command) into the file. A second writer is told who holds it and stops, or waits with ``wait``.
The kernel releases the lock when its process ends, however it ends, so a lock left by a killed
process is recovered at the next start (and said so). Introduced in notebook ``04_adaptation``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, one writer is then the user's responsibility
    fcntl = None

LOCK_NAME = ".writer.lock"


class RunLockedError(RuntimeError):
    """Another process is writing the run folder; the message names it."""


def _holder_text(path: Path) -> str:
    try:
        h = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not h:
        return "another process"
    return (f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')} "
            f"({h.get('command', 'unknown command')})")


@contextmanager
def run_lock(run_dir: str | os.PathLike, wait: bool = False, poll_seconds: float = 2.0, log=print):
    """Hold the run folder's writer lock for the ``with`` block.

    Args:
        run_dir: the run folder (created if missing).
        wait: wait for the current holder to finish instead of raising.
        poll_seconds: how often a waiting process tries again.
        log: where the one-line notes go (waiting, a recovered lock).
    Yields:
        True if this process had to wait for another writer, else False.
    Raises:
        RunLockedError: the folder is being written and ``wait`` is False.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    if fcntl is None:
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder_text(path)
                if not wait:
                    raise RunLockedError(f"{run_dir} is being written by {holder}; wait for it to finish "
                                         f"(or pass --wait to queue behind it)") from None
                if not waited:
                    log(f"waiting for {run_dir}: it is being written by {holder}")
                waited = True
                time.sleep(poll_seconds)
        left = os.read(fd, 4096).decode(errors="replace").strip()
        if left:  # a holder that released cleanly empties the file: this one was killed
            log(f"recovered the lock of {run_dir} from {_holder_text(path)}, which no longer runs")
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
