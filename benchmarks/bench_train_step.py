"""One adaptation iteration (source + target, MaxSquare+IW) of the ``cpu`` profile's model in every
precision and memory format, and where the course's wall time goes.

Part 1, the step. Interleaved in one process (the machine is noisy), on the same batches, each
variant with its own copy of the same initial model and optimizer:

- fp32 NCHW, fp32 ``channels_last``, bf16 autocast, bf16 autocast + ``channels_last``: the engine's
  step (``maxsq_lib.engine.trainer.train_step`` with ``zero_grad(set_to_none=True)``);
- the profile's own choice (``amp: auto`` resolved on this machine, its ``channels_last``);
- a plain eager loop in the authors' style (contiguous fp32 tensors, the IW loss with a per-image
  CPU ``histc`` and boolean-mask indexing, ``zero_grad()`` filling zeros, a host sync per iteration).

It prints the median time per iteration of each and its ratio to fp32 NCHW. One thread by default,
as each of the course's two training processes runs.

Part 2, the course. From the runs' own timing records (``metrics.json`` ``timing``) and
``<runs>/<profile>/course_timings.json``: the wall time of ``maxsq course`` split into the source
models, the adaptation runs' steps and their evaluations, the notebooks and the rest. Not a test.

    python benchmarks/benchtrain_step.py [--profile cpu] [--iterations 30] [--threads 1]
                                          [--course-runs runs]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from maxsq_lib import config as C  # noqa: E402
from maxsq_lib.engine.precision import resolve_amp  # noqa: E402
from maxsq_lib.engine.build import build_dataset, build_model, build_optimizer_for  # noqa: E402
from maxsq_lib.engine.trainer import plan_for, train_step  # noqa: E402


def authors_iw_max_square(prob: torch.Tensor, ratio: float = 0.2) -> torch.Tensor:
    """IW-MaxSquare as the authors formulate it (restated for comparison; batch 1 per call)."""
    num_classes = prob.shape[1]
    maxpred, argpred = torch.max(prob, 1)
    mask = maxpred != -1
    label = argpred
    weights = []
    for i in range(prob.shape[0]):
        hist = torch.histc(label[i].cpu().float(), bins=num_classes + 1, min=-1,
                           max=num_classes - 1).float()[1:]
        weight = (1 / torch.max(torch.pow(hist, ratio) * torch.pow(hist.sum(), 1 - ratio),
                                torch.ones(1))).to(argpred.device)[argpred[i]].detach()
        weights.append(weight)
    weights = torch.stack(weights)  # (B, H, W)
    mask_out = mask.unsqueeze(1).expand_as(prob)
    loss = -torch.sum((torch.pow(prob, 2) * weights.unsqueeze(1))[mask_out]) / (prob.shape[0] * num_classes)
    return loss


def plain_step(model, optimizer, images, labels, t_images, lambda_target: float) -> None:
    # the authors' model always computes both heads; without --multi only the main one has a loss
    main, aux = model(images)
    loss = F.cross_entropy(main, labels, ignore_index=-1)
    loss.backward()
    t_main, _ = model(t_images)
    t_loss = lambda_target * authors_iw_max_square(F.softmax(t_main, dim=1))
    t_loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    loss.item(), t_loss.item()


def variants(cfg: C.RunConfig) -> list[tuple[str, C.RunConfig | None]]:
    """(label, config) per variant; ``None`` is the plain loop."""
    amp, _ = resolve_amp(cfg.amp, "cpu")
    own = f"profile's own ({'fp32' if amp == 'none' else amp}{', channels_last' if cfg.channels_last else ''})"
    table = [("fp32 NCHW", "none", False), ("fp32 channels_last", "none", True),
             ("bf16 autocast", "bf16", False), ("bf16 autocast + channels_last", "bf16", True),
             (own, amp, cfg.channels_last)]
    out = [(label, dataclasses.replace(cfg, amp=a, channels_last=cl)) for label, a, cl in table]
    return out + [("plain eager loop (authors' style)", None)]


def bench_steps(profile: str, iterations: int, threads: int) -> list[tuple[str, float]]:
    """Median seconds per iteration of every variant, interleaved."""
    torch.set_num_threads(threads)
    cfg = C.resolve(profile, None, "maxsquare_iw")
    plan = plan_for(cfg, "adapt")
    src, tgt = build_dataset(cfg, "source"), build_dataset(cfg, "target")
    b, tb = plan.batch_size, plan.target_batch_size
    batches = []
    for k in range(4):
        s = [src[i] for i in range(k * b, (k + 1) * b)]
        t = [tgt[i] for i in range(k * tb, (k + 1) * tb)]
        batches.append((torch.stack([x[0] for x in s]), torch.stack([x[1] for x in s]),
                        torch.stack([x[0] for x in t])))
    base = build_model(cfg)
    runners = []
    for label, vcfg in variants(cfg):
        model = copy.deepcopy(base)
        if vcfg is not None and vcfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        runners.append((label, vcfg, model, build_optimizer_for(model, plan.optim)))
    times: dict[str, list[float]] = {label: [] for label, *_ in runners}
    device = torch.device("cpu")
    for it in range(iterations + 3):
        images, labels, t_images = batches[it % len(batches)]
        for label, vcfg, model, optimizer in runners:
            t0 = time.perf_counter()
            if vcfg is None:
                plain_step(model, optimizer, images, labels, t_images, cfg.adapt.lambda_target)
            else:
                train_step(model, plan, images, labels, iter([(t_images, None, None)]), device, vcfg)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if it >= 3:  # warm-up
                times[label].append(time.perf_counter() - t0)
    print(f"profile {profile}: batch {b}+{tb} at {tuple(cfg.data.source_size)}, model preset "
          f"{cfg.model.preset}, {threads} thread(s), {iterations} iterations each, interleaved")
    return [(label, statistics.median(t)) for label, t in times.items()]


def own_steps(profile: str, iterations: int, threads: int) -> float:
    """Seconds per step of the profile's own variant alone (warm-up excluded)."""
    torch.set_num_threads(threads)
    cfg = C.resolve(profile, None, "maxsquare_iw")
    cfg = dataclasses.replace(cfg, amp=resolve_amp(cfg.amp, "cpu")[0])
    plan = plan_for(cfg, "adapt")
    src, tgt = build_dataset(cfg, "source"), build_dataset(cfg, "target")
    images = torch.stack([src[i][0] for i in range(plan.batch_size)])
    labels = torch.stack([src[i][1] for i in range(plan.batch_size)])
    t_images = torch.stack([tgt[i][0] for i in range(plan.target_batch_size)])
    model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer_for(model, plan.optim)
    model.train()
    for it in range(iterations + 3):
        if it == 3:
            t0 = time.perf_counter()
        train_step(model, plan, images, labels, iter([(t_images, None, None)]), torch.device("cpu"), cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / iterations


def throughput(profile: str, iterations: int) -> None:
    """Steps per second of the whole machine, the profile's own variant: one process with two
    threads against two one-thread processes at once (how ``maxsq course`` runs its jobs)."""
    import subprocess
    import sys

    def run(threads: int, processes: int) -> float:
        code = (f"import benchmarks.benchtrain_step as b; "
                f"print(b.own_steps({profile!r}, {iterations}, {threads}))")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(processes)]
        return sum(1.0 / float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)

    one_alone, one_two, two_one = run(1, 1), run(2, 1), run(1, 2)
    print(f"\nmachine throughput, profile's own step, steps/s: 1 process x 1 thread {one_alone:.2f}; "
          f"1 process x 2 threads {one_two:.2f}; 2 processes x 1 thread {two_one:.2f} "
          f"(ratio of the last two {two_one / one_two:.2f}x)")


