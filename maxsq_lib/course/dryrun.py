"""Dry runs: what a training command or the whole course needs, checked without training.

``maxsq train-source|adapt|course ... --dry-run`` resolves the configs the command would run and,
per benchmark, checks cheaply what those runs need:

* the datasets in their layouts (docs/authors_code.md §6.1): the dataset folder, the list file of
  each split (its entry count) and the files of its first :data:`SPOT_ENTRIES` entries, through
  the dataset classes of :mod:`maxsq_lib.data` (``check_files=False``), so the layouts are the
  loaders' own;
* the init checkpoint of source training and the source checkpoint each adaptation starts from
  (existence, and that the file looks like something ``torch.save`` wrote);
* the run folders (a finished or interrupted run that the command would refuse to overwrite);
* the costs of each stage: the GPU memory one iteration needs at fp32 and bf16, estimated from the
  parameter count and the activations a meta-device forward saves for the backward pass
  (:func:`maxsq_lib.course.costs.training_memory`), and the time per iteration once ``benchmarks/gpu_check.py`` has
  measured it on a GPU (:func:`~maxsq_lib.course.costs.measured_step`); ``/dev/shm`` against what the loader workers
  prefetch (:func:`~maxsq_lib.course.costs.prefetch_bytes`).

It prints what is present (✔), what the plan itself produces before it is needed (○, e.g. the
source model that the course trains before adapting from it), what is missing (✘) with the exact
expected path and a one-line hint, the key values of each resolved config with the path of its
``config.yaml`` (``--verbose``: the full YAML), and the commands to run on one GPU, on several
(``torchrun``) and as a notebook (``papermill``). The exit code is 1 when something required is
missing, else 0. Nothing is written, created or downloaded; reading every image and label is
``maxsq data check``. Relative paths mean what they mean to the command: the working directory
for ``train-source`` and ``adapt``, the project root for ``course`` (which moves there).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import checkpoint as ckpt
from .. import config as C
from .. import methods as method_registry
from .costs import cost_lines, human_bytes, prefetch_bytes

SPOT_ENTRIES = 3
"""List entries whose files the dry run looks for (the rest is ``maxsq data check``'s job)."""

AUTHORS_LIST_LINES: dict[tuple[str, str], int] = {
    ("gta5", "train"): 12_403, ("gta5", "val"): 6_382,
    ("synthia", "train"): 9_000, ("synthia", "val"): 400,
    ("cityscapes", "train"): 2_975, ("cityscapes", "val"): 500,
    ("nthu", "train"): 3_200, ("nthu", "val"): 100,
}
"""Entries of the authors' shipped split lists (docs/authors_code.md §6.2). The paper profile's
counts are shown next to them: another count usually means another split."""

MARKS = {"ok": "✔", "missing": "✘", "planned": "○", "warn": "⚠"}

INIT_CHECKPOINT_HINT = (
    "this is the DeepLab-v2 ResNet-101 init file of the DeepLab / AdaptSegNet release "
    "(MS-COCO pretrained, keys prefixed 'Scale.'); nothing is downloaded: put it at this path, "
    "or train from scratch with --init-checkpoint none (not the paper's recipe)")

DATA_SOURCES = {
    "gta5": "GTA5 ('Playing for Data', Richter et al. 2016; images and labels from "
            "download.visinf.tu-darmstadt.de/data/from_games/)",
    "synthia": "SYNTHIA-RAND-CITYSCAPES (synthia-dataset.net)",
    "cityscapes": "Cityscapes (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                  "www.cityscapes-dataset.com)",
    "nthu": "the NTHU cross-city dataset (Chen et al. 2017, 'No More Discrimination'; from its "
            "authors)",
}
"""Where each real dataset comes from, for the hints."""

_MINICITY_PROFILES = C.MINICITY_PROFILES


# --------------------------------------------------------------------------------------------
# What was found


@dataclass
class Item:
    """One thing a plan needs and what the dry run found.

    Args:
        status: ``"ok"`` (present), ``"missing"``, ``"planned"`` (produced by the plan before it
            is needed) or ``"warn"`` (present, but worth a look).
        what: a short name (``"GTA5 train list"``, ``"init checkpoint"``).
        path: the exact expected path, as the command would use it.
        detail: what was found, or why it counts as missing.
        hint: how to get it (missing items).
        used_by: the runs or roles that need it.
        required: whether a missing item makes the dry run fail.
    """

    status: str
    what: str
    path: str
    detail: str = ""
    hint: str = ""
    used_by: list[str] = field(default_factory=list)
    required: bool = True

    @property
    def blocking(self) -> bool:
        """Missing, and needed by what the command would run."""
        return self.status == "missing" and self.required


