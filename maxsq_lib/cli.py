"""The ``maxsq`` command line (also ``python -m maxsq_lib``).

Commands::

    maxsq prepare minicity   generate the embedded MiniCity benchmark
    maxsq prepare lists      write the authors' list files for a real dataset
    maxsq data check NAME    read every listed image/label pair and report problems
    maxsq train-source       source-only pretraining
    maxsq adapt --method M   adaptation from the source model
    maxsq run --config FILE  train the run a resolved config describes (what planned jobs run)
    maxsq evaluate           evaluate a run or a checkpoint (also the authors' released files)
    maxsq reproduce          source + every method for several seeds, then the summary
    maxsq summary            results table of finished runs (summary.json + summary.md)
    maxsq course             the whole course: data, training, notebooks, figures
    maxsq figures            regenerate figures/ and figures/results.md from runs/

Every training command takes ``--profile``, ``--data-root``, ``--runs`` and ``--seed``; flags that
exist in the authors' scripts also accept their spelling (``--lambda_target``, ``--IW_ratio``...).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from .files import ROOT_ENV, at_root

try:
    from . import config as C
    from . import methods as method_registry
except ModuleNotFoundError as exc:  # the package was installed without the extras the CLI needs
    raise SystemExit(f"maxsq: the command line needs the 'engine' extra ({exc.name} is not installed): "
                     f"pip install 'maxsq[engine]'") from None


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run selection")
    g.add_argument("--profile", default="cpu", choices=C.PROFILES,
                   help="configuration profile (default: cpu = the embedded MiniCity default)")
    g.add_argument("--benchmark", default=None, help="benchmark of the profile (default: its first, e.g. "
                   "minicity or gta5_cityscapes); see maxsq_lib/configs/<profile>.yaml")
    g.add_argument("--data-root", "--data_root_path", dest="data_root", default=None,
                   help="folder holding the datasets in their layouts (default: the profile's, "
                        "datasets/ for paper, datasets/minicity-<profile>/ for MiniCity)")
    g.add_argument("--runs", default="runs", help="folder for run outputs (default: runs/)")
    g.add_argument("--seed", type=int, default=0, help="seed deciding everything (default 0)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: profile)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set adapt.iterations=200 (repeatable)")


def _train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run control")
    g.add_argument("--resume", "--continue_training", action="store_true",
                   help="continue an interrupted run from its last checkpoint (exact)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of a finished run (refused otherwise)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--wait", action="store_true", help="if another process is writing this run folder, wait "
                   "for it (default: stop and name it); a run it finishes is then reused, not trained again")


def build_parser() -> argparse.ArgumentParser:
    """The ``maxsq`` parser: one sub-command per builder below."""
    parser = argparse.ArgumentParser(prog="maxsq", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_prepare(sub)
    _add_data_check(sub)
    planned = [_add_train_source(sub), _add_adapt(sub)]
    _add_evaluate(sub)
    _add_run(sub)
    # the course registers its own commands; imported here so that importing the core never imports it
    from .course.commands import add_commands, add_dry_run_flags

    planned += add_commands(sub, _common)
    _add_root_flag(parser)
    add_dry_run_flags(planned)
    return parser


def _add_root_flag(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--root DIR`` on every (sub)command: the folder that relative ``runs/``, ``datasets/``,
    ``pretrained_model/`` and ``notebooks/`` are in (default: the checkout holding the working
    folder, else the working folder; :func:`maxsq_lib.files.project_root`)."""
    parser.add_argument("--root", default=None if top else argparse.SUPPRESS, metavar="DIR",
                        help="folder of runs/, datasets/ and notebooks/ (default: the checkout you are in, "
                             "else the working folder)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_root_flag(child, top=False)


def _add_prepare(sub) -> None:
    """``maxsq prepare minicity`` / ``maxsq prepare lists``."""
    prep = sub.add_parser("prepare", help="generate MiniCity or write list files for real data")
    prep_sub = prep.add_subparsers(dest="what", required=True, metavar="WHAT")
    mc = prep_sub.add_parser("minicity", help="generate the MiniCity benchmark (deterministic)")
    mc.add_argument("--data-root", dest="data_root", default=None,
                    help="where to write (default: datasets/minicity-<profile>/, the folder the "
                         "profile reads; kept apart from real datasets under datasets/)")
    mc.add_argument("--profile", default="cpu", choices=C.MINICITY_PROFILES,
                    help="size of the generated set (default cpu)")
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--shift", type=float, default=None,
                    help="domain shift strength in [0, 1] (default: the calibrated value)")
    mc.add_argument("--force", action="store_true", help="regenerate even if complete")
    lists = prep_sub.add_parser("lists", help="write <dataset>/list/<split>.txt from the files")
    lists.add_argument("dataset", choices=C.DATASET_NAMES)
    lists.add_argument("--data-root", dest="data_root", default="datasets")
    lists.add_argument("--city", default=None, help="NTHU city (Rome, Rio, Tokyo, Taipei)")
    lists.add_argument("--split-file", default=None, help="GTA5 split.mat (else all.txt only)")


