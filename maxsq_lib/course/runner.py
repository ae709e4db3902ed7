"""``maxsq course``: run the whole course for a profile.

1. prepare the data (MiniCity for smoke/cpu/gpu; a check of the real datasets for paper);
2. train every run the notebooks need, as parallel jobs (finished runs are reused);
3. execute the notebooks with papermill into ``<runs>/<profile>/notebooks/``
   (``04_adaptation`` once per method, ``06_cross_city`` once per city), one progress line each,
   stopping at the first failure with the notebook and the cell named; once training has filled
   ``runs/`` they only load and plot, so they run ``jobs`` at a time;
4. export the executed notebooks to HTML, with an index, into ``<runs>/<profile>/html/``
   (:mod:`~maxsq_lib.course.html_export`), to read the course without running it;
5. write ``<runs>/<profile>/summary.md`` and regenerate ``figures/`` (``maxsq figures``).

The notebooks train-or-load, so step 2 is only a faster way to fill ``runs/`` (two one-thread
processes beat one two-thread process on a 2-core machine); without it the notebooks would train
the same runs themselves.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CITIES, CROSS_CITY_METHODS, LOSS_METHODS, MINICITY_PROFILES, TABLE_METHODS
from .notebook import at_root, project_root

ADAPT_METHODS = TABLE_METHODS
"""Methods of the main table, trained for every seed (controls first)."""

NOTEBOOK_METHOD = "maxsquare_iw"
"""The run ``04_adaptation`` draws in detail in the course (one lesson covers every method; a
learner picks another with its ``method`` parameter)."""

LAMBDA_SWEEP = (0.03, 0.3, 1.0, 3.0)
"""λ_T values of the study's sweep, besides the paper's 0.1 of the table (first seed only), from
"no effect" to "collapse" (a one-seed pilot on this MiniCity: MinEnt 39.7 / 40.0 / 36.9 / 36.6 /
37.3 at 0.03 / 0.1 / 0.3 / 1 / 3 with running statistics). ``make study`` only."""

MATCH_LAMBDA = None
"""MinEnt's λ at which MaxSquare's λ is matched by initial logit-gradient norm (None: the table's
λ_T, so that the matched run pairs with the table's MinEnt row)."""

SWEEP_METHODS = LOSS_METHODS


def course_studies(study: bool) -> list:
    """The variants of the main benchmark's first seed: the matched-gradient run (``make course``),
    and with ``study`` also MaxSquare with BatchNorm frozen and the λ sweep of every loss (the
    course stays within 20 minutes; notebook 05 shows them when the study's runs are there)."""
    from .plans import study_variants

    return study_variants(LAMBDA_SWEEP if study else (), SWEEP_METHODS, MATCH_LAMBDA, match=True,
                          bn_frozen=study)


@dataclass(frozen=True)
class NotebookRun:
    """One execution of a notebook: its file, the output name and extra parameters."""

    notebook: str
    output: str
    parameters: dict = field(default_factory=dict)


def notebook_plan(profile: str) -> list[NotebookRun]:
    """The notebook executions of the course, in order."""
    plan = [NotebookRun(n, n) for n in ("00_setup", "01_data", "02_source_pretraining",
                                         "03_gradient_analysis")]
    plan.append(NotebookRun("04_adaptation", "04_adaptation", {"method": NOTEBOOK_METHOD}))
    plan.append(NotebookRun("05_evaluation", "05_evaluation"))
    if profile != "gpu":
        plan += [NotebookRun("06_cross_city", f"06_cross_city-{c}", {"city": c}) for c in CITIES]
    plan.append(NotebookRun("07_explorer", "07_explorer"))
    plan.append(NotebookRun("08_lab", "08_lab"))  # trains its worked example in its own kernel
    plan.append(NotebookRun("09_appendix_paper_scale", "09_appendix_paper_scale"))
    return plan


def plan_course_jobs(profile: str, runs: str, data_root: str | None, seeds: list[int],
                     device: str | None = None, study: bool = False):
    """All training jobs of the course: the main table and its studies on the profile's first
    benchmark, then the cross-city runs (first seed); a shared source run appears once.

    Args:
        study: also the λ sweep (:func:`course_studies`).

    Returns:
        :class:`~maxsq_lib.course.plans.Job` s, each named ``<benchmark>: <run> seed<k>``.
    """
    from ..config import benchmarks_of
    from .plans import plan_jobs

    common = dict(runs=runs, data_root=data_root, device=device)
    main_bench = benchmarks_of(profile)[0]
    studies = course_studies(study)
    plans = [(main_bench, plan_jobs(profile, main_bench, seeds, ADAPT_METHODS, studies, **common))]
    plans += [(bench, plan_jobs(profile, bench, seeds[:1], CROSS_CITY_METHODS, **common))
              for bench in benchmarks_of(profile) if "nthu" in bench]
    jobs, seen = [], set()
    for bench, planned in plans:
        for job in planned:
            if job.run_dir in seen:
                continue
            seen.add(job.run_dir)
            job.name = f"{bench}: {job.name}"
            jobs.append(job)
    return jobs


def default_figures_dir(profile: str, runs: str, study: bool = False) -> str:
    """``figures/`` (committed) for the cpu profile's study (``make study``, 3 seeds);
    ``<runs>/<profile>/figures`` otherwise, so the course never rewrites the committed figures."""
    return "figures" if profile == "cpu" and study else str(Path(runs) / profile / "figures")


def executed_copies(profile: str, out_dir: Path) -> list[Path]:
    """The executed notebooks of a profile's course found in ``out_dir``, in course order.

    Every copy present counts, not only this call's: after ``--only`` the HTML index still
    lists the notebooks an earlier run executed.

    Args:
        profile: the course's profile (:func:`notebook_plan`).
        out_dir: ``<runs>/<profile>/notebooks``.
    Returns:
        the ``.ipynb`` paths that exist.
    """
    paths = [out_dir / f"{nb.output}.ipynb" for nb in notebook_plan(profile)]
    return [p for p in paths if p.is_file()]


def export_course_html(profile: str, runs: str, log=print) -> list[Path]:
    """Export the executed notebooks of a profile to ``<runs>/<profile>/html/`` with an index.

    Args:
        profile: the course's profile.
        runs: the runs folder.
        log: where the one summary line goes.
    Returns:
        the written files (:func:`~maxsq_lib.course.html_export.export_html`).
    """
    from .html_export import INDEX_NAME, STUDENT_DIR, export_html

    html_dir = Path(runs) / profile / "html"
    notebooks = executed_copies(profile, Path(runs) / profile / "notebooks")
    written = export_html(notebooks, html_dir,
                          heading=f"maxsq course ({profile}): the executed notebooks")
    log(f"[html] {len(notebooks)} pages in {html_dir}/ (open {INDEX_NAME}; without solutions: "
        f"{STUDENT_DIR}/{INDEX_NAME})")
    return written


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""


def execute_notebook(run: NotebookRun, out_dir: Path, parameters: dict, root: Path,
                     timeout: int | None = None) -> float:
    """Execute one notebook with papermill; returns its wall time in seconds."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src = root / "notebooks" / f"{run.notebook}.ipynb"
    if not src.is_file():
        raise NotebookFailed(f"notebook not found: {src}")
    out = out_dir / f"{run.output}.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # The kernel process inherits our stderr; its start-up chatter goes to a log beside the output.
    log_path = out_dir / f"{run.output}.kernel.log"
    saved = os.dup(2)
    try:
        with open(log_path, "w") as log_file:
            os.dup2(log_file.fileno(), 2)
            try:
                pm.execute_notebook(str(src), str(out), parameters={**parameters, **run.parameters},
                                    cwd=str(root), kernel_name="python3", progress_bar=False,
                                    log_output=False, execution_timeout=timeout)
            finally:
                os.dup2(saved, 2)
    except PapermillExecutionError as exc:
        raise NotebookFailed(f"{src.name} failed in cell {exc.exec_count} "
                             f"({exc.ename}: {exc.evalue}); executed copy: {out}") from None
    finally:
        os.close(saved)
    return time.perf_counter() - t0


def execute_notebooks(plan: list[NotebookRun], out_dir: Path, parameters: dict, root: Path,
                      parallel: int = 1):
    """Execute notebooks, ``parallel`` at once; yields ``(run, seconds)`` as each finishes.

    With ``parallel > 1`` each notebook runs in its own worker process (each redirects its
    kernel's stderr, which is process-wide). On the first failure the notebooks not yet started
    are cancelled, the running ones finish, and the :class:`NotebookFailed` is raised.
    """
    if parallel <= 1 or len(plan) <= 1:
        for run in plan:
            yield run, execute_notebook(run, out_dir, parameters, root)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn, not fork: the parent may hold torch's thread pools, which do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
        futures = {pool.submit(execute_notebook, run, out_dir, parameters, root): run
                   for run in plan}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: plan.index(futures[f])):
                try:
                    seconds = future.result()
                except BaseException:
                    for other in pending:
                        other.cancel()
                    raise
                yield futures[future], seconds


def run_course(profile: str = "cpu", runs: str = "runs", data_root: str | None = None,
               seeds: list[int] | None = None, jobs: int = 2, device: str | None = None,
               only: list[str] | None = None, skip_training: bool = False,
               figures: bool = True, study: bool = False, log=print) -> dict:
    """Run the course end to end (see the module docstring).

    Args:
        profile: ``smoke``, ``cpu``, ``gpu`` or ``paper``.
        runs: runs folder.
        data_root: dataset root (default: the profile's).
        seeds: seeds of the main table (default ``[0]``).
        jobs: parallel training processes (each one thread when > 1), and notebooks
            executed at once after training.
        device: override the profile's device.
        only: execute only these notebooks (names like ``04_adaptation``).
        skip_training: do not pre-train in parallel (the notebooks train-or-load).
        figures: regenerate the figures at the end (:func:`default_figures_dir`).
        study: ``make study``: also the λ sweep; no notebooks (and no HTML copy); the cpu
            profile's figures go to the committed ``figures/``.
    Returns:
        timings per stage.
    """
    from ..config import resolve
    from .plans import run_jobs
    from .tables import write_summary

    seeds = list(seeds or [0])
    root = project_root()
    runs = at_root(runs)  # relative paths mean the project root's, wherever this is started
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    cfg = resolve(profile, overrides={"data": {"root": data_root}} if data_root else None)
    data_root = at_root(cfg.data.root)

    t0 = time.perf_counter()
    if profile in MINICITY_PROFILES:
        from maxsq_prep.minicity import generate_minicity

        summary = generate_minicity(root=data_root, profile=profile, seed=0, progress=False)
        actions = {k: v["action"] for k, v in summary["datasets"].items()}
        log(f"[data] MiniCity ({profile}) in {data_root}: {actions} ({summary['seconds']:.0f} s)")
    timings["data"] = time.perf_counter() - t0

    if not skip_training:
        t0 = time.perf_counter()
        course_jobs = plan_course_jobs(profile, runs, data_root, seeds, device, study=study)
        log(f"[train] {len(course_jobs)} runs, {jobs} at a time")
        run_jobs(course_jobs, parallel=jobs, log=lambda m: log(f"[train] {m}"))
        timings["training"] = time.perf_counter() - t0

    out_dir = Path(runs) / profile / "notebooks"
    params = {"profile": profile, "runs_root": runs, "data_root": data_root,
              "seeds": seeds, "seed": seeds[0]}
    if device:
        params["device"] = device
    plan = [] if study else [nb for nb in notebook_plan(profile) if not only or nb.notebook in only]
    # Once every run exists the notebooks only load and plot, so they are independent; while
    # runs may still be missing they train-or-load and must go in order (no two training one run).
    parallel = jobs if not skip_training else 1
    for nb, seconds in execute_notebooks(plan, out_dir, params, root, parallel=parallel):
        timings[f"notebook {nb.output}"] = seconds
        log(f"[notebook] {nb.output} ({seconds:.0f} s) -> {out_dir / (nb.output + '.ipynb')}")
    if plan:  # --study runs no notebook, so it has nothing new to render
        t0 = time.perf_counter()
        export_course_html(profile, runs, log=log)
        timings["html"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        for path in write_summary(runs, profile):
            log(f"[summary] {path}")
    except FileNotFoundError as exc:
        log(f"[summary] skipped: {exc}")
    if figures:
        from .plots import regenerate

        out = at_root(default_figures_dir(profile, runs, study))
        written = regenerate(runs_root=runs, profile=profile, data_root=data_root, out_dir=out)
        log(f"[figures] {len(written)} files in {out}/")
    timings["summary+figures"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_all
    (Path(runs) / profile).mkdir(parents=True, exist_ok=True)
    (Path(runs) / profile / f"{'study' if study else 'course'}_timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    log(f"[done] {'study' if study else 'course'} ({profile}) in {timings['total'] / 60:.1f} min")
    return timings
