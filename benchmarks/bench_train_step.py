"""One adaptation iteration (source + target, MaxSquare+IW) of the ``cpu`` profile's model:
this engine's step vs a plain eager loop written here.

The plain loop is how the authors' trainer does it: contiguous NCHW tensors, the IW loss with a
per-image CPU ``histc`` and boolean-mask indexing, ``zero_grad()`` filling zeros, and a host sync
per iteration to log the loss values (``.item()``). The engine's step is
``maxsq_lib.engine.trainer._train_step`` with the profile's settings and
``zero_grad(set_to_none=True)``; logs stay on the device until a log interval. Both use the same
number of threads (the machine's default), so the step itself is compared; the course's gain from
running two one-thread processes at once is a separate, throughput effect.

Both variants alternate inside one process (the machine is noisy), on the same batches, and the
script prints the median time per iteration of each and their ratio. Not a test.

    python benchmarks/bench_train_step.py [--profile cpu] [--iterations 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from maxsq_lib import config as C  # noqa: E402
from maxsq_lib.engine.trainer import (_build_optimizer, _RunningSums, _train_step,  # noqa: E402
                                      build_dataset, build_model, plan_for)


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


def plain_step(model, optimizer, images, labels, t_images, lambda_target: float) -> dict:
    # the authors' model always computes both heads; without --multi only the main one has a loss
    main, aux = model(images)
    loss = F.cross_entropy(main, labels, ignore_index=-1)
    loss.backward()
    t_main, _ = model(t_images)
    t_loss = lambda_target * authors_iw_max_square(F.softmax(t_main, dim=1))
    t_loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    return {"loss": loss.item(), "target_loss": t_loss.item()}


def engine_steps(profile: str, iterations: int, threads: int) -> float:
    """Seconds per engine step over ``iterations`` steps with ``threads`` threads (after warm-up)."""
    torch.set_num_threads(threads)
    cfg = C.resolve(profile, None, "maxsquare_iw")
    plan = plan_for(cfg, "adapt")
    src, tgt = build_dataset(cfg, "source"), build_dataset(cfg, "target")
    b, tb = plan.batch_size, plan.target_batch_size
    images = torch.stack([src[i][0] for i in range(b)])
    labels = torch.stack([src[i][1] for i in range(b)])
    t_images = torch.stack([tgt[i][0] for i in range(tb)])
    model = build_model(cfg)
    optimizer = _build_optimizer(model, plan.optim)
    model.train()
    for it in range(iterations + 3):
        if it == 3:
            t0 = time.perf_counter()
        _train_step(model, plan, images, labels, iter([(t_images, None, None)]), torch.device("cpu"), cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / iterations


def throughput(profile: str, iterations: int) -> None:
    """Iterations per second of the machine: one process with 2 threads vs two 1-thread processes
    at once (how ``maxsq course`` runs its jobs)."""
    import subprocess
    import sys

    def run(threads: int, processes: int) -> float:
        code = (f"import benchmarks.bench_train_step as b; "
                f"print(b.engine_steps({profile!r}, {iterations}, {threads}))")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
                 for _ in range(processes)]
        per_step = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        return sum(1.0 / t for t in per_step)

    one = run(2, 1)
    two = run(1, 2)
    print(f"machine throughput, engine steps/s: 1 process x 2 threads {one:.2f}; "
          f"2 processes x 1 thread {two:.2f}; ratio {two / one:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--throughput", action="store_true",
                        help="also measure 1 process x 2 threads vs 2 processes x 1 thread")
    args = parser.parse_args()
    cfg = C.resolve(args.profile, None, "maxsquare_iw")
    plan = plan_for(cfg, "adapt")
    src, tgt = build_dataset(cfg, "source"), build_dataset(cfg, "target")
    b, tb = plan.batch_size, plan.target_batch_size
    batches = []
    for k in range(4):
        s = [src[i] for i in range(k * b, (k + 1) * b)]
        t = [tgt[i] for i in range(k * tb, (k + 1) * tb)]
        batches.append((torch.stack([x[0] for x in s]), torch.stack([x[1] for x in s]),
                        torch.stack([x[0] for x in t])))
    default_threads = torch.get_num_threads()

    engine_model, plain_model = build_model(cfg), build_model(cfg)
    plain_model.load_state_dict(engine_model.state_dict())
    engine_opt = _build_optimizer(engine_model, plan.optim)
    plain_opt = _build_optimizer(plain_model, plan.optim)
    engine_model.train()
    plain_model.train()
    sums = _RunningSums(torch.device("cpu"))
    times = {"engine": [], "plain": []}
    for it in range(args.iterations + 3):
        images, labels, t_images = batches[it % len(batches)]
        torch.set_num_threads(default_threads)  # same threads for both: the step is compared
        t0 = time.perf_counter()
        logs = _train_step(engine_model, plan, images, labels,
                           iter([(t_images, None, None)]), torch.device("cpu"), cfg)
        engine_opt.step()
        engine_opt.zero_grad(set_to_none=True)
        sums.add(logs)
        t1 = time.perf_counter()
        torch.set_num_threads(default_threads)
        plain_step(plain_model, plain_opt, images, labels, t_images, cfg.adapt.lambda_target)
        t2 = time.perf_counter()
        if it >= 3:  # warm-up
            times["engine"].append(t1 - t0)
            times["plain"].append(t2 - t1)
    e, p = statistics.median(times["engine"]), statistics.median(times["plain"])
    print(f"profile {args.profile}: batch {b}+{tb} at {tuple(cfg.data.source_size)}, "
          f"model preset {cfg.model.preset}, {args.iterations} iterations each, alternating")
    print(f"{'variant':<34}{'threads':>8}{'median s/it':>14}")
    print(f"{'plain eager loop (authors style)':<34}{default_threads:>8}{p:>14.4f}")
    print(f"{'maxsq engine step':<34}{default_threads:>8}{e:>14.4f}")
    print(f"ratio plain / engine = {p / e:.2f}x")
    if args.throughput:
        throughput(args.profile, args.iterations)


if __name__ == "__main__":
    main()