def _add_data_check(sub) -> None:
    """``maxsq data check``."""
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="what", required=True, metavar="WHAT")
    chk = data_sub.add_parser("check", help="read every listed pair and report problems")
    chk.add_argument("dataset", choices=C.DATASET_NAMES)
    chk.add_argument("--data-root", dest="data_root", default="datasets")
    chk.add_argument("--split", default=None, help="one split (default: every list file)")
    chk.add_argument("--city", default=None, help="NTHU city")
    chk.add_argument("--num-classes", "--num_classes", dest="num_classes", type=int, default=19,
                     choices=[19, 16, 13, 10])
    chk.add_argument("--limit", type=int, default=None, help="check only the first N entries")


def _recipe_flags(p: argparse.ArgumentParser, adapt: bool) -> None:
    """The recipe values a researcher changes most (any other: --set KEY=VALUE)."""
    g = p.add_argument_group("recipe (default: the profile's)")
    g.add_argument("--iterations", *(() if adapt else ("--iter_stop",)), dest="iterations", type=int,
                   default=None, help="iterations to train; the poly schedule's horizon stays the "
                                      "profile's unless --schedule-horizon is given (the command says so)")
    g.add_argument("--schedule-horizon", dest="schedule_horizon", type=int, default=None,
                   help="the poly schedule's horizon (the authors stop source training at 80k of 200k)")
    g.add_argument("--lr", dest="lr", type=float, default=None, help="base learning rate (heads × head_lr_mult)")
    g.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                   help="source images per iteration")
    if adapt:
        g.add_argument("--target-batch-size", dest="target_batch_size", type=int, default=None,
                       help="target images per iteration")


def _add_train_source(sub) -> argparse.ArgumentParser:
    """``maxsq train-source``."""
    ts = sub.add_parser("train-source", help="source-only pretraining")
    _common(ts)
    _train_flags(ts)
    ts.add_argument("--multi", type=_bool, default=None, metavar="BOOL",
                    help="also train the aux head with λ_seg·CE (the authors' --multi)")
    _recipe_flags(ts, adapt=False)
    ts.add_argument("--init-checkpoint", default=None,
                    help="DeepLab init file (default: profile; 'none' = from scratch)")
    _aspp_flag(ts)

    return ts


def _add_adapt(sub) -> argparse.ArgumentParser:
    """``maxsq adapt``."""
    ad = sub.add_parser("adapt", help="adaptation from the source model")
    _common(ad)
    _train_flags(ad)
    ad.add_argument("--method", "--target_mode", dest="method", required=True,
                    choices=method_registry.adaptation_methods(),
                    help="adabn (BatchNorm statistics re-estimated on target, no gradient step), none "
                         "(source training, target batches through BatchNorm), or a target loss: "
                         + ", ".join(method_registry.loss_methods()))
    ad.add_argument("--lambda-target", "--lambda_target", dest="lambda_target", type=float, default=None,
                    help="λ_T (default: profile; paper 0.1, Multi 0.09)")
    ad.add_argument("--iw-ratio", "--IW_ratio", dest="iw_ratio", type=float, default=None,
                    help="α of the image-wise weights (default 0.2)")
    ad.add_argument("--threshold", type=float, default=None,
                    help="confidence threshold of Multi / hard (default 0.95; 0.98 cross-city)")
    ad.add_argument("--lambda-seg", "--lambda_seg", dest="lambda_seg", type=float, default=None)
    ad.add_argument("--bn-mode", choices=list(C.BN_MODES), default=None,
                    help="BatchNorm during adaptation: train (the authors' default), eval (the authors' "
                         "--freeze_bn: statistics fixed, affine trained) or frozen (statistics and affine "
                         "fixed)")
    ad.add_argument("--match-gradient-to", default=None, choices=method_registry.loss_methods(),
                    help="set λ_T so that the initial logit-gradient norm equals this method's at the "
                         "same λ_T")
    ad.add_argument("--match-gradient-lambda", type=float, default=None, metavar="λ_REF",
                    help="the reference method's λ for --match-gradient-to (default: λ_T)")
    ad.add_argument("--source-checkpoint", "--pretrained_ckpt_file", dest="source_checkpoint",
                    default=None, help="start from this checkpoint (ours or the authors') instead "
                                       "of this profile's source run")
    _recipe_flags(ad, adapt=True)
    _aspp_flag(ad)
    ad.add_argument("--tag", default=None,
                    help="suffix of the run folder (<method>-<tag>) for variants of a method")

    return ad


