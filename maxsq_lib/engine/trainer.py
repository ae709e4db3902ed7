"""The one training loop: source pretraining and adaptation.

Per iteration (docs/authors_code.md §5.1): set the poly learning rate; source forward, cross-entropy
(+ λ_seg·CE on the aux head for multi-level runs), backward; in adaptation, target forward with
BatchNorm in train mode (or frozen, an option) and the strategy's target loss, backward; one
optimizer step. Methods differ only by their :class:`~maxsq_lib.engine.strategies.TargetStrategy`.

Each run lives in ``<runs>/<profile>/<benchmark>/<run name>/seed<k>/`` and holds ``config.yaml``
(the resolved config), ``last.pt`` (everything needed to resume), ``final.pt`` and ``best.pt``
(model weights), ``metrics.json`` (evaluations, training log, timing), ``train.log`` and
TensorBoard files under ``tb/``. Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from .. import config as config_mod
from .. import losses
from ..labels import class_set_for
from ..models import unwrap_model
from ..optim import set_poly_lr
from . import distributed as distm
from .adabn import reestimate_batchnorm, statistics_images
from .build import (build_dataset, build_model, build_optimizer_for, eval_subsets, peak_rss_mb, provenance,
                    resolve_device, run_dir_for, seed_everything, start_file)
from .evaluation import EvalResult, evaluate
from .precision import autocast, resolve_amp
from .probe import AdaptationProbe
from .runlock import run_lock
from .runs import (FINISHED_MARKER, RunExistsError, check_reusable, config_mismatches, is_finished,
                   read_metrics, run_name, write_json_atomic)
from .sampling import StreamBatchSampler, StreamDataset, loader_options
from .strategies import TargetStrategy, logit_gradient_norm, strategy_from_config


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint was kept."""


class MissingInputError(FileNotFoundError):
    """A checkpoint or dataset the run needs is not on disk; the message names the path."""


def _stream_loader(dataset, cfg, batch_size: int, start: int, stop: int, dist, device):
    sampler = StreamBatchSampler(batch_size, start, stop, dist.rank, dist.world)
    return DataLoader(StreamDataset(dataset, seed=dataset.seed), batch_sampler=sampler,
                      **loader_options(cfg.data.workers, device))


def _set_train_mode(model: torch.nn.Module, bn_mode: str) -> None:
    """Train mode; with ``bn_mode`` ``eval`` or ``frozen`` BatchNorm layers stay in eval mode
    (running statistics fixed); ``frozen`` also takes their affine parameters out of training."""
    model.train()
    if bn_mode == "train":
        return
    for module in unwrap_model(model).modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            if bn_mode == "frozen":
                for p in module.parameters():
                    p.requires_grad_(False)


# ----------------------------------------------------------------------------------- λ matching

@torch.no_grad()
def _target_logits(model, dataset, cfg, device, batches: int):
    model.eval()
    out = []
    loader = DataLoader(dataset, batch_size=cfg.adapt.target_batch_size, shuffle=False)
    for i, (images, _labels, _names) in enumerate(loader):
        if i >= batches:
            break
        main, aux = model(images.to(device))
        out.append((main.float(), aux.float()))
    model.train()
    return out


def matched_lambda(model, target_dataset, cfg, device) -> dict:
    """λ_T for ``cfg.adapt.method`` that matches the reference method's logit-gradient norm.

    The norm of ∂L/∂logits of each unweighted loss is measured on the source model's predictions
    for the first ``match_gradient_batches`` target batches; λ = λ_ref · |g_ref| / |g_method|,
    where λ_ref is ``match_gradient_lambda`` (default: ``lambda_target``), the reference's λ.

    Returns:
        ``{"lambda_target", "reference", "reference_lambda", "gradient_norm",
        "reference_gradient_norm"}``.
    """
    a = cfg.adapt
    reference_lambda = a.match_gradient_lambda if a.match_gradient_lambda is not None else a.lambda_target
    this = strategy_from_config(a)
    ref = strategy_from_config(dataclasses.replace(a, method=a.match_gradient_to), reference_lambda)
    pairs = _target_logits(model, target_dataset, cfg, device, a.match_gradient_batches)
    g_this = float(sum(logit_gradient_norm(this, m, x) for m, x in pairs) / len(pairs))
    g_ref = float(sum(logit_gradient_norm(ref, m, x) for m, x in pairs) / len(pairs))
    return {"lambda_target": reference_lambda * g_ref / g_this, "reference": a.match_gradient_to,
            "reference_lambda": reference_lambda, "gradient_norm": g_this, "reference_gradient_norm": g_ref}