@dataclass
class PlannedRun:
    """One training run of the plan: its command, resolved config and folder."""

    name: str
    stage: str
    cfg: C.RunConfig
    run_dir: Path
    argv: list[str]
    state: Item | None = None


@dataclass
class BenchmarkReport:
    """Everything the dry run says about one benchmark."""

    benchmark: str
    in_plan: bool = True
    data: dict[tuple, Item] = field(default_factory=dict)
    checkpoints: dict[str, Item] = field(default_factory=dict)
    runs: list[PlannedRun] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    multi_gpu: list[str] = field(default_factory=list)
    notebook: str | None = None

    def items(self) -> list[Item]:
        states = [r.state for r in self.runs if r.state is not None]
        return [*self.data.values(), *self.checkpoints.values(), *states]


@dataclass
class DryRunReport:
    """The result of a dry run; :meth:`format` is what the command prints.

    Args:
        command: ``"train-source"``, ``"adapt"`` or ``"course"``.
        profile: the profile.
        base: the folder the command runs in (relative paths mean paths under it).
        header: lines printed first (where paths are resolved, data and runs roots).
        general: items that belong to no benchmark (notebooks, papermill, the device).
        benchmarks: per-benchmark reports, in the profile's order.
        footer: closing lines (the whole-course command).
    """

    command: str
    profile: str
    base: Path = Path(".")
    header: list[str] = field(default_factory=list)
    general: list[Item] = field(default_factory=list)
    benchmarks: list[BenchmarkReport] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[Item]:
        """Required items that are missing (each path once)."""
        items = [*self.general, *(i for b in self.benchmarks for i in b.items())]
        seen, out = set(), []
        for item in items:
            if item.blocking and (item.what, item.path) not in seen:
                seen.add((item.what, item.path))
                out.append(item)
        return out

    @property
    def ok(self) -> bool:
        return not self.missing

    def format(self, verbose: bool = False) -> str:
        """The report as text; ``verbose`` adds each run's full resolved config."""
        lines = list(self.header)
        lines += [_item_line(item, "  ") for item in self.general]
        for bench in self.benchmarks:
            lines += [""] + _format_benchmark(bench, verbose, self.base)
        lines += [""] + self.footer if self.footer else []
        missing = self.missing
        lines.append("")
        if missing:
            lines.append(f"Result: {len(missing)} required item(s) missing (exit code 1):")
            lines += [f"  {MARKS['missing']} {item.path}  ({item.what})" for item in missing]
        else:
            lines.append("Result: everything the command needs is present (exit code 0).")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Checks of single things


def inspect_checkpoint_file(path: str | os.PathLike) -> tuple[bool, str]:
    """Whether a file is a weight file the run can read, by the runs' own reader
    (:func:`maxsq_lib.checkpoint.read_weights`, tensors mapped from disk, not read).

    Args:
        path: the checkpoint file.
    Returns:
        ``(usable, description)``: e.g. ``(True, "the authors' training checkpoint (...), 170.1 MB")``
        or ``(False, "not found")``.
    """
    path = Path(path)
    if not path.is_file():
        return False, "not found" if not path.exists() else "not a file"
    try:
        wf = ckpt.read_weights(path, lazy=True)
    except ckpt.CheckpointError as exc:
        return False, str(exc).removeprefix(f"{path}: ")
    return True, f"{ckpt.WEIGHT_FORMATS[wf.format]}, {path.stat().st_size / 1e6:.1f} MB"