def _add_evaluate(sub) -> None:
    """``maxsq evaluate``."""
    ev = sub.add_parser("evaluate", help="evaluate a finished run or a checkpoint file")
    _common(ev)
    ev.add_argument("--method", default=None,
                    help="evaluate this profile's run of a method ('source' for the source run)")
    ev.add_argument("--tag", default=None)
    ev.add_argument("--checkpoint", "--pretrained_ckpt_file", dest="checkpoint", default=None,
                    help="a checkpoint file (ours, or the authors' released .pth)")
    ev.add_argument("--flip", action="store_true", help="flip ensembling (mean of softmaxes)")
    _aspp_flag(ev)
    ev.add_argument("--full-resolution-labels", action="store_true",
                    help="score against labels at their native resolution (not the authors')")
    ev.add_argument("--split", default=None, help="split to evaluate (default: target val)")
    ev.add_argument("--output", default=None, help="write the result JSON here")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    ev.add_argument("--no-progress", action="store_true")


def _add_run(sub) -> None:
    """``maxsq run``: a resolved config file, as a planned job writes it."""
    rn = sub.add_parser("run", help="train the run a resolved config file describes (a planned "
                        "job's <run folder>/job.yaml, or any run's config.yaml)")
    rn.add_argument("--config", required=True, help="a resolved run config (YAML)")
    rn.add_argument("--stage", required=True, choices=["source", "adapt"])
    _train_flags(rn)


def _aspp_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aspp-branches", dest="aspp_branches", type=int, choices=[2, 4], default=None,
                   help="ASPP branches each head sums: 2 reproduces the authors' heads, 4 is the "
                        "intended sum (default: follow the starting file when it says, e.g. 2 for "
                        "the authors' files; else the profile's)")


def aspp_chosen(args) -> bool:
    """Whether the command line sets ``model.aspp_branches`` (a flag or ``--set``)."""
    return getattr(args, "aspp_branches", None) is not None or any(
        text.split("=", 1)[0].strip() == "model.aspp_branches" for text in getattr(args, "overrides", []))