# ----------------------------------------------------------------------------------- the loop

@dataclass
class StagePlan:
    """What a stage trains: iterations, schedule, batch sizes, strategy (None = source only)."""

    stage: str
    iterations: int
    horizon: int
    batch_size: int
    target_batch_size: int
    optim: config_mod.OptimConfig
    strategy: TargetStrategy | None
    source_aux: bool
    lambda_seg: float
    lambda_target: float | None = None
    """λ_T the strategy applies: the configured one, or a matched-gradient run's measured one."""


def plan_for(cfg: config_mod.RunConfig, stage: str, lambda_target: float | None = None) -> StagePlan:
    """What a stage trains; ``lambda_target`` is a measured λ_T that replaces the configured one
    (the config itself is never changed, so ``config.yaml`` keeps what was asked for)."""
    if stage == "source":
        s = cfg.source
        return StagePlan("source", s.iterations, s.schedule_horizon, s.batch_size, 0, s.optim,
                         None, s.multi, s.lambda_seg)
    a = cfg.adapt
    lam = a.lambda_target if lambda_target is None else lambda_target
    strategy = strategy_from_config(a, lam)
    return StagePlan("adapt", a.iterations, a.schedule_horizon, a.batch_size, a.target_batch_size,
                     a.optim, strategy, strategy.uses_aux, a.lambda_seg, lam)


def train(cfg: config_mod.RunConfig, stage: str, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, wait_for_lock: bool = False) -> dict:
    """Train one stage and evaluate it; returns the metrics written to ``metrics.json``.

    Args:
        cfg: the resolved run config.
        stage: ``"source"`` (source pretraining) or ``"adapt"`` (``cfg.adapt.method``).
        resume: continue from ``last.pt`` of this run (exactly: model, optimizer, step, RNG,
            data order).
        overwrite: allow replacing a finished run's outputs (otherwise an error).
        progress: tqdm bars.
        wait_for_lock: when another process is writing this run folder
            (:mod:`maxsq_lib.engine.runlock`), wait for it instead of raising
            :class:`~maxsq_lib.engine.runlock.RunLockedError`; if it finished this very run, its
            metrics are returned (after the reuse check) rather than training it again.
    Returns:
        the metrics dict.
    """
    if stage not in ("source", "adapt"):
        raise ValueError(f"stage must be 'source' or 'adapt', got {stage!r}")
    device = resolve_device(cfg.device)
    dist = distm.init_from_env(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(cfg, stage, device, dist, resume=resume, overwrite=overwrite, progress=progress,
                      wait_for_lock=wait_for_lock)
    finally:
        distm.shutdown(dist)


def _prepare_run_dir(run_dir: Path, cfg, stage: str, resume: bool, overwrite: bool, dist) -> None:
    if (run_dir / FINISHED_MARKER).is_file() and not overwrite:
        raise RunExistsError(f"{run_dir} already holds a finished run; pass --overwrite to "
                             f"replace its outputs (or use another --runs folder or --tag)")
    if (run_dir / "last.pt").is_file() and not resume and not overwrite:
        raise RunExistsError(f"{run_dir} holds an unfinished run (last.pt); pass --resume to "
                             f"continue it or --overwrite to start again")
    if resume and (run_dir / "last.pt").is_file() and (run_dir / "config.yaml").is_file():
        # Resuming with other model-deciding settings would mix two runs in one folder.
        mismatches = config_mismatches(config_mod.load_yaml(run_dir / "config.yaml"),
                                       cfg.to_dict(), stage)
        if mismatches:
            raise RunExistsError(
                f"{run_dir}: cannot resume with other settings than the run was started with:\n  "
                + "\n  ".join(mismatches)
                + "\nResume with the same settings, or pass --overwrite to start again.")
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temp_files(run_dir)
        if overwrite and not resume:
            for name in (FINISHED_MARKER, "metrics.json", "last.pt", "best.pt", "final.pt"):
                (run_dir / name).unlink(missing_ok=True)
    distm.barrier(dist)


def _configure_backends(cfg, device, dist) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + 7919 * dist.rank)
    # On the CPU the kernels this loop uses are deterministic for a fixed thread count (the resume
    # test checks it bit for bit); torch's global switch would import its compiler stack, about
    # 3.4 s per process here, paid by every one of the course's two dozen runs.
    if device.type == "cuda":
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not cfg.deterministic