class _Paths:
    """Resolves configured paths the way the command would and shows them exactly.

    A relative path stays as configured when the command runs in ``base``; otherwise it is
    shown (and checked) as ``base / path``.
    """

    def __init__(self, base: Path):
        self.base = base.resolve()
        self.base_is_cwd = self.base == Path.cwd().resolve()

    def at(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        return path if path.is_absolute() or self.base_is_cwd else self.base / path


def _list_hint(name: str, root: Path, list_file: Path, city: str | None, profile: str) -> str:
    if profile in _MINICITY_PROFILES:
        return f"generate MiniCity: maxsq prepare minicity --profile {profile} --data-root {root}"
    if name == "gta5":
        return (f"maxsq prepare lists gta5 --data-root {root} --split-file split.mat (split.mat "
                f"from the GTA5 site gives train/val/test; without it only all.txt), or copy the "
                f"authors' gta5_list/*.txt into {list_file.parent}/")
    if name == "nthu":
        return (f"maxsq prepare lists nthu --city {city} --data-root {root}, or copy the authors' "
                f"NTHU_list/{city}/List/*.txt into {list_file.parent}/")
    authors = {"synthia": "synthia_list", "cityscapes": "city_list"}[name]
    return (f"maxsq prepare lists {name} --data-root {root}, or copy the authors' "
            f"{authors}/*.txt into {list_file.parent}/")


def _folder_hint(name: str, folder: Path, list_hint: str, profile: str) -> str:
    if profile in _MINICITY_PROFILES:
        return list_hint
    return (f"get {DATA_SOURCES[name]} and unpack it into {folder}/ (layout: README, 'Data and "
            f"checkpoints'); then the lists: {list_hint}")


def check_dataset_split(name: str, root: str | os.PathLike, split: str, *, city: str | None = None,
                        num_classes: int = 19, profile: str = "paper",
                        spot: int = SPOT_ENTRIES) -> Item:
    """Check one split of a dataset cheaply: folder, list file, entry count, first entries' files.

    Args:
        name: ``"gta5"``, ``"synthia"``, ``"cityscapes"`` or ``"nthu"``.
        root: the datasets root, as the command would use it.
        split: the split (list name; NTHU ``val`` reads ``test.txt``).
        city: NTHU city.
        num_classes: the class set of the run (only needs to be a valid one).
        profile: decides the hints (MiniCity is generated, real datasets are brought).
        spot: how many leading entries to look for on disk.
    Returns:
        an :class:`Item` whose ``path`` is the list file.
    """
    from ..data import DATASETS, NTHU, DatasetError, get_dataset

    cls = DATASETS[name]
    root = Path(root)
    what = f"{cls.title}{' ' + city if city else ''} {split} list"
    probe = cls.__new__(cls)  # only the layout helpers (root, folder, city), nothing is read
    probe.root = root
    if cls is NTHU:
        try:
            probe.city = NTHU.resolve_city(root, city or "Rome")
        except DatasetError as err:
            return Item("missing", what, str(root / NTHU.folder / str(city)), str(err))
    list_file = probe.list_path(split)
    list_hint = _list_hint(name, root, list_file, getattr(probe, "city", None), profile)
    folder_hint = _folder_hint(name, probe.dataset_dir, list_hint, profile)
    if not root.is_dir():
        return Item("missing", what, str(list_file), f"data root not found: {root}", folder_hint)
    if not probe.dataset_dir.is_dir():
        return Item("missing", what, str(list_file),
                    f"{cls.title} folder not found: {probe.dataset_dir}", folder_hint)
    if not list_file.is_file():
        found = probe.available_splits()
        return Item("missing", what, str(list_file),
                    f"list file not found (lists there: {', '.join(found) or 'none'})", list_hint)
    kwargs = {"city": probe.city} if cls is NTHU else {}
    try:
        dataset = get_dataset(name, root=root, split=split, num_classes=num_classes,
                              check_files=False, **kwargs)
    except DatasetError as err:
        return Item("missing", what, str(list_file), str(err).splitlines()[0], list_hint)
    head = dataset.samples[:spot]
    absent = [p for s in head for p in (s.image, s.label) if p is not None and not p.is_file()]
    if absent:
        return Item("missing", what, str(list_file),
                    f"{_entries(len(dataset))}, but {_first(len(head))} files are missing: "
                    f"{', '.join(str(p) for p in absent[:3])}",
                    f"check the layout, then: maxsq data check {name} --data-root {root}")
    detail = f"{_entries(len(dataset))}; {_first(len(head))} files exist"
    status = "ok"
    expected = AUTHORS_LIST_LINES.get((name, "val" if split == "test" and name == "nthu" else split))
    if profile == "paper" and expected is not None:
        if len(dataset) == expected:
            detail += f" (the authors' list has {expected:,} too)"
        else:
            status = "warn"
            detail += f"; the authors' list has {expected:,} (another split?)"
    return Item(status, what, str(list_file), detail)


def _entries(n: int) -> str:
    return f"{n:,} entr{'y' if n == 1 else 'ies'}"


def _first(n: int) -> str:
    return "the first entry's" if n == 1 else f"the first {n} entries'"


def check_checkpoint(what: str, path: Path, hint: str) -> Item:
    """An :class:`Item` for a checkpoint file that must exist (see :func:`inspect_checkpoint_file`)."""
    usable, detail = inspect_checkpoint_file(path)
    return Item("ok" if usable else "missing", what, str(path), detail, "" if usable else hint)


# --------------------------------------------------------------------------------------------
# Plans: the runs a command would train


def _course_runs(args) -> tuple[list[PlannedRun], set[str], str]:
    """The runs ``maxsq course`` would train, then the five-method table of each benchmark it does
    not train; returns ``(runs, benchmarks the course trains, data root)``."""
    from .plans import plan_jobs
    from .runner import ADAPT_METHODS, plan_course_jobs

    overrides = {"data": {"root": args.data_root}} if args.data_root else None
    data_root = C.resolve(args.profile, overrides=overrides).data.root
    seeds = list(range(args.seeds))
    jobs = plan_course_jobs(args.profile, args.runs, args.data_root, seeds, args.device)
    in_course = {j.config.benchmark for j in jobs}
    for bench in C.benchmarks_of(args.profile):
        if bench not in in_course:
            jobs += plan_jobs(args.profile, bench, seeds[:1], ADAPT_METHODS, runs=args.runs,
                              data_root=args.data_root, device=args.device)
    return [_planned(j.config, j.stage, j.command) for j in jobs], in_course, data_root


def _planned(cfg: C.RunConfig, stage: str, command: list[str]) -> PlannedRun:
    from ..engine.runs import run_name
    from ..engine.build import run_dir_for

    return PlannedRun(f"{run_name(cfg, stage)} seed{cfg.seed}", stage, cfg, run_dir_for(cfg, stage),
                      list(command))


# --------------------------------------------------------------------------------------------
# Checking a plan


def _data_needs(cfg: C.RunConfig, stage: str) -> list[tuple[str, str, str]]:
    """``(role, dataset, split)`` a run reads (the engine's ``build_dataset`` roles)."""
    d = cfg.data
    needs = [("source training", d.source, d.source_split)]
    if stage == "source" and d.source_val_split:
        needs.append(("source val", d.source, d.source_val_split))
    if stage == "adapt":
        needs.append(("adaptation target", d.target, d.target_split))
    needs.append(("evaluation", d.target, d.val_split))
    return needs


_ROLE_ORDER = ("source training", "source val", "adaptation target", "evaluation")


def _run_state(run: PlannedRun, paths: _Paths, course: bool, args, keep_data_root: bool) -> Item:
    from ..engine.runs import FINISHED_MARKER, is_finished

    run_dir = paths.at(run.run_dir)
    shown = str(run_dir / "config.yaml")
    if course:
        if is_finished(run_dir):
            return Item("ok", run.name, shown, "finished run: reused, not trained again")
        if (run_dir / FINISHED_MARKER).is_file() or (run_dir / "last.pt").is_file():
            resume = "maxsq " + shlex.join(run.argv + ["--resume"])
            return Item("missing", run.name, str(run_dir),
                        "holds an unfinished or incomplete run: the course starts runs without "
                        "--resume or --overwrite and would stop here",
                        f"finish it with `{resume}`, or remove the folder")
        return Item("planned", run.name, shown, "to train")
    overwrite, resume = getattr(args, "overwrite", False), getattr(args, "resume", False)
    if (run_dir / FINISHED_MARKER).is_file() and not overwrite:
        return Item("missing", run.name, str(run_dir), "already holds a finished run (refused)",
                    "pass --overwrite to replace it, or use another --runs folder or --tag")
    if (run_dir / "last.pt").is_file() and not (resume or overwrite):
        return Item("missing", run.name, str(run_dir), "holds an unfinished run (last.pt) (refused)",
                    "pass --resume to continue it, or --overwrite to start again")
    if resume and (run_dir / "last.pt").is_file():
        return Item("planned", run.name, shown, "resumes from last.pt")
    replacing = " (replacing the old outputs)" if overwrite else ""
    return Item("planned", run.name, shown, "to train" + replacing)


def _source_train_argv(run: PlannedRun, owner: str, keep_data_root: bool) -> list[str]:
    c = run.cfg
    argv = ["train-source", "--profile", c.profile, "--benchmark", owner]
    if c.source.multi:
        argv += ["--multi", "true"]
    if c.runs_root != "runs":
        argv += ["--runs", c.runs_root]
    if c.seed:
        argv += ["--seed", str(c.seed)]
    if keep_data_root:
        argv += ["--data-root", c.data.root]
    return argv


def _check_checkpoints(run: PlannedRun, bench: BenchmarkReport, paths: _Paths,
                       planned_dirs: dict[Path, str], keep_data_root: bool) -> list[str]:
    """Add the run's checkpoint needs to ``bench``; returns commands that would produce missing
    source models."""
    from ..engine.runs import source_run_dir

    c = run.cfg
    extra_commands: list[str] = []
    if run.stage == "source":
        if not c.source.init_checkpoint:
            key = "init: none"
            item = bench.checkpoints.setdefault(key, Item(
                "ok", "init checkpoint", "none", "trains from scratch (the profile's "
                "source.init_checkpoint is null)"))
        else:
            path = paths.at(c.source.init_checkpoint)
            item = bench.checkpoints.setdefault(str(path), check_checkpoint(
                "init checkpoint", path, INIT_CHECKPOINT_HINT))
        item.used_by.append(run.name)
        return extra_commands
    explicit = c.adapt.source_checkpoint
    src_dir = paths.at(source_run_dir(c))
    path = paths.at(explicit) if explicit else src_dir / "final.pt"
    if str(path) not in bench.checkpoints:
        item = check_checkpoint("source checkpoint", path, "")
        if item.status == "missing" and not explicit:
            owner = c.source_benchmark or c.benchmark
            if src_dir in planned_dirs:
                item = Item("planned", "source checkpoint", str(path),
                            f"written by this plan's run '{planned_dirs[src_dir]}'")
            else:
                train = "maxsq " + shlex.join(_source_train_argv(run, owner, keep_data_root))
                item.detail += ", and no run of this plan trains it"
                item.hint = (f"train it first: {train}; or start from another file with "
                             f"--source-checkpoint FILE (ours or the authors' released .pth)")
                extra_commands.append(train)
        elif item.status == "missing":
            item.hint = "check the --source-checkpoint path"
        bench.checkpoints[str(path)] = item
    bench.checkpoints[str(path)].used_by.append(run.name)
    return extra_commands


def _check_run(run: PlannedRun, bench: BenchmarkReport, paths: _Paths, cache: dict,
               planned_dirs: dict[Path, str], course: bool, args, keep_data_root: bool) -> list[str]:
    run.state = _run_state(run, paths, course, args, keep_data_root)
    run.state.required = bench.in_plan
    c = run.cfg
    root = paths.at(c.data.root)
    for role, name, split in _data_needs(c, run.stage):
        city = c.data.city if name == "nthu" else None
        key = (name, str(root), split, city)
        if key not in cache:
            cache[key] = check_dataset_split(name, root, split, city=city,
                                             num_classes=c.data.num_classes, profile=c.profile)
        if key not in bench.data:
            found = cache[key]
            bench.data[key] = Item(found.status, found.what, found.path, found.detail, found.hint)
        if role not in bench.data[key].used_by:
            bench.data[key].used_by.append(role)
    reused = course and run.state.status == "ok"
    return [] if reused else _check_checkpoints(run, bench, paths, planned_dirs, keep_data_root)


# --------------------------------------------------------------------------------------------
# Commands


def _papermill(cfg: C.RunConfig, stage: str, first_benchmark: str, args, base: Path) -> str:
    """The papermill command of one notebook execution, as ``maxsq course`` names it. Notebooks
    move to the project root, so paths relative to another working folder are made absolute."""
    from .notebook import project_root

    def where(path: str) -> str:
        return path if Path(path).is_absolute() or base == project_root() else str(base / path)

    runs_root, data_root = where(cfg.runs_root), where(cfg.data.root)
    if stage == "source":
        notebook, output, params = "02_source_pretraining", "02_source_pretraining", {}
    elif cfg.data.target == "nthu":
        notebook, output = "06_cross_city", f"06_cross_city-{cfg.data.city}"
        params = {"city": cfg.data.city}
    else:
        method = cfg.adapt.method
        notebook, output, params = "04_adaptation", f"04_adaptation-{method}", {"method": method}
        if cfg.benchmark != first_benchmark:
            params = {"benchmark": cfg.benchmark, **params}
    out = Path(runs_root) / cfg.profile / "notebooks" / f"{output}.ipynb"
    params = {"profile": cfg.profile, **params}
    if runs_root != "runs":
        params["runs_root"] = runs_root
    if getattr(args, "data_root", None) or data_root != cfg.data.root:
        params["data_root"] = data_root
    if cfg.seed:
        params["seed"] = cfg.seed
    if getattr(args, "device", None):
        params["device"] = args.device
    flags = [part for key, value in params.items() for part in ("-p", key, str(value))]
    return "papermill " + shlex.join([f"notebooks/{notebook}.ipynb", str(out), *flags])


def _fill_commands(bench: BenchmarkReport, extra: list[str], first_seed: int, first_benchmark: str,
                   course: bool, args, base: Path) -> None:
    runs = [r for r in bench.runs if r.cfg.seed == first_seed]
    argvs = [r.argv for r in runs]
    commands = ["maxsq " + shlex.join(a) for a in argvs]
    sources = sum(1 for a in argvs if a[0] == "train-source")
    # the source models no run of the plan trains go after the ones it does, before adapting
    bench.commands = list(dict.fromkeys(commands[:sources] + extra + commands[sources:]))
    examples = [a for a in argvs if a[0] == "train-source"][:1]
    adapts = [a for a in argvs if a[0] == "adapt"]
    examples += [a for a in adapts if "maxsquare" in a and "--tag" not in a][:1] or adapts[:1]
    bench.multi_gpu = ["torchrun --nproc_per_node=N -m maxsq_lib " + shlex.join(a) for a in examples]
    row = next((r for r in runs if r.stage == "adapt" and r.cfg.adapt.method == "maxsquare"
                and not r.cfg.tag), runs[0] if runs else None)
    if row is not None:
        bench.notebook = _papermill(row.cfg, row.stage, first_benchmark, args, base)


# --------------------------------------------------------------------------------------------
# Formatting


def _size(wh) -> str:
    return f"{wh[0]}×{wh[1]}"


def _optim(o: C.OptimConfig) -> str:
    name = "SGD" if o.name == "sgd" else o.name.capitalize()
    text = f"{name} lr {o.lr:.1e} (heads ×{o.head_lr_mult:g})"
    if o.name == "sgd":
        text += f", momentum {o.momentum:g}"
    return text + f", wd {o.weight_decay:g}, poly {o.poly_power:g}"


def config_summary(cfg: C.RunConfig, stage: str) -> str:
    """The key values of a resolved run config, on one line.

    Args:
        cfg: the resolved config.
        stage: ``"source"`` or ``"adapt"``.
    Returns:
        iterations and schedule, batch, optimiser, λ values, sizes (W×H).
    """
    d = cfg.data
    if stage == "source":
        s = cfg.source
        init = s.init_checkpoint or "none (from scratch)"
        aux = f"on, λ_seg {s.lambda_seg:g}" if s.multi else "off"
        return (f"{s.iterations:,} iterations (poly horizon {s.schedule_horizon:,}), batch "
                f"{s.batch_size}; {_optim(s.optim)}; aux head {aux}; "
                f"source {_size(d.source_size)}, val {_size(d.val_size)}; init {init}")
    a = cfg.adapt
    text = (f"{a.iterations:,} iterations (poly horizon {a.schedule_horizon:,}), batch "
            f"{a.batch_size}+{a.target_batch_size}; {_optim(a.optim)}; λ_T {a.lambda_target:g}")
    row = method_registry.get_method(a.method)
    if row.uses_aux:
        text += f", λ_seg {a.lambda_seg:g}"
    if row.pseudo_labels is not None:
        text += f", threshold {a.threshold:g}"
    if "iw" in a.method:
        text += f", IW α {a.iw_ratio:g}"
    if a.match_gradient_to:
        text += f" (matched to {a.match_gradient_to}'s initial logit-gradient norm at run time)"
    return (text + f"; BN {a.bn_mode}; source {_size(d.source_size)}, target "
            f"{_size(d.target_size)}, val {_size(d.val_size)}")


def _item_line(item: Item, indent: str) -> str:
    line = f"{indent}{MARKS[item.status]} {item.what}: {item.path}"
    if item.detail:
        line += f"\n{indent}    {item.detail}"
    if item.used_by:
        line += f" · for {', '.join(item.used_by)}"
    if item.hint and item.status == "missing":
        line += f"\n{indent}    hint: {item.hint}"
    return line


def _format_benchmark(bench: BenchmarkReport, verbose: bool, base: Path) -> list[str]:
    first = bench.runs[0].cfg
    d = first.data
    from ..labels import class_set_for

    target = f"{d.target}/{d.city}" if d.city else d.target
    title = (f"== {bench.benchmark}: {d.source} → {target}, {d.num_classes} classes "
             f"({class_set_for(d.num_classes).name}) ==")
    lines = [title]
    if not bench.in_plan:
        lines.append("   not trained by `maxsq course` (it trains the profile's first benchmark and "
                     "the cross-city ones): shown for completeness, does not change the exit code")
    lines.append(f"data (root {d.root})")
    data = sorted(bench.data.values(), key=lambda i: _ROLE_ORDER.index(i.used_by[0]))
    lines += [_item_line(i, "  ") for i in data]
    lines.append("checkpoints")
    lines += [_item_line(i, "  ") for i in bench.checkpoints.values()]
    lines.append("runs (each writes its resolved config to the config.yaml shown)")
    shown_configs: set[str] = set()
    for run in bench.runs:
        state = run.state
        lines.append(f"  {MARKS[state.status]} {state.what} ({state.detail}): {state.path}")
        if state.hint and state.status == "missing":
            lines.append(f"      hint: {state.hint}")
        kind = run.name.rsplit(" seed", 1)[0]
        if kind not in shown_configs:
            shown_configs.add(kind)
            lines.append(f"      config: {config_summary(run.cfg, run.stage)}")
            lines += cost_lines(run.cfg, run.stage)
            if verbose:
                text = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False).rstrip()
                lines += ["        " + t for t in text.splitlines()]
    e = first.eval
    lines.append(f"  all runs: model {first.model.preset} ({first.model.aspp_branches} ASPP branches), "
                 f"evaluation every {e.every:,} iterations, flip {'on' if e.flip else 'off'}; "
                 f"device {first.device}, amp {first.amp}, seed(s) "
                 f"{', '.join(sorted({str(r.cfg.seed) for r in bench.runs}))}")
    lines.append(f"  ASPP branches by starting point: the DeepLab init file or from scratch → "
                 f"{first.model.aspp_branches} (the profile's; new heads); the authors' released "
                 f"checkpoints → 2 (their heads sum two; followed unless --aspp-branches); a maxsq "
                 f"checkpoint → the value in its config")
    lines.append(f"commands, one GPU (run from {base}):")
    lines += [f"  {c}" for c in bench.commands]
    lines.append("several GPUs (batch sizes are per process: N processes train with N× the "
                 "configured batch):")
    lines += [f"  {c}" for c in bench.multi_gpu]
    lines.append("  (any command above runs this way: replace `maxsq` by "
                 "`torchrun --nproc_per_node=N -m maxsq_lib`)")
    if bench.notebook:
        lines.append("one table row as an executed notebook (from the project root):")
        lines.append(f"  {bench.notebook}")
    return lines


