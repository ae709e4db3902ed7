"""Benchmark: IW-MaxSquare forward + backward on the CPU, maxsq_lib vs the authors' formulation.

Both variants compute the same loss (the authors' constant, ``faithful=True``) on 19×512×1024
logits, at batch 1 and batch 4:

- ``maxsq_lib``: :func:`maxsq_lib.losses.iw_max_square` (per-image histograms with one
  ``scatter_add`` for the whole batch, no host copy, no boolean-mask indexing).
- ``authors``: a plain re-statement, written here, of what the authors' ``IW_MaxSquareloss`` does
  (docs/authors_code.md §4): argmax of the probabilities, a ``.cpu()`` copy and ``torch.histc`` with
  C+1 bins over [-1, C-1] whose first bin is dropped, class weights indexed by the argmax map,
  weights of shape (B, H, W) multiplied into (B, C, H, W) (correct only for B = 1), and the sum
  taken through a boolean mask ``prob != -1`` (always true). At batch 4 it loops over the images.

Timing: default ``torch`` thread count; per batch size one process builds the logits once and
alternates the two variants call by call (the order flips every round), so that both see the same
load on a shared machine; one warm-up round, then ``--repeats`` timed rounds of forward + backward
(``time.perf_counter``); the median is reported. The same process checks that both variants give
the same loss and gradient.

Memory: each (variant, batch) also runs once in a fresh Python process, which records
``ru_maxrss`` (the process's peak resident set, from ``resource.getrusage``) after the logits are
built and again after one forward + backward; the difference is the extra peak memory one call
needs (intermediates + saved tensors + the gradient of the logits). ``tracemalloc`` cannot see
torch's allocations and torch keeps no CPU allocator statistics, hence this OS-level measure; glibc
hands large freed blocks back to the OS, so caching does not inflate it.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_losses.py`` (about 1–2 minutes on
2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from maxsq_lib.losses import iw_max_square  # noqa: E402

NUM_CLASSES = 19
HEIGHT, WIDTH = 512, 1024
RATIO = 0.2
IGNORE = -1


def authors_iw_max_square_single(logits: torch.Tensor, ratio: float = RATIO) -> torch.Tensor:
    """The authors' IW-MaxSquare formulation, restated; only correct for a batch of one image."""
    prob = torch.softmax(logits, dim=1)
    b, c = prob.shape[:2]
    mask = prob != IGNORE  # always true, kept because their loss indexes through it
    max_prob, argmax = prob.max(dim=1)
    argmax = torch.where(max_prob != IGNORE, argmax, torch.full_like(argmax, IGNORE))
    hist = torch.histc(argmax.cpu().float(), bins=c + 1, min=IGNORE, max=c - 1)[1:]
    class_weight = 1.0 / torch.max(hist.pow(ratio) * hist.sum().pow(1.0 - ratio), torch.ones(1))
    pixel_weight = class_weight.to(prob.device)[argmax].detach()  # (B, H, W)
    weighted = prob.pow(2) * pixel_weight  # (B, H, W) broadcast into (B, C, H, W): B = 1 only
    return -weighted[mask].sum() / (b * c)


def authors_iw_max_square(logits: torch.Tensor, ratio: float = RATIO) -> torch.Tensor:
    """Batch version for the comparison: one call per image, averaged (their B=1 code in a loop)."""
    losses = [authors_iw_max_square_single(logits[i : i + 1], ratio) for i in range(logits.shape[0])]
    return torch.stack(losses).mean()


VARIANTS = {
    "maxsq_lib": lambda z: iw_max_square(z, ratio=RATIO, faithful=True),
    "authors": authors_iw_max_square,
}


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _make_logits(batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    # in place, so that no temporary raises the memory baseline
    return torch.randn(batch, NUM_CLASSES, HEIGHT, WIDTH, generator=generator).mul_(3.0).requires_grad_(True)


def _forward_backward(variant: str, logits: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    logits.grad = None
    start = time.perf_counter()
    loss = VARIANTS[variant](logits)
    loss.backward()
    return time.perf_counter() - start, loss.detach(), logits.grad


def memory_worker(variant: str, batch: int) -> dict:
    """Peak resident-set growth of one forward + backward, in this fresh process."""
    logits = _make_logits(batch)
    before = _maxrss_mib()
    _forward_backward(variant, logits)
    return {"peak_rss_growth_mib": _maxrss_mib() - before}


def timing_worker(batch: int, repeats: int) -> dict:
    """Interleaved timings of both variants on the same logits, plus an agreement check."""
    logits = _make_logits(batch)
    names = list(VARIANTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats + 1):  # round 0 is the warm-up
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            elapsed, _, _ = _forward_backward(name, logits)
            if round_index:
                times[name].append(elapsed)
    _, loss_ours, grad_ours = _forward_backward("maxsq_lib", logits)
    grad_ours = grad_ours.clone()
    _, loss_theirs, grad_theirs = _forward_backward("authors", logits)
    return {
        "times": times,
        "threads": torch.get_num_threads(),
        "loss_rel_diff": float((loss_ours - loss_theirs).abs() / loss_theirs.abs()),
        "grad_rel_diff": float((grad_ours - grad_theirs).abs().max() / grad_theirs.abs().max()),
    }


def _run_worker(*args: str) -> dict:
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per batch size (after 1 warm-up)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--timing-worker", type=int, metavar="BATCH", help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=2, metavar=("VARIANT", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.timing_worker is not None:
        print(json.dumps(timing_worker(args.timing_worker, args.repeats)))
        return
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker[0], int(args.memory_worker[1]))))
        return

    results = {}
    for batch in args.batches:
        timing = _run_worker("--timing-worker", str(batch), "--repeats", str(args.repeats))
        memory = {name: _run_worker("--memory-worker", name, str(batch))["peak_rss_growth_mib"] for name in VARIANTS}
        results[batch] = (timing, memory)
        print(f"  done: batch {batch}", file=sys.stderr)

    threads = next(iter(results.values()))[0]["threads"]
    print(f"IW-MaxSquare forward+backward, CPU, logits B x {NUM_CLASSES} x {HEIGHT} x {WIDTH} float32, "
          f"{threads} torch threads; median of {args.repeats} interleaved rounds after 1 warm-up; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    header = f"{'batch':>5}  {'variant':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS +MiB':>14} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for batch, (timing, memory) in results.items():
        medians = {name: statistics.median(ts) for name, ts in timing["times"].items()}
        for name in ("authors", "maxsq_lib"):
            ts = timing["times"][name]
            print(f"{batch:>5}  {name:<10} {medians[name]:>9.3f} {min(ts):>7.3f} {max(ts):>7.3f} "
                  f"{memory[name]:>14.0f} {medians['authors'] / medians[name]:>8.1f}x")
        print(f"       agreement: loss rel. diff {timing['loss_rel_diff']:.1e}, "
              f"max |grad diff| / max |grad| {timing['grad_rel_diff']:.1e}")


if __name__ == "__main__":
    main()
