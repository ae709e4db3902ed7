"""``maxsq reproduce``: source pretraining and every method for several seeds, plus studies.

Finished runs are reused (a finished run is never retrained), so the command can be re-run after
an interruption. With ``--jobs 2`` two runs go at once, each with one thread: on a 2-core machine
that was faster than one run with two threads. Studies (first seed only):

- ``--lambda-sweep 0.003 0.01 ...`` for ``--sweep-methods`` (tag ``lambda<value>``);
- ``--match-gradient`` : MaxSquare with λ set so its initial logit-gradient norm equals
  MinEnt's at ``--match-lambda`` (default: the profile's λ_T) (tag ``match-minent``);
- ``--bn-frozen`` : MaxSquare with BatchNorm frozen during adaptation (tag ``bn-frozen``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.runs import check_reusable, is_finished, source_run_dir


@dataclass
class Job:
    """One ``maxsq`` training command, the run folder it fills, and the run folders (source
    runs) that must be finished before it starts."""

    name: str
    argv: list[str]
    run_dir: Path
    after: list[Path] = field(default_factory=list)
    stage: str | None = None
    config: dict | None = None
    """The resolved config the job would train with; a finished run is reused only if it matches."""


def plan_jobs(args) -> list[Job]:
    """The jobs of a reproduction, in dependency order."""
    from ..cli import resolve_from_args
    from ..engine.trainer import run_dir_for

    def common(seed: int) -> list[str]:
        out = ["--profile", args.profile, "--runs", args.runs, "--seed", str(seed), "--no-progress"]
        if args.data_root:
            out += ["--data-root", args.data_root]
        if getattr(args, "benchmark", None):
            out += ["--benchmark", args.benchmark]
        if getattr(args, "device", None):
            out += ["--device", args.device]
        for o in getattr(args, "overrides", []):
            out += ["--set", o]
        return out

    def resolved(seed: int, method: str | None, extra: list[str]):
        return resolve_from_args(_namespace(args, seed, method, extra), method)

    jobs: list[Job] = []
    sources: dict[Path, Job] = {}

    def source_for(seed: int, cfg) -> Path:
        """The source run an adaptation starts from; planned once (a Multi method needs the
        source model that also trained the aux head, ``source_multi``)."""
        folder = source_run_dir(cfg)
        if folder not in sources:
            argv = ["train-source", *common(seed)] + (["--multi", "true"] if cfg.source.multi else [])
            sources[folder] = Job(f"{folder.parent.name} seed{seed}", argv, folder,
                                  stage="source", config=cfg.to_dict())
            jobs.append(sources[folder])
        return folder

    def adapt_job(seed: int, method: str, name: str, extra: list[str]) -> None:
        cfg = resolved(seed, method, extra)
        src = source_for(seed, cfg)
        jobs.append(Job(f"{name} seed{seed}", ["adapt", "--method", method, *extra, *common(seed)],
                        run_dir_for(cfg, "adapt"), after=[src], stage="adapt", config=cfg.to_dict()))

    for seed in args.seeds:
        source_for(seed, resolved(seed, None, []))
        for method in args.methods:
            adapt_job(seed, method, method, [])
    first = args.seeds[0]
    studies: list[tuple[str, str, list[str]]] = []
    for value in getattr(args, "lambda_sweep", None) or []:
        for method in getattr(args, "sweep_methods", None) or ["minent", "maxsquare"]:
            studies.append((method, f"lambda{value:g}", ["--lambda-target", f"{value:g}"]))
    if getattr(args, "match_gradient", False):
        extra = ["--match-gradient-to", "minent"]
        if getattr(args, "match_lambda", None) is not None:
            extra += ["--match-gradient-lambda", f"{args.match_lambda:g}"]
        studies.append(("maxsquare", "match-minent", extra))
    if getattr(args, "bn_frozen", False):
        studies.append(("maxsquare", "bn-frozen", ["--bn-mode", "frozen"]))
    for method, tag, extra in studies:
        adapt_job(first, method, f"{method}-{tag}", ["--tag", tag, *extra])
    return jobs


def _namespace(args, seed: int, method: str | None, extra: list[str]):
    from ..cli import build_parser

    argv = (["adapt", "--method", method] if method else ["train-source"]) + [
        "--profile", args.profile, "--runs", args.runs, "--seed", str(seed)] + extra
    if args.data_root:
        argv += ["--data-root", args.data_root]
    if getattr(args, "benchmark", None):
        argv += ["--benchmark", args.benchmark]
    for o in getattr(args, "overrides", []):
        argv += ["--set", o]
    return build_parser().parse_args(argv)


def run_jobs(jobs: list[Job], parallel: int = 1, log=print) -> dict[str, float]:
    """Run jobs (skipping finished runs), at most ``parallel`` at once, each after its ``after``
    runs have finished.

    Each job runs as ``python -m maxsq_lib ...``; with ``parallel > 1`` each gets one thread.
    Returns:
        seconds per job that ran.
    Raises:
        RuntimeError naming the failed job and its log file.
    """
    pending = [j for j in jobs if not is_finished(j.run_dir)]
    reused = [j for j in jobs if j not in pending]
    for j in reused:
        if j.config is not None:
            check_reusable(j.run_dir, j.config, j.stage)
    if len(reused) > 3:
        log(f"[reuse] {len(reused)} finished runs (e.g. {reused[0].run_dir})")
    else:
        for j in reused:
            log(f"[reuse] {j.name}: finished run in {j.run_dir}")
    running: dict[str, tuple[Job, subprocess.Popen, float, Path]] = {}
    seconds: dict[str, float] = {}
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if parallel > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while pending or running:
        for j in list(pending):
            if len(running) >= parallel:
                break
            if all(is_finished(a) for a in j.after):
                j.run_dir.mkdir(parents=True, exist_ok=True)
                log_path = j.run_dir / "console.log"
                with open(log_path, "w") as fh:
                    argv = list(j.argv)
                    if parallel > 1:
                        argv += ["--set", "threads=1"]
                    proc = subprocess.Popen([sys.executable, "-m", "maxsq_lib", *argv],
                                            stdout=fh, stderr=subprocess.STDOUT, env=env)
                running[j.name] = (j, proc, time.perf_counter(), log_path)
                pending.remove(j)
                log(f"[start] {j.name}")
        if pending and not running:
            blocked = ", ".join(f"{j.name} (needs {[str(a) for a in j.after]})" for j in pending)
            raise RuntimeError(f"jobs wait for runs that nothing will produce: {blocked}")
        time.sleep(0.5)
        for name, (j, proc, t0, log_path) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del running[name]
            if rc != 0:
                for _, p, _, _ in running.values():
                    p.terminate()
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(f"{name} failed (exit {rc}); log: {log_path}\n{tail}")
            seconds[name] = time.perf_counter() - t0
            log(f"[done]  {name} in {seconds[name]:.0f} s")
    return seconds


def reproduce(args) -> None:
    from .tables import write_summary

    jobs = plan_jobs(args)
    t0 = time.perf_counter()
    run_jobs(jobs, parallel=getattr(args, "jobs", 1))
    print(f"all runs finished in {time.perf_counter() - t0:.0f} s")
    for path in write_summary(args.runs, args.profile, getattr(args, "benchmark", None)):
        print(f"wrote {path}")