@dataclass
class _Run:
    """One run while it trains: what it was given, what it built, and what it has recorded."""

    cfg: config_mod.RunConfig
    stage: str
    device: torch.device
    dist: distm.DistInfo
    run_dir: Path
    plan: StagePlan
    log: "_Logger"
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    val_ds: object
    eval_kwargs: dict
    init_note: str
    lambda_info: dict | None
    bn_mode: str
    writer: object = None
    train_model: torch.nn.Module | None = None
    start: int = 0
    history: list = field(default_factory=list)
    train_log: list = field(default_factory=list)
    best: dict | None = None
    before: dict | None = None
    elapsed_before: float = 0.0
    loop_eval_seconds: float = 0.0
    """Seconds of the evaluations during the loop (BatchNorm re-estimates included; resumed runs
    included), so that the steps' own time is the loop's time less these."""
    started: float = field(default_factory=time.perf_counter)
    saved_at: int | None = None
    """The iteration of the last good ``last.pt``."""
    precision: dict = field(default_factory=dict)
    """The precision the run computes in, what was asked for and why (``metrics.json``)."""
    bn_target_ds: object = None
    """Target train images (not augmented) to re-estimate BatchNorm on before each evaluation
    (``eval.bn_statistics: target``), else None."""
    scaler: torch.amp.GradScaler | None = None
    """Loss scaling of ``amp: fp16`` (a pass-through otherwise): without it most fp16 gradient
    elements at the head output underflow to zero at paper sizes (issue 23)."""

    @property
    def class_set(self):
        return class_set_for(self.cfg.data.num_classes)

    def reestimate_batchnorm(self, model: torch.nn.Module, dataset, progress: bool = False) -> int:
        """AdaBN of ``model`` on ``dataset`` in the run's precision and memory format."""
        return reestimate_batchnorm(model, dataset, self.cfg.adapt.target_batch_size, self.device,
                                    progress=progress, amp=self.cfg.amp, channels_last=self.cfg.channels_last,
                                    workers=self.cfg.data.workers)

    def evaluate(self, desc: str, probe: bool = False, **kw) -> EvalResult:
        """Score the model on target val (``probe``: also measure what the target loss does,
        :mod:`maxsq_lib.engine.probe`; adaptation runs in one process only)."""
        if probe and self.plan.strategy is not None and not self.dist.enabled:  # a source run has none
            kw["probe"] = AdaptationProbe(self.plan.strategy)
        model = self.model
        distm.average_batchnorm(unwrap_model(model), self.dist)  # one model on every rank
        if self.bn_target_ds is not None:  # score a copy: training goes on with its own statistics
            model = copy.deepcopy(unwrap_model(self.model))
            self.reestimate_batchnorm(model, self.bn_target_ds)
        return evaluate(model, self.val_ds, self.class_set, desc=desc, **{**self.eval_kwargs, **kw})


def _train(cfg, stage, device, dist, *, resume, overwrite, progress, wait_for_lock) -> dict:
    # `amp: auto` becomes what this device computes best, once; config.yaml keeps the choice.
    amp, reason = resolve_amp(cfg.amp, device)
    precision = {"amp": amp, "requested": cfg.amp, "reason": reason, "channels_last": cfg.channels_last}
    cfg = dataclasses.replace(cfg, amp=amp)
    run_dir = run_dir_for(cfg, stage)
    # one writer per run folder (rank 0 writes for all ranks)
    lock = run_lock(run_dir, wait=wait_for_lock, log=tqdm.write) if dist.is_main else nullcontext(False)
    with lock as waited:
        if waited and is_finished(run_dir) and not overwrite:  # the writer we waited for made it
            check_reusable(run_dir, cfg.to_dict(), stage)
            return read_metrics(run_dir)
        return _train_locked(cfg, stage, device, dist, run_dir, resume, overwrite, progress, precision)