def course_split(runs: Path, profile: str) -> None:
    """Where ``maxsq course``'s wall time went, from the runs' own timing records."""
    base = runs / profile
    timings_path = base / "course_timings.json"
    if not timings_path.is_file():
        print(f"(no {timings_path}: run `make course` first for the course's split)")
        return
    course = json.loads(timings_path.read_text())
    parts = {"source models (loop)": 0.0, "adaptation steps": 0.0,
             "adaptation evaluations in the loop": 0.0, "runs' set-up, first and final evaluations": 0.0}
    count = 0
    for path in sorted(base.glob("*/*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        t = m.get("timing") or {}
        if "wall_seconds" not in t:
            continue
        count += 1
        if m["stage"] == "source":
            parts["source models (loop)"] += t["train_seconds"]
        else:
            parts["adaptation steps"] += t["step_seconds"]
            parts["adaptation evaluations in the loop"] += t["loop_eval_seconds"]
        parts["runs' set-up, first and final evaluations"] += t["wall_seconds"] - t["train_seconds"]
    cpu_seconds = sum(parts.values())
    print(f"\nmaxsq course ({profile}): {course['total'] / 60:.1f} min wall; training stage "
          f"{course.get('training', 0) / 60:.1f} min wall for {count} runs "
          f"(two processes at once: the run seconds below add up to about twice the wall)")
    for name, seconds in parts.items():
        print(f"  {name:<44}{seconds:8.0f} s  ({100 * seconds / max(cpu_seconds, 1e-9):4.1f} % of run time)")
    notebooks = sum(v for k, v in course.items() if k.startswith("notebook "))
    print(f"  {'notebooks (sum of their wall times)':<44}{notebooks:8.0f} s")
    for key in ("data", "html", "summary+figures"):
        if key in course:
            print(f"  {key + ' (wall)':<44}{course[key]:8.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per step (the course runs two one-thread processes)")
    parser.add_argument("--course-runs", default="runs", help="runs folder of a finished course")
    parser.add_argument("--throughput", action="store_true",
                        help="also: 1 process x 2 threads against 2 one-thread processes at once")
    args = parser.parse_args()
    results = bench_steps(args.profile, args.iterations, args.threads)
    reference = results[0][1]
    print(f"{'variant':<40}{'median ms/it':>14}{'vs fp32 NCHW':>14}")
    for label, seconds in results:
        print(f"{label:<40}{1000 * seconds:>14.1f}{reference / seconds:>13.2f}x")
    if args.throughput:
        throughput(args.profile, args.iterations)
    course_split(Path(args.course_runs), args.profile)


if __name__ == "__main__":
    main()
