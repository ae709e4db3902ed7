"""The course's own commands: ``maxsq reproduce``, ``course``, ``figures``, ``summary``, ``doctor``.

The core's command line (:mod:`maxsq_lib.cli`) registers these parsers with :func:`add_commands`
and dispatches to :data:`HANDLERS`; this module never imports the command line back. Each handler
imports what it needs when it runs, so that ``maxsq --help`` and the core's commands work with the
``engine`` extra alone, and a course command without the ``course`` extra stops with one line
naming it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from .. import config as C
from .. import methods as method_registry
from ..files import ROOT_ENV, at_root, project_root


def add_commands(sub, common) -> list[argparse.ArgumentParser]:
    """Register the course's sub-commands on the ``maxsq`` parser (the command line's; notebook
    ``00`` shows ``maxsq doctor``).

    Args:
        sub: the ``add_subparsers`` action of the ``maxsq`` parser.
        common: the command line's builder of the run-selection flags (``--profile``, ``--runs``...),
            which ``reproduce`` shares with the training commands.
    Returns:
        the parsers that take ``--dry-run`` (``course``).
    """
    _add_reproduce(sub, common)
    planned = [_add_course(sub)]
    _add_figures(sub)
    _add_summary(sub)
    _add_doctor(sub)
    return planned


def add_dry_run_flags(parsers: list[argparse.ArgumentParser]) -> None:
    """``--dry-run`` and ``--verbose`` on ``train-source``, ``adapt`` and ``course``: check what the
    command would need with :mod:`maxsq_lib.course.dryrun` and print the plan, run nothing.

    Args:
        parsers: the sub-command parsers that take them (added last, after ``--root``).
    """
    for p in parsers:
        p.add_argument("--dry-run", action="store_true", help="check the data, checkpoints and "
                       "run folders this would need, print configs and commands; exit 1 if missing")
        p.add_argument("--verbose", action="store_true", help="with --dry-run: full resolved configs")


def shown_command(argv: list[str], benchmark: str) -> list[str]:
    """A ``train-source`` / ``adapt`` command line as the user typed it, without ``--dry-run`` and
    ``--verbose``, naming the benchmark it resolved to.

    Args:
        argv: the command line after ``maxsq``.
        benchmark: the benchmark the command resolved to.
    Returns:
        the command line to print, which resolves to the same config.
    """
    shown = [a for a in argv if a not in ("--dry-run", "--verbose")]
    if not any(a == "--benchmark" or a.startswith("--benchmark=") for a in shown):
        at = shown.index("--profile") + 2 if "--profile" in shown[:-1] else 1
        shown[at:at] = ["--benchmark", benchmark]
    return shown


def dry_run_report(args, argv: list[str], resolve, base=None):
    """The :class:`~maxsq_lib.course.dryrun.DryRunReport` of ``maxsq <argv> --dry-run``.

    Args:
        args: ``argv`` parsed by the ``maxsq`` parser.
        argv: the command line after ``maxsq``, as typed.
        resolve: the command line's ``resolve_from_args(args, method)``, the run config of its flags.
        base: the folder relative paths mean (``--root`` wins; default: the project root).
    Returns:
        the report (nothing is written).
    """
    from .dryrun import plan_dry_run

    base = Path(args.root).resolve() if args.root else base
    saved = os.environ.get(ROOT_ENV)
    if base is not None:  # resolve as the command would with `base` as its root
        os.environ[ROOT_ENV] = str(base)
    try:
        if args.command == "course":
            return plan_dry_run(args, "course", base=base)
        stage = "source" if args.command == "train-source" else "adapt"
        cfg = resolve(args, args.method if stage == "adapt" else None)
        return plan_dry_run(args, args.command, base=base, cfg=cfg,
                            shown=shown_command(list(argv), cfg.benchmark))
    finally:
        if saved is None:
            os.environ.pop(ROOT_ENV, None)
        else:
            os.environ[ROOT_ENV] = saved


def dry_run(args, argv: list[str], resolve) -> int:
    """What ``--dry-run`` does: print the report of :func:`dry_run_report`.

    Returns:
        the exit status: 1 when something required is missing, else 0.
    """
    from .dryrun import print_report

    report = dry_run_report(args, argv, resolve)
    print_report(report, verbose="--verbose" in argv)
    return 0 if report.ok else 1


def _add_reproduce(sub, common) -> None:
    """``maxsq reproduce``."""
    rp = sub.add_parser("reproduce", help="source + each method for several seeds, then summary")
    common(rp)
    rp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    rp.add_argument("--methods", nargs="+",
                    default=list(C.TABLE_METHODS), choices=method_registry.adaptation_methods())
    rp.add_argument("--jobs", type=int, default=1,
                    help="runs at once (each with one thread when > 1; 2 suits a 2-core machine)")
    rp.add_argument("--lambda-sweep", type=float, nargs="*", default=None, metavar="λ",
                    help="study: λ_T values for --sweep-methods (first seed only)")
    rp.add_argument("--sweep-methods", nargs="+", default=["minent", "maxsquare"])
    rp.add_argument("--match-gradient", action="store_true",
                    help="study: MaxSquare at MinEnt's initial logit-gradient norm")
    rp.add_argument("--match-lambda", type=float, default=None,
                    help="MinEnt's λ for --match-gradient (default: the profile's λ_T)")
    rp.add_argument("--bn-frozen", action="store_true",
                    help="study: MaxSquare with BatchNorm frozen during adaptation")
    rp.add_argument("--no-progress", action="store_true")


def _add_course(sub) -> argparse.ArgumentParser:
    """``maxsq course``."""
    co = sub.add_parser("course", help="run the whole course (data, training, notebooks, figures)")
    co.add_argument("--profile", default="cpu", choices=C.PROFILES)
    co.add_argument("--runs", default="runs", help="folder for run outputs (default: runs/)")
    co.add_argument("--data-root", dest="data_root", default=None,
                    help="dataset root (default: the profile's)")
    co.add_argument("--seeds", type=int, default=1,
                    help="number of seeds of the main table (1 → seed 0; 3 → seeds 0, 1, 2)")
    co.add_argument("--jobs", type=int, default=2,
                    help="training processes at once (each one thread when > 1)")
    co.add_argument("--device", default=None)
    co.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                    help="execute only these notebooks, e.g. 03_gradient_analysis")
    co.add_argument("--no-figures", action="store_true", help="do not regenerate the figures")
    co.add_argument("--study", action="store_true", help="the study behind the committed figures/ (make "
                    "study): also the λ sweep, no notebooks, figures into figures/ for the cpu profile")
    return co


def _add_figures(sub) -> None:
    """``maxsq figures``."""
    fg = sub.add_parser("figures", help="regenerate figures/ and figures/results.md from runs/")
    fg.add_argument("--profile", default="cpu", choices=C.PROFILES)
    fg.add_argument("--runs", default="runs")
    fg.add_argument("--data-root", dest="data_root", default=None)
    fg.add_argument("--out", default=None,
                    help="output folder (default: <runs>/<profile>/figures; make study writes figures/)")


def _add_summary(sub) -> None:
    """``maxsq summary``."""
    sm = sub.add_parser("summary", help="results table of the finished runs of a profile")
    sm.add_argument("--profile", default="cpu", choices=C.PROFILES)
    sm.add_argument("--runs", default="runs")
    sm.add_argument("--benchmark", default=None)


def _add_doctor(sub) -> None:
    """``maxsq doctor``."""
    dr = sub.add_parser("doctor", help="is this machine ready for the course? packages, runtime, data, checkpoints")
    dr.add_argument("--profile", default="cpu", choices=C.PROFILES)
    dr.add_argument("--runs", default="runs")
    dr.add_argument("--data-root", dest="data_root", default=None)
    dr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _needs_the_course_extra(handler):
    """``handler``, stopping with one line (exit 1) when a package of the ``course`` extra is missing
    (the core's commands need only the ``engine`` extra)."""
    @functools.wraps(handler)
    def run(args) -> int:
        try:
            return handler(args)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "maxsq").split(".")[0]
            if missing.startswith("maxsq"):  # our own module missing is a bug: show it
                raise
            print(f"maxsq {args.command}: needs the 'course' extra ({missing} is not installed): "
                  f"pip install 'maxsq[course]'", file=sys.stderr)
            return 1
    return run


