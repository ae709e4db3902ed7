"""Job plans: which runs a reproduction trains, as resolved configs, and the pool that runs them.

A planned :class:`Job` is a resolved :class:`~maxsq_lib.config.RunConfig` plus the run folders it
waits for. :func:`run_jobs` writes each job's config to ``<run folder>/job.yaml`` and starts
``python -m maxsq_lib run --config <run folder>/job.yaml --stage …`` (at most ``parallel`` at once,
each with one thread when ``parallel > 1``: on a 2-core machine two one-thread runs beat one
two-thread run). Nothing is turned back into command-line flags; :attr:`Job.command` is only what a
user would type for the same run, for the dry run and the logs.

Finished runs are reused (never retrained) when the settings that decide their model are unchanged,
so a plan can be run again after an interruption. Studies (first seed only), as :class:`Variant`\\s:
a λ sweep (tag ``lambda<value>``), MaxSquare at MinEnt's initial logit-gradient norm (tag
``match-minent``), MaxSquare with BatchNorm frozen (tag ``bn-frozen``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import config as C
from ..engine.runs import check_reusable, is_finished, run_name, source_run_dir
from ..engine.build import run_dir_for
from ..engine.build import follow_start_heads


@dataclass(frozen=True)
class Variant:
    """One adaptation run of a plan: a method, a tag for its folder, the ``adapt`` settings that
    differ from the profile's (e.g. ``{"lambda_target": 1.0}``)."""

    method: str
    tag: str | None = None
    adapt: Mapping = field(default_factory=dict)


def study_variants(lambda_sweep: Iterable[float] = (), sweep_methods: Iterable[str] = (),
                   match_lambda: float | None = None, match: bool = False,
                   bn_frozen: bool = False) -> list[Variant]:
    """The studies of a reproduction.

    Args:
        lambda_sweep: λ_T values for each of ``sweep_methods``.
        sweep_methods: methods of the sweep.
        match: MaxSquare with λ_T set at run time so that its initial logit-gradient norm equals
            MinEnt's at ``match_lambda`` (None: the profile's λ_T).
        bn_frozen: MaxSquare with BatchNorm frozen during adaptation.
    Returns:
        the variants, in this order.
    """
    out = [Variant(m, f"lambda{value:g}", {"lambda_target": float(value)})
           for value in lambda_sweep for m in sweep_methods]
    if match:
        settings = {"match_gradient_to": "minent"}
        if match_lambda is not None:
            settings["match_gradient_lambda"] = float(match_lambda)
        out.append(Variant("maxsquare", "match-minent", settings))
    if bn_frozen:
        out.append(Variant("maxsquare", "bn-frozen", {"bn_mode": "frozen"}))
    return out


@dataclass
class Job:
    """One run to train: its stage, resolved config, and the run folders it waits for."""

    name: str
    stage: str
    config: C.RunConfig
    after: list[Path] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    """The ``maxsq`` arguments a user would type for this run (shown, never parsed)."""

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.config, self.stage)


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan_jobs(profile: str, benchmark: str | None = None, seeds: Sequence[int] = (0,),
              methods: Iterable[str] = (), studies: Iterable[Variant] = (), *,
              runs: str = "runs", data_root: str | None = None, device: str | None = None,
              overrides: Sequence[str] = ()) -> list[Job]:
    """The jobs of a reproduction, in dependency order (each source run before its adaptations).

    Args:
        profile: a profile name.
        benchmark: one of its benchmarks (None: the first).
        seeds: seeds of the table; ``studies`` use the first.
        methods: the table's methods (one plain run each per seed).
        studies: extra variants, first seed only.
        runs: runs folder.
        data_root: dataset root (None: the profile's).
        device: device override.
        overrides: ``KEY=VALUE`` texts as ``--set`` takes them, applied to every run.
    Returns:
        the jobs; a source model shared by several adaptations (and a Multi method's
        ``source_multi``) is planned once.
    """
    base: dict = {"runs_root": runs}
    if data_root:
        base["data"] = {"root": data_root}
    if device:
        base["device"] = device
    C.deep_update(base, C.parse_overrides(overrides))

    def shown_common(cfg: C.RunConfig) -> list[str]:
        out = ["--profile", profile, "--benchmark", cfg.benchmark]
        out += ["--runs", runs] if runs != "runs" else []
        out += ["--data-root", data_root] if data_root else []
        out += ["--device", device] if device else []
        out += ["--seed", str(cfg.seed)] if cfg.seed else []
        return out + [part for text in overrides for part in ("--set", text)]

    jobs: list[Job] = []
    sources: dict[Path, Job] = {}

    def source_for(cfg: C.RunConfig) -> Path:
        folder = source_run_dir(cfg)
        if folder not in sources:
            source_cfg = C.resolve(profile, cfg.source_benchmark or cfg.benchmark, None,
                                   C.deep_update(_copy(base), {"seed": cfg.seed,
                                                              "source": {"multi": cfg.source.multi}}))
            shown = ["train-source", *shown_common(source_cfg)]
            shown += ["--multi", "true"] if source_cfg.source.multi else []
            sources[folder] = Job(f"{folder.parent.name} seed{cfg.seed}", "source", source_cfg,
                                  command=shown)
            jobs.append(sources[folder])
        return folder

    def adapt_job(seed: int, variant: Variant) -> None:
        extra = C.deep_update(_copy(base), {"seed": seed, "adapt": dict(variant.adapt)})
        if variant.tag:
            extra["tag"] = variant.tag
        cfg = C.resolve(profile, benchmark, variant.method, extra)
        if any(t.split("=", 1)[0].strip() == "adapt.source_checkpoint" for t in overrides):
            # the heads follow a starting file the command names, as for `maxsq adapt`
            follow_start_heads(cfg, "adapt", chosen=any(
                t.split("=", 1)[0].strip() == "model.aspp_branches" for t in overrides))
        shown = ["adapt", "--method", variant.method, *shown_common(cfg)]
        shown += ["--tag", variant.tag] if variant.tag else []
        shown += [part for k, v in variant.adapt.items() for part in ("--set", f"adapt.{k}={_shown(v)}")]
        jobs.append(Job(f"{run_name(cfg, 'adapt')} seed{seed}", "adapt", cfg,
                        after=[source_for(cfg)], command=shown))

    seeds = list(seeds)
    for seed in seeds:
        source_for(C.resolve(profile, benchmark, None, C.deep_update(_copy(base), {"seed": seed})))
        for method in methods:
            adapt_job(seed, Variant(method))
    for variant in studies:
        adapt_job(seeds[0], variant)
    return jobs


