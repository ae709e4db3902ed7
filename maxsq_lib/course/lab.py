"""The lab of notebook ``08_lab``: a learner's own target loss, checked, trained and read beside the controls.

The learner writes ``loss(main, aux, params) -> (unweighted scalar loss, logs)`` in one cell and
registers it with :func:`maxsq_lib.methods.register_method`; this module then

- refuses a loss that training could not use (:func:`check_loss`), before anything is trained;
- trains it from the course's source model (:func:`run_lab`), by default at a **matched dose**: λ_T
  set so that its logit gradient at the start equals MaxSquare's at the table's λ_T (the engine's
  ``adapt.match_gradient_to``), so that the comparison is about the loss's shape, not its size;
- sets its reported number beside ``adabn``, ``none``, MaxSquare and +IW (:func:`lab_table`), the
  learner's runs and the committed study, with the paired gain over AdaBN, the resolution and the
  dose at the start; :func:`maxsq_lib.course.plots.lab.lab_curves` draws it over the iterations.

Lab runs live under ``<runs_root>/lab/<profile>/<benchmark>/<method>-<tag>/seed<k>/``, beside the
course's runs rather than among them: ``maxsq figures`` and ``make study`` read every run under
``<runs_root>/<profile>/``, and a learner's loss must not enter the committed study. Each lab run
keeps the source of the loss it was trained with (``lab_loss.json``), so an edited loss under the
same name is not silently read back from the older run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import config as C
from .. import methods
from ..engine.build import run_dir_for
from . import results

LAB_FOLDER = "lab"
"""The folder under the runs root that holds lab runs (kept apart from the study's runs)."""

CONTROLS = ("adabn", "none", "maxsquare", "maxsquare_iw")
"""The runs a lab run is set beside: the BatchNorm-only controls, MaxSquare and +IW."""

FINGERPRINT = "lab_loss.json"
"""The file in a lab run's folder that records the loss it was trained with."""

_RESERVED_LOGS = ("loss", "source_ce", "source_aux_ce", "target_loss")


# ------------------------------------------------------------------------------------ guard rails

def _probes(cfg: C.RunConfig, images: int) -> list[tuple[str, Tensor, Tensor]]:
    """(what, main logits, aux logits): the source model's on target train images, random ones and
    saturated ones (softmax exactly 0 or 1 in float32, as in a collapsed model)."""
    from . import notebook as course

    model = course.load_run_model(cfg, "source", device="cpu")
    target = course.dataset(cfg, "target")
    target.augment = False  # the same images every time: a refusal can be reproduced
    batch, _, _ = course.batch(target, range(min(images, len(target))))
    with torch.no_grad():
        main, aux = (z.float() for z in model(batch, with_aux=True))
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(main.shape, generator=gen), torch.randn(main.shape, generator=gen)
    return [("the source model's target logits", main, aux), ("random logits", *noise),
            ("saturated logits (a collapsed model's)", 50 * noise[0], 50 * noise[1])]


def _refuse(name: str, what: str, why: str) -> ValueError:
    return ValueError(f"loss {name!r} refused on {what}: {why}; nothing was trained")


def check_loss(method: str | methods.Method, cfg: C.RunConfig, images: int = 4) -> dict[str, float]:
    """Guard rails before training: the loss must give a finite 0-d tensor with a finite gradient
    reaching the logits, on the source model's target logits, random logits and saturated ones, and
    that gradient must not vanish on the source model's (training would not move, and the matched
    λ_T would be infinite).
    Introduced in notebook ``08_lab``.

    Args:
        method: a registered method's name, or its registry row.
        cfg: the course's config (its source run must be finished: ``course.ensure_run``).
        images: target train images the source model predicts.
    Returns:
        what the loss gave on each probe, and ``gradient_norm``: its logit-gradient norm on the
        source model's logits.
    Raises:
        ValueError: one line saying which rule the loss broke, and on which logits.
    """
    row = method if isinstance(method, methods.Method) else methods.get_method(method)
    if row.loss is None:
        raise ValueError(f"method {row.name!r} has no target loss to check (a control or a source row)")
    a = cfg.adapt
    params = methods.LossParams(a.lambda_seg, a.threshold, a.iw_ratio, a.faithful_scale)
    out: dict[str, float] = {}
    for k, (what, main, aux) in enumerate(_probes(cfg, images)):
        main = main.clone().requires_grad_(True)
        # the loop passes aux only to a loss that declares it (uses_aux), None otherwise
        aux = aux.clone().requires_grad_(True) if row.uses_aux else None
        try:
            returned = row.loss(main, aux, params)
        except Exception as exc:  # the learner's code: any error is reported in one line
            raise _refuse(row.name, what, f"it raised {type(exc).__name__}: {exc}") from None
        if not (isinstance(returned, tuple) and len(returned) == 2 and isinstance(returned[1], dict)):
            raise _refuse(row.name, what, f"it returned {type(returned).__name__}, expected a pair "
                                          "(loss, logs dict), e.g. `return loss, {}`")
        loss, logs = returned
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise _refuse(row.name, what, f"the loss is {shape}, expected a 0-d tensor (average it, e.g. .mean())")
        if not torch.isfinite(loss):
            raise _refuse(row.name, what, f"the loss is {loss.item()} (log of a 0 probability? "
                                          "use log_softmax or clamp)")
        if not loss.requires_grad:
            raise _refuse(row.name, what, "the loss has no gradient: it does not depend on the logits "
                                          "through differentiable operations (argmax, .detach(), .item() "
                                          "and numpy cut the graph)")
        inputs = [main] + ([aux] if aux is not None else [])
        grads = [g for g in torch.autograd.grad(loss, inputs, allow_unused=True) if g is not None]
        if not grads:
            raise _refuse(row.name, what, "no gradient reaches the logits")
        if not all(torch.isfinite(g).all() for g in grads):
            raise _refuse(row.name, what, "its gradient is NaN or infinite")
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        if norm == 0 and k == 0:  # elsewhere none is fine: a thresholded loss on random logits, a saturated model
            raise _refuse(row.name, what, "its gradient with respect to the logits is zero everywhere")
        bad = [key for key, v in logs.items() if key in _RESERVED_LOGS or not isinstance(v, Tensor) or v.numel() != 1]
        if bad:
            raise _refuse(row.name, what, f"logs {bad}: each must be a 0-d tensor, named other than "
                                          f"{list(_RESERVED_LOGS)}")
        out[what] = float(loss.detach())
        if k == 0:
            out["gradient_norm"] = norm
    print(f"{row.name}: a finite scalar with a finite gradient on {len(out) - 1} kinds of logits; ready to train")
    return out


# ------------------------------------------------------------------------------------ training

def lab_config(method: str, cfg: C.RunConfig, match_to: str | None = "maxsquare",
               lambda_target: float | None = None) -> C.RunConfig:
    """The run config of a lab run. Introduced in notebook ``08_lab``.

    Args:
        method: the registered loss.
        cfg: the course's config (profile, benchmark, paths, seed, device).
        match_to: the reference loss of the matched dose: λ_T is set at the start so that the
            loss's logit-gradient norm equals the reference's at the profile's λ_T.
        lambda_target: a fixed λ_T instead (equal λ, no matching); the run is ``<method>-lambda<λ>``.
    Returns:
        the config: run ``<method>-match-<match_to>`` (or ``-lambda<λ>``) under ``<runs_root>/lab``,
        starting from the course's source model.
    """
    methods.get_method(method)  # unknown names: the registry's one line
    run = copy.deepcopy(cfg)
    run.adapt.method = method
    if lambda_target is not None:
        run.adapt.lambda_target, run.tag = float(lambda_target), f"lambda{float(lambda_target):g}"
        run.adapt.match_gradient_to = run.adapt.match_gradient_lambda = None
    elif match_to:
        run.adapt.match_gradient_to = match_to
        run.adapt.match_gradient_lambda = C.resolve(cfg.profile, cfg.benchmark, match_to).adapt.lambda_target
        run.tag = f"match-{match_to}"
    else:
        raise ValueError("give a reference loss to match (match_to) or a λ_T (lambda_target)")
    run.adapt.source_checkpoint = str(run_dir_for(cfg, "source") / "final.pt")
    run.runs_root = str(Path(cfg.runs_root) / LAB_FOLDER)
    return run.validate()


def loss_fingerprint(fn) -> dict:
    """The source of a loss function and a hash of it (with its default and bound arguments), so a
    run of an edited loss is told apart; a global value the function reads is not part of it."""
    bound = ""
    if isinstance(fn, functools.partial):
        bound, fn = repr((fn.args, sorted(fn.keywords.items()))), fn.func
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # no source file (e.g. built by exec): its bytecode stands in
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_names, code.co_varnames)) if code else type(fn).__qualname__
    extra = repr((getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None), bound))
    return {"source": text, "sha256": hashlib.sha256((text + extra).encode()).hexdigest()}