def _bool(text: str) -> bool:
    """The authors' str2bool."""
    low = text.lower()
    if low in ("yes", "true", "t", "y", "1"):
        return True
    if low in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _given(args, *names: str) -> dict:
    """The flags among ``names`` that the command line set (not None), by name (= config key)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def resolve_from_args(args, method: str | None = None):
    """The run config the common flags describe."""
    overrides: dict = {"runs_root": args.runs, "seed": args.seed}
    if args.data_root:
        overrides["data"] = {"root": args.data_root}
    if getattr(args, "device", None):
        overrides["device"] = args.device
    C.deep_update(overrides, C.parse_overrides(getattr(args, "overrides", [])))
    extra: dict = {}
    if adapt := _given(args, "lambda_target", "iw_ratio", "threshold", "lambda_seg", "bn_mode",
                       "match_gradient_to", "match_gradient_lambda", "source_checkpoint"):
        extra["adapt"] = adapt
    stage = "adapt" if method else "source"
    recipe = _given(args, "iterations", "schedule_horizon", "batch_size", "target_batch_size")
    if getattr(args, "lr", None) is not None:
        recipe["optim"] = {"lr": args.lr}
    if "iterations" in recipe and "schedule_horizon" not in recipe:
        base = C.resolve(args.profile, getattr(args, "benchmark", None), method)
        horizon = max(getattr(base, stage).schedule_horizon, args.iterations)
        recipe["schedule_horizon"] = horizon
        if horizon != args.iterations:
            print(f"note: {stage} stops after {args.iterations:,} iterations of a poly schedule whose "
                  f"horizon stays {horizon:,} (the learning rate does not reach 0); "
                  f"--schedule-horizon {args.iterations} moves it", file=sys.stderr)
    if recipe:
        extra.setdefault(stage, {}).update(recipe)
    if getattr(args, "multi", None) is not None:
        extra.setdefault("source", {})["multi"] = args.multi
    init = getattr(args, "init_checkpoint", None)
    if init is not None:
        extra.setdefault("source", {})["init_checkpoint"] = None if init.lower() == "none" else init
    if getattr(args, "tag", None):
        extra["tag"] = args.tag
    if getattr(args, "aspp_branches", None) is not None:
        extra["model"] = {"aspp_branches": args.aspp_branches}
    C.deep_update(overrides, extra)
    cfg = C.resolve(args.profile, getattr(args, "benchmark", None), method, overrides)
    # the folders mean the same for every command, notebook and job (maxsq_lib.files.project_root)
    cfg.runs_root, cfg.data.root = at_root(cfg.runs_root), at_root(cfg.data.root)
    if cfg.source.init_checkpoint and init is None:  # the profile's pretrained_model/ file
        cfg.source.init_checkpoint = at_root(cfg.source.init_checkpoint)
    return cfg


def _cmd_prepare(args) -> int:
    if args.what == "minicity":
        from maxsq_prep.minicity import generate_minicity

        root = at_root(args.data_root or f"datasets/minicity-{args.profile}")
        summary = generate_minicity(root=root, profile=args.profile, seed=args.seed,
                                    shift=args.shift, force=args.force)
        print("\n".join(f"{k}: {v}" for k, v in summary.items()))
        return 0
    from maxsq_prep import lists as L

    if args.dataset == "nthu" and not args.city:
        print("maxsq prepare lists nthu: --city is required (Rome, Rio, Tokyo, Taipei)", file=sys.stderr)
        return 2
    write = {"cityscapes": L.write_cityscapes_lists, "synthia": L.write_synthia_lists,
             "nthu": functools.partial(L.write_nthu_lists, city=args.city),
             "gta5": functools.partial(L.write_gta5_lists, split_file=args.split_file)}[args.dataset]
    for split, n in write(Path(args.data_root)).items():
        print(f"{args.dataset} {split}: {n} entries")
    return 0


def _cmd_data(args) -> int:
    from .data.check import check_dataset

    report = check_dataset(args.dataset, args.data_root, split=args.split,
                           num_classes=args.num_classes, city=args.city, limit=args.limit)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_train(args, stage: str) -> int:
    from .engine.build import follow_start_heads

    method = args.method if stage == "adapt" else None
    cfg = resolve_from_args(args, method)
    note = follow_start_heads(cfg, stage, chosen=aspp_chosen(args))
    if note:
        print(f"starting weights: {note}")
    return _train_and_report(cfg, stage, args)


def _train_and_report(cfg, stage: str, args) -> int:
    from .engine import train

    metrics = train(cfg, stage, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.no_progress, wait_for_lock=args.wait)
    last = metrics["last"]
    print(f"{metrics['run']} seed {cfg.seed}: target val mIoU {100 * last['miou']:.2f} (last), "
          f"best {100 * metrics['best_on_target_val']['miou']:.2f}; outputs in "
          f"{Path(cfg.runs_root) / cfg.profile / cfg.benchmark}")
    return 0


def _cmd_run(args) -> int:
    """``maxsq run``: a worker of the job pool, or a user re-running a planned run by hand."""
    cfg = C.from_dict(C.load_yaml(args.config), str(args.config))
    return _train_and_report(cfg, args.stage, args)


def _cmd_evaluate(args) -> int:
    """``maxsq evaluate``: score a run or a checkpoint file (ours or the authors' released ones);
    it never deletes anything and refuses to overwrite an existing ``--output`` unless asked."""
    from .engine.evaluation import evaluate
    from .engine.runs import RunExistsError, write_json_atomic
    from .engine.build import build_dataset, model_from_file, resolve_device, run_dir_for
    from .engine.trainer import MissingInputError

    method = args.method if args.method not in (None, "source") else None
    cfg = resolve_from_args(args, method)
    if args.split:
        cfg.data.val_split = args.split
    cfg.eval.full_resolution_labels = bool(args.full_resolution_labels)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    elif args.method:
        checkpoint = run_dir_for(cfg, "source" if method is None else "adapt") / "final.pt"
    else:
        raise MissingInputError("maxsq evaluate: give --checkpoint FILE or --method NAME "
                                "(a finished run of this profile)")
    output = Path(args.output) if args.output else None
    if output is not None and output.exists() and not args.overwrite:
        raise RunExistsError(f"{output} exists; pass --overwrite to replace it")
    device = resolve_device(cfg.device)
    if not checkpoint.is_file():
        raise MissingInputError(f"checkpoint not found: {checkpoint} (expected a weight file: ours, "
                                f"or the authors' released .pth)")
    model, note = model_from_file(cfg, checkpoint, chosen=aspp_chosen(args))
    cfg.model.aspp_branches = model.aspp_branches
    print(note)
    result = evaluate(model.to(device), build_dataset(cfg, "val"), cfg.data.num_classes, device=device,
                      flip=args.flip, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit, amp=cfg.amp,
                      progress=not args.no_progress, desc=f"evaluate {checkpoint.name}")
    print(f"{cfg.benchmark} / {cfg.data.target} {cfg.data.val_split}: {checkpoint}")
    print(result.table())
    print(f"mean normalised entropy (label-free score): {result.mean_entropy:.4f}")
    if output is not None:
        write_json_atomic(output, {"checkpoint": str(checkpoint), "benchmark": cfg.benchmark,
                                   "split": cfg.data.val_split, "aspp_branches": cfg.model.aspp_branches,
                                   **result.to_dict()})
        print(f"wrote {output}")
    return 0


def _what_was_kept(args) -> str:
    """One line for Ctrl-C: what is on disk and how to go on (the course's commands:
    :func:`maxsq_lib.course.commands.what_was_kept`)."""
    if args.command in ("train-source", "adapt", "run"):
        return ("Kept: the run's last checkpoint (last.pt, every checkpoint_every iterations); run the "
                "same command with --resume to continue it exactly.")
    return "Nothing was written by the interrupted step."


def main(argv: list[str] | None = None) -> int:
    # Before torch starts: libgomp's spin-waiting made training steps several times slower on a
    # busy 2-core machine. An entry point's business, not an import's.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.root is not None:
        if not Path(args.root).is_dir():
            print(f"maxsq: error: --root {args.root}: no such folder", file=sys.stderr)
            return 2
        os.environ[ROOT_ENV] = str(Path(args.root).resolve())  # jobs and notebook kernels inherit it
    from .checkpoint import CheckpointError
    from .engine.runlock import RunLockedError
    from .engine.runs import RunExistsError
    from .engine.trainer import MissingInputError, TrainingDiverged

    known = (C.ConfigError, RunExistsError, MissingInputError, TrainingDiverged, FileNotFoundError,
             CheckpointError, RunLockedError)
    try:
        from .data import DatasetError

        known = known + (DatasetError,)
    except ImportError:
        pass
    from .course import commands as course

    handlers = {"prepare": _cmd_prepare, "data": _cmd_data, "run": _cmd_run, "evaluate": _cmd_evaluate,
                "train-source": lambda a: _cmd_train(a, "source"), "adapt": lambda a: _cmd_train(a, "adapt"),
                **course.HANDLERS}
    try:
        if getattr(args, "dry_run", False):  # train-source, adapt and course
            return course.dry_run(args, argv, resolve_from_args)
        if args.command in handlers:
            return handlers[args.command](args)
    except known as exc:
        print(f"maxsq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = course.what_was_kept(args) or _what_was_kept(args)
        print(f"maxsq {args.command}: interrupted. {kept}", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