def _train_locked(cfg, stage, device, dist, run_dir, resume, overwrite, progress, precision) -> dict:
    amp, reason = precision["amp"], precision["reason"]
    _configure_backends(cfg, device, dist)
    _prepare_run_dir(run_dir, cfg, stage, resume, overwrite, dist)
    log = _Logger(run_dir / "train.log", enabled=dist.is_main)
    source_ds = build_dataset(cfg, "source")
    target_ds = build_dataset(cfg, "target") if stage == "adapt" else None
    run = _build_run(cfg, stage, device, dist, run_dir, log, target_ds, progress)
    run.precision = precision
    log(f"precision: {'float32' if amp == 'none' else amp} ({reason}), "
        f"channels_last {'on' if cfg.channels_last else 'off'}")
    if resume and (run_dir / "last.pt").is_file():
        _resume(run)
    if dist.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        # the aux head takes part in both passes or in neither; idle, DDP must be told to skip it
        run.train_model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=device_ids, find_unused_parameters=not run.plan.source_aux)
    plan = run.plan
    source_loader = _stream_loader(source_ds, cfg, plan.batch_size, run.start, plan.iterations, dist, device)
    target_iter = None if target_ds is None else iter(
        _stream_loader(target_ds, cfg, plan.target_batch_size, run.start, plan.iterations, dist, device))
    run.writer = _tensorboard(run_dir, dist, purge_step=run.start)
    if run.writer is not None and (why := _no_image_grid()):
        log(f"TensorBoard images skipped: {why} (scalars are logged)")
    if stage == "adapt" and run.before is None:
        # The starting point on this target: the source-only row of this benchmark.
        run.before = {"iteration": 0, **_brief(run.evaluate("eval before", probe=True))}
        log(f"before adaptation: target val mIoU {100 * run.before['miou']:.2f}")
    if stage == "adapt" and cfg.adapt.method == "adabn":
        return _finish_adabn(run, target_ds, progress)
    train_seconds = _loop(run, source_loader, target_iter, progress)
    return _finish(run, train_seconds)


def _finish_adabn(run: _Run, target_ds, progress: bool) -> dict:
    """The ``adabn`` control: BatchNorm statistics from the target train images (not augmented),
    no gradient step; recorded as a run of 0 iterations."""
    t0 = time.perf_counter()
    seen = run.reestimate_batchnorm(run.model, _statistics_images(target_ds, run.cfg),
                                    progress=progress and run.dist.is_main)
    run.log(f"adabn: BatchNorm statistics re-estimated on {seen} target train images")
    run.plan = dataclasses.replace(run.plan, iterations=0)
    return _finish(run, time.perf_counter() - t0)