def _copy(tree: dict) -> dict:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in tree.items()}


def run_jobs(jobs: list[Job], parallel: int = 1, log=print) -> dict[str, float]:
    """Run jobs (finished runs are reused, after checking their settings), at most ``parallel``
    at once, each once the runs it waits for have finished.

    Each job's config goes to ``<run folder>/job.yaml`` and runs as ``python -m maxsq_lib run``
    (its output in ``<run folder>/console.log``); with ``parallel > 1`` each gets one thread.

    Returns:
        seconds per job that ran.
    Raises:
        RunExistsError: a finished run was made with other settings (before anything starts).
        RuntimeError: a job failed (named, with its log's tail; the others are stopped), or jobs
            wait for runs that nothing produces.
    """
    pending = [j for j in jobs if not is_finished(j.run_dir)]
    reused = [j for j in jobs if j not in pending]
    for j in reused:
        check_reusable(j.run_dir, j.config.to_dict(), j.stage)
    if len(reused) > 3:
        log(f"[reuse] {len(reused)} finished runs (e.g. {reused[0].run_dir})")
    else:
        for j in reused:
            log(f"[reuse] {j.name}: finished run in {j.run_dir}")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if parallel > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs: dict[str, subprocess.Popen] = {}
    seconds: dict[str, float] = {}

    def run_one(job: Job) -> float:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        cfg = replace(job.config, threads=1) if parallel > 1 else job.config
        spec = C.save(cfg, job.run_dir / "job.yaml")
        log_path = job.run_dir / "console.log"
        t0 = time.perf_counter()
        with open(log_path, "w") as fh:
            # --wait: a notebook (or another command) writing this run is waited for, not raced;
            # --resume: an interrupted run goes on from its last checkpoint, exactly
            resume = ["--resume"] if (job.run_dir / "last.pt").is_file() else []
            proc = subprocess.Popen([sys.executable, "-m", "maxsq_lib", "run", "--config", str(spec),
                                     "--stage", job.stage, "--no-progress", "--wait", *resume],
                                    stdout=fh, stderr=subprocess.STDOUT, env=env)
            procs[job.name] = proc
            rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"{job.name} failed (exit {rc}); log: {log_path}\n"
                               f"{log_path.read_text()[-2000:]}")
        return time.perf_counter() - t0

    running: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        try:
            while pending or running:
                for job in [j for j in pending if all(is_finished(a) for a in j.after)]:
                    if len(running) >= parallel:
                        break
                    pending.remove(job)
                    running[pool.submit(run_one, job)] = job
                    log(f"[start] {job.name}")
                if not running:
                    blocked = ", ".join(f"{j.name} (needs {[str(a) for a in j.after]})" for j in pending)
                    raise RuntimeError(f"jobs wait for runs that nothing will produce: {blocked}")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    seconds[job.name] = future.result()
                    log(f"[done]  {job.name} in {seconds[job.name]:.0f} s")
        except BaseException:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
            raise
    return seconds


def reproduce(jobs: list[Job], parallel: int, runs: str, profile: str,
              benchmark: str | None = None) -> None:
    """``maxsq reproduce``: run the jobs, then write the results tables."""
    from .tables import write_summary

    t0 = time.perf_counter()
    run_jobs(jobs, parallel=parallel)
    print(f"all runs finished in {time.perf_counter() - t0:.0f} s")
    for path in write_summary(runs, profile, benchmark):
        print(f"wrote {path}")