def run_lab(method: str, cfg: C.RunConfig, match_to: str | None = "maxsquare",
            lambda_target: float | None = None, retrain: bool = False,
            progress: bool = True) -> results.RunRecord:
    """Check a registered loss, then train it (or reuse its finished run). Introduced in notebook ``08_lab``.

    Registers nothing: the learner calls :func:`maxsq_lib.methods.register_method` first. The source
    model and the ``adabn`` control (seconds) are trained first where they are missing.

    Args:
        method: the registered loss.
        cfg: the course's config (:func:`maxsq_lib.course.config_for` with no method).
        match_to, lambda_target: the dose (:func:`lab_config`): matched to MaxSquare by default.
        retrain: replace a lab run that was trained with another version of the loss.
        progress: tqdm bars while training.
    Returns:
        the lab run's :class:`~maxsq_lib.course.results.RunRecord`.
    Raises:
        ValueError: the loss fails :func:`check_loss`, or a run of that name holds another loss.
    """
    from . import notebook as course

    run_cfg = lab_config(method, cfg, match_to, lambda_target)
    course.ensure_run(cfg, "source", progress=progress)
    check_loss(method, cfg)
    run_dir = run_dir_for(run_cfg, "adapt")
    mark = fingerprint = loss_fingerprint(methods.get_method(method).loss)
    if (run_dir / FINGERPRINT).is_file():
        mark = json.loads((run_dir / FINGERPRINT).read_text())
    if mark["sha256"] != fingerprint["sha256"]:
        if not retrain:
            raise ValueError(f"{run_dir} was trained with another version of {method!r} (its code is in "
                             f"{FINGERPRINT} there): register the new one under a new name, or pass "
                             f"retrain=True to replace that run")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FINGERPRINT).write_text(json.dumps({"method": method, **fingerprint}, indent=1) + "\n")
    adabn = copy.deepcopy(cfg)
    adabn.adapt.method = "adabn"
    course.ensure_run(adabn.validate(), "adapt", progress=progress)
    metrics = course.ensure_run(run_cfg, "adapt", progress=progress)
    return results.record({**metrics, "run_dir": str(run_dir)})