def _build_run(cfg, stage, device, dist, run_dir, log, target_ds, progress) -> _Run:
    """Model (initialised), measured λ, config on disk, train mode, optimizer."""
    plan = plan_for(cfg, stage)
    val_ds = build_dataset(cfg, "val")
    model = build_model(cfg).to(device)
    init_note = _initialise(model, cfg, stage)
    log(init_note)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lambda_info = None
    if stage == "adapt" and cfg.adapt.match_gradient_to:
        lambda_info = matched_lambda(model, target_ds, cfg, device)
        plan = plan_for(cfg, stage, lambda_target=lambda_info["lambda_target"])
        log(f"matched λ_T to {cfg.adapt.match_gradient_to}: {lambda_info}")
    if dist.is_main:
        config_mod.save(cfg, run_dir / "config.yaml")
    bn_mode = cfg.adapt.bn_mode if stage == "adapt" else "train"
    # before the optimizer and DDP, which both record the parameters that need gradients
    _set_train_mode(model, bn_mode)
    optimizer = build_optimizer_for(model, plan.optim)
    eval_kwargs = dict(device=device, batch_size=cfg.eval.batch_size, limit=cfg.eval.limit, amp=cfg.amp,
                       workers=cfg.data.workers,
                       channels_last=cfg.channels_last, dist=dist, progress=progress,
                       subsets=eval_subsets(cfg, val_ds))
    run = _Run(cfg, stage, device, dist, run_dir, plan, log, model, optimizer, val_ds, eval_kwargs,
               init_note, lambda_info, bn_mode, train_model=model,
               scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16"))
    if stage == "adapt" and cfg.eval.bn_statistics == "target" and cfg.adapt.method != "adabn":
        # adabn's own step is the re-estimate; its `before` stays the source model as trained
        run.bn_target_ds = _statistics_images(build_dataset(cfg, "target"), cfg)
    return run


def _statistics_images(target_ds, cfg):
    """The target train images (not augmented) that BatchNorm statistics are re-estimated on."""
    target_ds.augment = False
    return statistics_images(target_ds, cfg.eval.bn_images)


def _resume(run: _Run) -> None:
    """Model, optimizer, RNG states, step and records from ``last.pt`` (exact resume)."""
    state = ckpt.load_checkpoint(run.run_dir / "last.pt", model=unwrap_model(run.model),
                                 optimizer=run.optimizer, restore_rng=True)
    run.start = run.saved_at = int(state["step"])
    extra = state.get("extra") or {}
    run.history, run.train_log = list(extra.get("history", [])), list(extra.get("train_log", []))
    run.best, run.before = extra.get("best"), extra.get("before")
    run.elapsed_before = float(extra.get("elapsed", 0.0))
    run.loop_eval_seconds = float(extra.get("loop_eval_seconds", 0.0))
    if extra.get("scaler"):
        run.scaler.load_state_dict(extra["scaler"])
    run.log(f"resumed from {run.run_dir / 'last.pt'} at iteration {run.start}")


def _loop(run: _Run, source_loader, target_iter, progress: bool) -> float:
    """The iterations from ``run.start``; returns the training seconds (resumed runs included)."""
    cfg, plan, optimizer = run.cfg, run.plan, run.optimizer
    eval_every = cfg.eval.source_every if run.stage == "source" and cfg.eval.source_every else cfg.eval.every
    _set_train_mode(run.train_model, run.bn_mode)
    sums = _RunningSums(run.device)
    t0 = time.perf_counter()
    bar = tqdm(total=plan.iterations, initial=run.start, desc=f"{run_name(cfg, run.stage)} seed{cfg.seed}",
               disable=not progress or not run.dist.is_main, dynamic_ncols=True)
    it = run.start
    for images, labels, _names in source_loader:
        set_poly_lr(optimizer, it, plan.horizon, plan.optim.poly_power)
        step_logs = train_step(run.train_model, plan, images, labels, target_iter, run.device, cfg, run.scaler)
        run.scaler.step(optimizer)  # optimizer.step(), skipped by an fp16 scaler when a gradient overflowed
        run.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        sums.add(step_logs)
        it += 1
        bar.update(1)
        last = it == plan.iterations
        if it % cfg.log_every == 0 or last:
            _record(run, sums.flush(it, optimizer.param_groups[0]["lr"]), it, bar)
        if run.writer and (it % cfg.image_every == 0 or last) and not _no_image_grid():
            _log_images(run.writer, run.model, run.val_ds, run.class_set, run.device, it)
        evaluate_now = it % eval_every == 0 or last
        if evaluate_now:
            _evaluate_during(run, sums, it)
        if evaluate_now or (run.writer and it % cfg.image_every == 0):
            _set_train_mode(run.train_model, run.bn_mode)  # evaluation switched to eval mode
        if it % cfg.checkpoint_every == 0 or last:
            _save_last(run, sums, it, run.elapsed_before + time.perf_counter() - t0)
    bar.close()
    return run.elapsed_before + time.perf_counter() - t0


def _record(run: _Run, record: dict, it: int, bar) -> None:
    if not distm.all_true(record["finite"], run.dist, run.device):
        _diverged(run.run_dir, record["since"], it, run.saved_at)
    run.train_log.append(record)
    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
    if run.writer:
        for key, value in record.items():
            if isinstance(value, float):
                run.writer.add_scalar(f"train/{key}", value, it)


def _evaluate_during(run: _Run, sums: "_RunningSums", it: int) -> None:
    """Evaluate on target val; a new best (by :func:`best_criterion`) is saved as ``best.pt``."""
    t0 = time.perf_counter()
    result = run.evaluate(f"eval @{it}", probe=True)
    run.loop_eval_seconds += time.perf_counter() - t0
    entry = {"iteration": it, **_brief(result)}
    run.history.append(entry)
    run.log(f"iteration {it}: target val mIoU {100 * result.miou:.2f}, "
            f"mean entropy {result.mean_entropy:.4f}")
    if run.writer:
        run.writer.add_scalar("val/miou", result.miou, it)
        run.writer.add_scalar("val/mean_entropy", result.mean_entropy, it)
    key = best_criterion(run.cfg.data.num_classes)
    if run.best is None or entry[key] > run.best[key]:  # the same on every rank (reduced scores)
        run.best = {**entry, "criterion": key}
        _save_checked(run, sums, it, "best.pt")


def _save_last(run: _Run, sums: "_RunningSums", it: int, elapsed: float) -> None:
    _save_checked(run, sums, it, "last.pt", optimizer=run.optimizer,
                  extra={"history": run.history, "train_log": run.train_log, "best": run.best,
                         "before": run.before, "elapsed": elapsed, "loop_eval_seconds": run.loop_eval_seconds,
                         "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None})
    run.saved_at = it
    distm.barrier(run.dist)


def _finish(run: _Run, train_seconds: float) -> dict:
    """Final evaluations, ``final.pt``, ``metrics.json`` and the ``FINISHED`` marker."""
    cfg, stage, plan, history = run.cfg, run.stage, run.plan, run.history
    if run.bn_target_ds is not None:  # the final model keeps the statistics it is scored with
        run.reestimate_batchnorm(run.model, run.bn_target_ds)
        run.bn_target_ds = None
    final = run.evaluate("final eval")
    if run.best is None:  # no evaluation during training (adabn): the final model is the best
        run.best = {"iteration": plan.iterations, **_brief(final),
                    "criterion": best_criterion(cfg.data.num_classes)}
    metrics = {
        "stage": stage, "run": run_name(cfg, stage), "method": cfg.adapt.method if stage == "adapt" else "source",
        "profile": cfg.profile, "benchmark": cfg.benchmark, "seed": cfg.seed, "class_set": run.class_set.name,
        "class_names": list(run.class_set.class_names), "iterations": plan.iterations,
        "lambda_target": plan.lambda_target, "lambda_matching": run.lambda_info, "bn_mode": run.bn_mode,
        "precision": run.precision, "init": run.init_note, "before": run.before,
        "last": {"iteration": plan.iterations, **_brief(final), "confusion": final.confusion.tolist()},
        "best_on_target_val": run.best,
        "label_free_choice": min(history, key=lambda e: e["mean_entropy"]) if history else None,
        "history": history, "train_log": run.train_log}
    if cfg.eval.flip:
        flipped = run.evaluate("final eval (flip)", flip=True)
        metrics["last_flip"] = {"iteration": plan.iterations, **_brief(flipped)}
    if stage == "source" and cfg.data.source_val_split:
        src_val = build_dataset(cfg, "source_val")
        kw = dict(run.eval_kwargs, limit=cfg.data.source_val_limit)
        metrics["source_val"] = _brief(evaluate(run.model, src_val, run.class_set, desc="source val", **kw))
    step_seconds = train_seconds - run.loop_eval_seconds
    metrics["timing"] = {
        "train_seconds": train_seconds, "step_seconds": step_seconds,
        "loop_eval_seconds": run.loop_eval_seconds,
        "seconds_per_iteration": step_seconds / plan.iterations if plan.iterations else None,
        # this process only: set-up, evaluations before and after the loop, and the loop
        "wall_seconds": time.perf_counter() - run.started}
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["provenance"] = provenance()
    if run.dist.is_main:
        ckpt.save_checkpoint(run.run_dir / "final.pt", model=unwrap_model(run.model),
                             step=plan.iterations, config=cfg.to_dict())
        write_json_atomic(run.run_dir / "metrics.json", metrics)
        (run.run_dir / FINISHED_MARKER).write_text("finished\n")
        run.log(f"finished: target val mIoU {100 * final.miou:.2f} (last), "
                f"best {100 * run.best['miou']:.2f} at {run.best['iteration']}; {train_seconds:.0f} s")
    if run.writer:
        run.writer.close()
    distm.barrier(run.dist)
    return metrics


def _initialise(model, cfg, stage) -> str:
    path = start_file(cfg, stage)
    if path is None:
        return "initialised from scratch (N(0, 0.01) convolutions, as the authors' heads)"
    if stage == "source":
        if not path.is_file():
            raise MissingInputError(f"initialisation checkpoint not found: {path}\nPlace the DeepLab init "
                                    f"file there (see README: pretrained_model/), or set "
                                    f"source.init_checkpoint: null to train from scratch.")
        return "initialised: " + ckpt.load_weights(model, path, purpose="init").note
    if not path.is_file():
        hint = ("" if cfg.adapt.source_checkpoint else f"\nRun source pretraining first: maxsq train-source "
                f"--profile {cfg.profile} --benchmark {cfg.benchmark} --seed {cfg.seed}")
        raise MissingInputError(f"source checkpoint not found: {path}{hint}")
    return ckpt.load_weights(model, path, purpose="start").note


def train_step(model, plan: StagePlan, images, labels, target_iter, device, cfg, scaler=None) -> dict:
    """One iteration's forward/backward passes (no optimizer step); returns detached logs.

    Args:
        model: the network, or its DDP wrapper (then one gradient all-reduce per iteration: the
            source backward runs under ``no_sync`` when a target backward follows).
        plan: the stage's :class:`StagePlan`.
        images, labels: the source batch (labels of any integer type, -1 ignored).
        target_iter: yields target batches (adaptation), or None.
        device: where the model is.
        cfg: the run config (``amp``, ``channels_last``).
        scaler: a ``torch.amp.GradScaler`` that scales both backward passes (``amp: fp16``), or None.
    Returns:
        the iteration's losses, detached, on the device (unscaled).
    """
    cl = torch.channels_last if cfg.channels_last else torch.contiguous_format
    scale = scaler.scale if scaler is not None else (lambda loss: loss)
    images = images.to(device, non_blocking=True).contiguous(memory_format=cl)
    labels = labels.to(device, non_blocking=True).long()
    target_backward = target_iter is not None and plan.strategy.loss_fn is not None
    logs = {}
    with model.no_sync() if target_backward and hasattr(model, "no_sync") else nullcontext():
        with autocast(device, cfg.amp):
            main, aux = model(images, with_aux=plan.source_aux)
            source_loss = losses.source_cross_entropy(main, labels)
            loss = source_loss
            if plan.source_aux:
                aux_loss = losses.source_cross_entropy(aux, labels)
                loss = loss + plan.lambda_seg * aux_loss
                logs["source_aux_ce"] = aux_loss.detach()
        scale(loss).backward()
    logs["source_ce"] = source_loss.detach()
    total = loss.detach()
    if target_iter is not None:
        t_images, _t_labels, _ = next(target_iter)
        t_images = t_images.to(device, non_blocking=True).contiguous(memory_format=cl)
        strategy = plan.strategy
        grad_ctx = torch.no_grad() if strategy.loss_fn is None else nullcontext()
        with grad_ctx, autocast(device, cfg.amp):
            t_main, t_aux = model(t_images, with_aux=strategy.uses_aux)
            t_loss, t_logs = strategy(t_main, t_aux)
        if t_loss is not None:
            scale(t_loss).backward()
            total = total + t_loss.detach()
        logs.update(t_logs)
    logs["loss"] = total
    return logs


def best_criterion(num_classes: int) -> str:
    """The score that chooses ``best.pt``: mIoU*, the 13-class mean, for SYNTHIA's 16 classes
    (as the authors' ``train_source.py``), else mIoU."""
    return "miou_star13" if num_classes == 16 else "miou"


def _diverged(run_dir: Path, since: int, it: int, saved_at: int | None):
    good = (f"The last good checkpoint is {run_dir / 'last.pt'} (iteration {saved_at}); resume "
            f"with a lower learning rate or λ." if saved_at is not None else
            "No checkpoint of this run was saved before it.")
    raise TrainingDiverged(f"a loss or weight became NaN or infinite between iterations {since} "
                           f"and {it}; training stopped. {good}")


def _save_checked(run: _Run, sums: "_RunningSums", it: int, name: str, **state) -> None:
    """Rank 0 saves ``name`` in the run folder; every rank stops before it when any loss since the
    last check, or any weight, is not finite on any rank, so that no non-finite model is ever
    written and no rank waits alone (one host sync and one all-reduce per save, none per iteration)."""
    model = unwrap_model(run.model)
    finite = sums.finite & torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()
    if not distm.all_true(finite, run.dist, run.device):
        _diverged(run.run_dir, sums.checked, it, run.saved_at)
    sums.checked = it
    if run.dist.is_main:
        ckpt.save_checkpoint(run.run_dir / name, model=model, step=it, config=run.cfg.to_dict(), **state)


class _RunningSums:
    """Sums of per-iteration logs kept on the device: no host sync until :meth:`flush`."""

    def __init__(self, device):
        self.device, self.sums, self.count, self.since = device, {}, 0, 0
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.checked = 0  # the iteration up to which finiteness was last checked before a save

    def add(self, logs: dict) -> None:
        for key, value in logs.items():
            v = value.float()
            self.finite &= torch.isfinite(v)
            self.sums[key] = self.sums.get(key, 0) + v
        self.count += 1

    def flush(self, iteration: int, lr: float) -> dict:
        record = {"iteration": iteration, "since": self.since, "lr": lr, "finite": bool(self.finite),
                  **{key: float(value) / max(1, self.count) for key, value in self.sums.items()}}
        self.sums, self.count, self.since = {}, 0, iteration
        return record


def _brief(result: EvalResult) -> dict:
    summary, extra = result.summary, result.extra
    return {"miou": result.miou, "pixel_accuracy": summary.get("pixel_accuracy"),
            "per_class_iou": summary["per_class_iou"], "mean_entropy": result.mean_entropy,
            "flip": result.flip, "label_resolution": result.label_resolution, "images": result.images,
            **({"miou_star13": summary["miou_star13"]} if "miou_star13" in summary else {}),
            **({"subsets": {name: {key: s[key] for key in ("miou", "per_class_iou", "images")}
                            for name, s in extra["subsets"].items()}} if "subsets" in extra else {}),
            **({"probe": extra["probe"]} if "probe" in extra else {})}


class _Logger:
    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path, "a") as f:
            f.write(f"{stamp} {message}\n")
        tqdm.write(message)


def _tensorboard(run_dir: Path, dist, purge_step: int):
    if not dist.is_main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; stay usable without it
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step or None)


@functools.cache
def _no_image_grid() -> str | None:
    """Why TensorBoard images cannot be drawn (torchvision missing, or built for another torch:
    it belongs to the course's extra, a researcher's own torch may have none), else None."""
    try:
        from torchvision.utils import make_grid  # noqa: F401
    except Exception as exc:  # ImportError, or torchvision's RuntimeError against another torch
        return f"torchvision cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


@torch.no_grad()
def _log_images(writer, model, val_ds, class_set, device, iteration: int, count: int = 2) -> None:
    """One TensorBoard image per val item (the first ``count``): input | label | prediction |
    normalised entropy, side by side (``torchvision.utils.make_grid``)."""
    from torchvision.utils import make_grid

    from ..data.transforms import denormalize_bgr
    from ..labels import colorize
    from .evaluation import normalized_entropy, predict_probabilities

    was_training = model.training
    model.eval()
    for k in range(min(count, len(val_ds))):
        image, label, _name = val_ds[k]
        probs = predict_probabilities(model, image[None].to(device))
        size = tuple(probs.shape[-2:])
        if tuple(label.shape) != size:  # labels at their native resolution: shown at the image's
            label = torch.nn.functional.interpolate(label[None, None].float(), size=size,
                                                    mode="nearest")[0, 0].long()
        entropy = np.nan_to_num(normalized_entropy(probs)[0].cpu().numpy(), nan=1.0)
        panels = [denormalize_bgr(image.numpy()), colorize(label.numpy(), class_set),
                  colorize(probs.argmax(1)[0].cpu().numpy(), class_set),
                  (np.stack([entropy] * 3, -1) * 255).astype(np.uint8)]
        grid = make_grid([torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1) for p in panels],
                         nrow=len(panels), padding=2, pad_value=255)
        writer.add_image(f"val{k}", grid, iteration)
    model.train(was_training)