# --------------------------------------------------------------------------------------------
# Entry points


def _general_items(command: str, profile: str, runs: list[PlannedRun], paths: _Paths,
                   data_root: str, generated_by_course: bool) -> list[Item]:
    items = []
    if command == "course":
        import importlib.util

        from .notebook import project_root
        from .runner import notebook_plan

        folder = project_root() / "notebooks"
        names = list(dict.fromkeys(nb.notebook for nb in notebook_plan(profile)))
        absent = [n for n in names if not (folder / f"{n}.ipynb").is_file()]
        items.append(Item("missing" if absent else "ok", "notebooks", str(folder),
                          f"missing: {', '.join(absent)}" if absent else
                          f"{len(names)} notebooks found", "restore them from the repository"))
        has_pm = importlib.util.find_spec("papermill") is not None
        items.append(Item("ok" if has_pm else "missing", "papermill", "python package",
                          "installed" if has_pm else "not installed",
                          "pip install -e '.[course]' (make venv)"))
        if generated_by_course:
            items.append(Item("planned", "MiniCity data", str(paths.at(data_root)),
                              "written by the course's first step (maxsq prepare minicity; "
                              "a complete folder is left alone)"))
    need = max((prefetch_bytes(r.cfg, r.stage) for r in runs), default=0)
    shm = Path("/dev/shm")
    if need and shm.is_dir():
        import shutil

        have = shutil.disk_usage(shm).total
        if have < need:
            items.append(Item("warn", "shared memory", str(shm),
                              f"{human_bytes(have)}, less than the {human_bytes(need)} the loader "
                              f"workers prefetch (data.workers × 4 batches × batch bytes): workers may "
                              f"crash; enlarge it (docker run --shm-size) or lower data.workers",
                              required=False))
    devices = {r.cfg.device for r in runs}
    if profile == "paper" and devices & {"auto", "cuda"} or any(d.startswith("cuda") for d in devices):
        import torch

        if not torch.cuda.is_available():
            items.append(Item("warn", "device", ", ".join(sorted(devices)),
                              "no CUDA device visible on this machine: 'auto' would train on the "
                              "CPU (days per run at paper scale), 'cuda' would stop",
                              required=False))
    return items