# ------------------------------------------------------------------------------------ reading it

def dose(cfg: C.RunConfig, names, batches: int = 8) -> dict[str, float]:
    """Each loss's gradient ratio to the source cross-entropy at the start, at λ_T = 1
    (:func:`maxsq_lib.course.analysis.dose_at_start`, on the first ``batches`` source and target
    train batches of the seed's source model, as the committed study measured it).

    Returns:
        name -> ratio (times λ_T: the dose).
    """
    from . import notebook as course
    from .analysis import dose_at_start, start_batches

    model = course.load_run_model(cfg, "source", device="cpu")
    pairs = start_batches(cfg, batches)
    torch.manual_seed(0)
    a = cfg.adapt
    out = dose_at_start(model, pairs, list(names), lambda_seg=a.lambda_seg, multi=cfg.source.multi,
                        faithful_scale=a.faithful_scale, iw_ratio=a.iw_ratio, threshold=a.threshold)
    return {m: d["ratio"] for m, d in out["methods"].items()}


@dataclass(frozen=True)
class LabTable:
    """A lab run beside the controls; ``print`` it.

    Attributes:
        run: the lab run's name.
        rows: per run (controls first, the lab run last): ``run``, ``lambda_target``, ``dose`` (λ_T ×
            the gradient ratio at the start), ``mine`` and ``mine_gain`` (your reported mIoU and its
            gain over adabn, paired on the seed), ``study`` and ``study_gain`` ((mean, std) over the
            committed study's seeds; None for the lab run); fractions.
        resolution: 3 × the study's pooled seed std of a gain over adabn.
        versus_maxsquare: the lab run minus MaxSquare, paired on the seed.
        seed, profile, study_seeds: whose numbers these are.
    """

    run: str
    rows: tuple[dict, ...]
    resolution: float | None
    versus_maxsquare: float | None
    seed: int
    profile: str
    study_seeds: str

    def row(self, run: str) -> dict:
        """One run's row."""
        return next(r for r in self.rows if r["run"] == run)

    def __str__(self) -> str:
        def num(v, signed=False):
            return "–" if v is None else (f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}")

        def pm(pair, signed=False):
            return "–" if pair is None or pair[0] is None else f"{num(pair[0], signed)} ± {100 * (pair[1] or 0):.1f}"

        width = max(len(r["run"]) for r in self.rows) + 2
        lines = [f"{'run':<{width}}{'λ_T':>9}{'dose':>9}{'yours':>8}{'vs AdaBN':>10}   "
                 f"{'study':>12}{'study vs AdaBN':>16}"]
        for r in self.rows:
            lam = "–" if r["lambda_target"] is None else f"{r['lambda_target']:.3g}"
            dose_text = "–" if r["dose"] is None else f"{r['dose']:.2g}"
            lines.append(f"{r['run']:<{width}}{lam:>9}{dose_text:>9}{num(r['mine']):>8}"
                         f"{num(r['mine_gain'], True):>10}   {pm(r['study']):>12}{pm(r['study_gain'], True):>16}")
        lines.append(f"mIoU: test at the dev-chosen evaluation; yours: profile {self.profile}, seed {self.seed}; "
                     f"study: profile cpu, {self.study_seeds}; gains paired with adabn on the seed")
        lines.append(f"resolution r = {num(self.resolution)} points (3 × the study's pooled seed std of a "
                     f"gain over adabn); {self.run} − maxsquare, same seed: {num(self.versus_maxsquare, True)}")
        return "\n".join(lines)