def _cmd_reproduce(args) -> int:
    from .plans import plan_jobs, reproduce, study_variants

    studies = study_variants(args.lambda_sweep or (), args.sweep_methods, args.match_lambda,
                             match=args.match_gradient, bn_frozen=args.bn_frozen)
    jobs = plan_jobs(args.profile, args.benchmark, args.seeds, args.methods, studies, runs=args.runs,
                     data_root=args.data_root, device=args.device, overrides=args.overrides)
    reproduce(jobs, args.jobs, args.runs, args.profile, args.benchmark)
    return 0


def _cmd_summary(args) -> int:
    from .tables import write_summary

    paths = write_summary(args.runs, args.profile, args.benchmark)
    for p in paths:
        print(f"wrote {p}")
    print(Path(paths[-1]).read_text())
    return 0


def _cmd_course(args) -> int:
    notebooks = project_root() / "notebooks"
    if not args.study and not notebooks.is_dir():
        print(f"maxsq course: error: the notebooks are expected in {notebooks}, which does not exist: "
              f"run it in a checkout of the repository, or pass --root CHECKOUT", file=sys.stderr)
        return 2
    from .runner import NotebookFailed, run_course

    try:
        run_course(profile=args.profile, runs=args.runs, data_root=args.data_root,
                   seeds=list(range(args.seeds)), jobs=args.jobs, device=args.device, only=args.only,
                   figures=not args.no_figures, study=args.study)
    except (NotebookFailed, RuntimeError) as exc:  # a failed notebook or training job, named
        print(f"maxsq course: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_figures(args) -> int:
    from .plots import regenerate
    from .runner import default_figures_dir

    out = at_root(args.out or default_figures_dir(args.profile, args.runs))
    written = regenerate(runs_root=at_root(args.runs), profile=args.profile, data_root=args.data_root,
                         out_dir=out)
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_doctor(args) -> int:
    from . import doctor

    checks = doctor.doctor(args.profile, runs=args.runs, data_root=args.data_root, device=args.device)
    print(doctor.report(checks))
    return 1 if any(c.ok is False for c in checks) else 0


def what_was_kept(args) -> str | None:
    """The line Ctrl-C prints after ``maxsq reproduce`` / ``maxsq course``: what is on disk and how
    to go on.

    Args:
        args: the parsed command line.
    Returns:
        the line, or None for another command (the command line says it).
    """
    if args.command not in ("course", "reproduce"):
        return None
    from ..engine.runs import is_finished

    runs = Path(at_root(args.runs)) / args.profile
    finished = sum(1 for d in runs.glob("*/*/seed*") if is_finished(d))
    return (f"Kept: {finished} finished runs under {runs}/ (an interrupted run keeps its last "
            f"checkpoint, last.pt); run the same command again to reuse them and continue.")


HANDLERS = {name: _needs_the_course_extra(handler) for name, handler in {
    "reproduce": _cmd_reproduce, "summary": _cmd_summary, "figures": _cmd_figures, "doctor": _cmd_doctor,
    "course": _cmd_course}.items()}
"""The handler of each course command, by name: ``handler(args) -> exit status``."""