def plan_dry_run(args, command: str, base: str | os.PathLike | None = None,
                 cfg: C.RunConfig | None = None, shown: list[str] | None = None) -> DryRunReport:
    """Check what ``maxsq <command>`` with these arguments would need (see the module docstring).

    Args:
        args: the parsed command line of ``train-source``, ``adapt`` or ``course``.
        command: ``"train-source"``, ``"adapt"`` or ``"course"``.
        base: the folder relative paths are resolved against (default: the working directory,
            or the project root for ``course``, which moves there before it starts).
        cfg: for ``train-source`` / ``adapt``: the config the command resolved.
        shown: for ``train-source`` / ``adapt``: the command as it is shown (without --dry-run).
    Returns:
        the :class:`DryRunReport` (nothing is written).
    """
    from .notebook import project_root

    course = command == "course"
    if base is None:
        base = project_root()  # every command resolves relative folders there (maxsq_lib.files)
    paths = _Paths(Path(base))
    keep_data_root = bool(getattr(args, "data_root", None))
    if course:
        runs, in_course, data_root = _course_runs(args)
        seeds = list(range(args.seeds))
    else:
        if cfg is None or shown is None:
            raise ValueError("a train-source / adapt dry run needs the resolved cfg and the shown command")
        stage = "source" if command == "train-source" else "adapt"
        runs = [_planned(cfg, stage, shown)]
        in_course, data_root, seeds = {cfg.benchmark}, cfg.data.root, [cfg.seed]
    generated = course and args.profile in _MINICITY_PROFILES
    report = DryRunReport(command, args.profile, paths.base)
    where = ("relative paths are relative to it" if paths.base_is_cwd else
             "not this process's folder: relative paths below are shown under it")
    shown_argv = ["course", "--profile", args.profile] if course else runs[0].argv
    report.header = [
        f"maxsq {shlex.join(shown_argv)} --dry-run: checks only (nothing is trained, written or "
        f"downloaded; `maxsq data check` reads every image)",
        f"  working folder of the command: {paths.base} ({where})",
        f"  data root: {paths.at(data_root)}   runs: {paths.at(args.runs)}",
    ]
    report.general = _general_items(command, args.profile, runs, paths, data_root, generated)
    order = C.benchmarks_of(args.profile)
    benches: dict[str, BenchmarkReport] = {}
    for run in runs:
        bench = run.cfg.benchmark
        benches.setdefault(bench, BenchmarkReport(bench, in_plan=bench in in_course))
        benches[bench].runs.append(run)
    planned_dirs = {paths.at(r.run_dir): f"{r.cfg.benchmark}: {r.name}" for r in runs}
    cache: dict = {}
    for bench_name in sorted(benches, key=order.index):
        bench = benches[bench_name]
        extra: list[str] = []
        for run in bench.runs:
            extra += _check_run(run, bench, paths, cache, planned_dirs, course, args, keep_data_root)
        for item in bench.items():
            item.required = bench.in_plan
            if generated and item.status == "missing" and item.what.endswith(" list"):
                item.status, item.detail = "planned", item.detail + "; generated by the course"
        _fill_commands(bench, extra, seeds[0], order[0], course, args, paths.base)
        report.benchmarks.append(bench)
    if course:
        course_cmd = ["course", "--profile", args.profile]
        if args.data_root:
            course_cmd += ["--data-root", args.data_root]
        if args.runs != "runs":
            course_cmd += ["--runs", args.runs]
        if args.seeds != 1:
            course_cmd += ["--seeds", str(args.seeds)]
        report.footer = ["the whole course (training runs, then the notebooks into "
                         f"{Path(args.runs) / args.profile / 'notebooks'}/ and their HTML copies "
                         f"into {Path(args.runs) / args.profile / 'html'}/, then the figures):",
                         "  maxsq " + shlex.join(course_cmd)]
    return report


def _print(text: str) -> None:
    try:
        print(text)
    except UnicodeEncodeError:  # a terminal that cannot show the marks
        ascii_marks = {"✔": "[ok]", "✘": "[MISSING]", "○": "[planned]", "⚠": "[!]", "→": "->",
                       "×": "x", "λ": "lambda", "α": "alpha", "·": "-"}
        for mark, plain in ascii_marks.items():
            text = text.replace(mark, plain)
        print(text.encode("ascii", "replace").decode("ascii"))


def print_report(report: DryRunReport, verbose: bool = False) -> None:
    """Print a dry run's report (``verbose``: the full resolved configs)."""
    _print(report.format(verbose=verbose))