def lab_table(record: results.RunRecord, cfg: C.RunConfig, study: results.Study | None = None,
              with_dose: bool = True) -> LabTable:
    """A lab run beside ``adabn``, ``none``, MaxSquare and +IW: yours (same profile and seed) and the
    committed study's. Introduced in notebook ``08_lab``.

    Args:
        record: the lab run (:func:`run_lab`).
        cfg: the course's config.
        study: the reference study (default: the committed ``figures/results.json``).
        with_dose: measure the dose at the start (a few seconds).
    Returns:
        the :class:`LabTable`.
    """
    study = study or results.load_committed_study()
    reference = study.tables[study.main]
    table = results.summarize_runs(lab_records(record, cfg))
    ratios = dose(cfg, [record.method, "maxsquare", "maxsquare_iw"]) if with_dose else {}
    rows = []
    for name in [*CONTROLS, record.run]:
        entry = table.get(name)
        lam = (None if name in ("adabn", "none") else record.lambda_target if name == record.run
               else C.resolve(cfg.profile, cfg.benchmark, name).adapt.lambda_target)
        method = record.method if name == record.run else name
        rows.append({
            "run": name, "lambda_target": lam,
            "dose": None if lam is None or method not in ratios else lam * ratios[method],
            "mine": (results.seed_values(entry).get(cfg.seed) if entry else None),
            "mine_gain": results.reported_gains(table, name, "adabn").get(cfg.seed),
            "study": None if name == record.run else results.mean_std(results.seed_values(reference[name]).values()),
            "study_gain": None if name in (record.run, "adabn") else
            results.mean_std(results.reported_gains(reference, name, "adabn").values())})
    return LabTable(record.run, tuple(rows), results.resolution(reference),
                    results.paired_difference(table, record.run, "maxsquare").get(cfg.seed), cfg.seed,
                    cfg.profile, results.seed_text(results.seed_values(reference["adabn"])))


def lab_records(record: results.RunRecord, cfg: C.RunConfig) -> list[results.RunRecord]:
    """The lab run and your runs of :data:`CONTROLS` (and the source run) of the same seed: what
    :func:`maxsq_lib.course.plots.lab.lab_curves` draws."""
    return [r for r in results.load_records(cfg.runs_root, cfg.profile, cfg.benchmark)
            if r.seed == cfg.seed and (r.run in CONTROLS or r.stage == "source")] + [record]
