"""GPU check for a lent accelerator (``benchmarks/gpu_check.sh`` calls it there), and its CPU rehearsal.

    python benchmarks/gpu_check.py OUT [--cpu] [--sections a,b,...] [--fail SECTION]

Sections, in the order they run; each one writes ``OUT/gpu_check.json`` as soon as it ends, and one
that raises records its error (one line, and where) while the next one still runs:

``train_step``
    DeepLabv2-ResNet-101, one adaptation iteration at the paper's sizes (source 1280×720 + target
    1024×512, batch 1+1, MaxSquare+IW+Multi, the engine's own ``train_step`` and optimizer step)
    in TF32, bf16 autocast and bf16 + channels_last: ms per iteration, images per second, peak
    GPU memory, the ratios to TF32, and the first iteration's losses from identical weights.
``evaluation_flip``
    one 1024×512 image with flip ensembling, TF32 and bf16 + channels_last: ms per image, peak
    memory, and the share of pixels whose argmax agrees.
``iw_loss``
    ``maxsq_lib.losses.iw_max_square`` against the authors' formulation
    (``benchmarks/bench_train_step.authors_iw_max_square``) on random logits: value and gradient.
``adaptation``
    ``maxsq_lib.engine.train`` in the ``paper`` profile on fabricated files in the real GTA5 and
    Cityscapes layouts: a multi-level source model and MaxSquare+IW+Multi, a few iterations each.
``notebook``
    papermill runs ``notebooks/04_adaptation.ipynb`` with ``profile=paper`` on those files.
``ddp``
    one process in a process group of one (NCCL; gloo with ``--cpu``), a DDP-wrapped model, one
    step. Last: a process group that hangs then costs no other section.

``--cpu`` runs the same sections on the CPU at toy sizes (the small ``minicity`` model preset), so
that the script is tested where the tests run (``tests/test_gpu_check.py``); its timings mean
nothing. ``--fail SECTION`` makes that section raise at its start (the test of the error path).
Nothing is downloaded; data are fabricated in a temporary folder.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: benchmarks/ is on the path, the project root is not
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from maxsq_lib import config as C  # noqa: E402
from maxsq_lib.engine.build import build_model, build_optimizer_for, resolve_device  # noqa: E402
from maxsq_lib.engine.evaluation import predict_probabilities  # noqa: E402
from maxsq_lib.engine.precision import autocast  # noqa: E402
from maxsq_lib.engine.trainer import plan_for, train_step  # noqa: E402
from maxsq_lib.files import write_text_atomic  # noqa: E402
from maxsq_prep.fake_layouts import fabricate  # noqa: E402

SECTIONS = ("train_step", "evaluation_flip", "iw_loss", "adaptation", "notebook", "ddp")
BENCHMARK, METHOD = "gta5_cityscapes", "maxsquare_iw_multi"
NOTEBOOK_METHOD = "maxsquare_iw"
"""The notebook's method: its source model is the plain one, which the notebook trains itself."""
LOSS_TOLERANCE = 0.02
"""Accepted relative difference of bf16 vs TF32 losses on the first iteration (bf16 keeps 8 bits
of mantissa; the softmax and losses are computed in float32 inside autocast)."""


@dataclasses.dataclass
class Scale:
    """What differs between the GPU check and its CPU rehearsal."""

    device: str
    overrides: list[str]
    """Config overrides of every section (``KEY=VALUE``), after the profile's own values."""
    eval_size: tuple[int, int]
    warmup: int
    iterations: int
    eval_repeats: int
    iw_shapes: list[tuple[int, int, int, int]]
    workers: int
    cell_timeout: int


GPU = Scale("cuda", ["data.target_size=[1024,512]"], (1024, 512), warmup=3, iterations=10,
            eval_repeats=10, iw_shapes=[(1, 19, 512, 1024), (2, 19, 65, 129)], workers=2,
            cell_timeout=300)
# The minicity preset is the course's CPU model (its ASPP dilations suit 128×64 inputs).
CPU = Scale("cpu", ["model.preset=minicity", "data.source_size=[128,64]", "data.target_size=[96,48]",
                    "data.val_size=[96,48]"], (96, 48), warmup=1, iterations=3, eval_repeats=3,
            iw_shapes=[(1, 19, 64, 128), (2, 19, 33, 65)], workers=0, cell_timeout=120)


class Check:
    """The report, written after every section; the shared fabricated data and run folders."""

    def __init__(self, out: Path, scale: Scale, fail: str | None):
        self.out, self.scale, self.fail = out, scale, fail
        self.path = out / "gpu_check.json"
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
        self._data: Path | None = None
        self.report: dict = {"mode": scale.device, **environment(scale.device), "sections": {}}

    def write(self) -> None:
        # atomic: a run killed at its time limit leaves the last whole report, never half of one
        write_text_atomic(self.path, json.dumps(self.report, indent=1, default=_plain) + "\n")

    def data_root(self) -> Path:
        if self._data is None:
            # eight GTA5 training images: notebook 04 takes a batch of four of them
            self._data = fabricate(self.tmp / "datasets")
        return self._data

    def run_overrides(self) -> list[str]:
        """Overrides of the engine runs: the fabricated data, a few iterations, no init file."""
        return [*self.scale.overrides, f"data.root={self.data_root()}", f"runs_root={self.tmp / 'runs'}",
                f"device={self.scale.device}", f"data.workers={self.scale.workers}",
                "source.init_checkpoint=null", "source.iterations=2", "adapt.iterations=2",
                "eval.every=2", "log_every=1", "checkpoint_every=2", "image_every=2"]

    def config(self, overrides: list[str] | None = None, method: str = METHOD) -> C.RunConfig:
        return C.resolve("paper", BENCHMARK, method,
                         C.parse_overrides(overrides or [*self.scale.overrides, f"device={self.scale.device}"]))

    def run_section(self, name: str, fn) -> None:
        entry = self.report["sections"][name] = {"status": "running"}
        self.write()  # a section that hangs until the time limit shows as "running"
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            if self.fail == name:
                raise RuntimeError(f"failure requested by --fail {name}")
            entry.update(fn(self))
            entry["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - one section's failure must not stop the others
            traceback.print_exc()
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            entry.update(status="error", error=_one_line(exc),
                         where=f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}")
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            _release_memory()
            self.write()
        print(f"gpu_check: {name} {entry['status']} in {entry['seconds']} s"
              + (f": {entry['error']}" if entry["status"] == "error" else ""), flush=True)


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": str(torch.__version__),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           # what the engine's float32 runs get when nothing sets them (they set none of these)
           "torch_default_tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                  "cudnn": torch.backends.cudnn.allow_tf32}}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    else:
        env.update(device=f"cpu ({torch.get_num_threads()} threads)")
    return env


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def _peak_reserved_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_reserved() / 2**30, 2) if device.type == "cuda" else None


def backends_for_speed(tf32: bool = True) -> dict:
    """The settings a timing is taken with, whatever ran before in this process: the engine's
    deterministic runs switch on deterministic algorithms and switch off cuDNN's autotuner."""
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32}


# ------------------------------------------------------------------------------ a. training step

VARIANTS = {"tf32": ("none", False), "bf16": ("bf16", False), "bf16_channels_last": ("bf16", True)}


def section_train_step(check: Check) -> dict:
    cfg = check.config()
    device = resolve_device(check.scale.device)
    plan = plan_for(cfg, "adapt")
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    g = torch.Generator().manual_seed(0)
    (sw, sh), (tw, th) = cfg.data.source_size, cfg.data.target_size
    b, tb = plan.batch_size, plan.target_batch_size
    # inputs already on the device: the step's compute is measured, not the loader's copy
    images = (torch.randn(b, 3, sh, sw, generator=g) * 50).to(device)
    labels = torch.randint(-1, cfg.data.num_classes, (b, sh, sw), generator=g).to(device)
    t_images = (torch.randn(tb, 3, th, tw, generator=g) * 50).to(device)
    result: dict = {"source_size": [sw, sh], "target_size": [tw, th], "batch": f"{b}+{tb}",
                    "model": cfg.model.preset, "method": cfg.adapt.method,
                    "warmup": check.scale.warmup, "timed_iterations": check.scale.iterations}
    for name, (amp, channels_last) in VARIANTS.items():
        settings = backends_for_speed(tf32=True)
        vcfg = dataclasses.replace(cfg, amp=amp, channels_last=channels_last)
        model = build_model(vcfg)
        model.load_state_dict(state)
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        optimizer = build_optimizer_for(model, plan.optim)
        _release_memory()
        _reset_peak(device)
        times, first, finite = [], None, True
        for it in range(check.scale.warmup + check.scale.iterations):
            _sync(device)
            t0 = time.perf_counter()
            logs = train_step(model, plan, images, labels, iter([(t_images, None, None)]), device, vcfg)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if it >= check.scale.warmup:
                times.append(time.perf_counter() - t0)
            finite &= bool(torch.isfinite(logs["loss"]))
            if first is None:
                first = {k: float(v) for k, v in logs.items()}
        median = float(np.median(times))
        result[name] = {"amp": amp, "channels_last": channels_last, **settings,
                        "ms_per_iteration": round(1000 * median, 2),
                        "ms_per_iteration_mean": round(1000 * float(np.mean(times)), 2),
                        "images_per_second": round((b + tb) / median, 2),
                        "peak_gib": _peak_gib(device), "peak_reserved_gib": _peak_reserved_gib(device),
                        "losses_finite": finite, "first_losses": first}
        del model, optimizer, logs
        _release_memory()
    base = result["tf32"]
    for name in ("bf16", "bf16_channels_last"):
        v = result[name]
        v["time_ratio_to_tf32"] = round(v["ms_per_iteration"] / base["ms_per_iteration"], 3)
        v["speedup_over_tf32"] = round(base["ms_per_iteration"] / v["ms_per_iteration"], 3)
        if base["peak_gib"] and v["peak_gib"]:
            v["memory_ratio_to_tf32"] = round(v["peak_gib"] / base["peak_gib"], 3)
        rel = {k: abs(v["first_losses"][k] - x) / max(abs(x), 1e-12)
               for k, x in base["first_losses"].items() if k in v["first_losses"]}
        v["first_loss_relative_difference"] = {k: round(x, 5) for k, x in rel.items()}
        v["first_losses_within_tolerance"] = all(x <= LOSS_TOLERANCE for x in rel.values())
    result["loss_tolerance"] = LOSS_TOLERANCE
    return result


# ------------------------------------------------------------------------------ b. evaluation

@torch.no_grad()
def section_evaluation(check: Check) -> dict:
    cfg = check.config()
    device = resolve_device(check.scale.device)
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    w, h = check.scale.eval_size
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1)) * 50
    result: dict = {"size": [w, h], "flip": True, "repeats": check.scale.eval_repeats}
    argmax = {}
    for name in ("tf32", "bf16_channels_last"):
        amp, channels_last = VARIANTS[name]
        settings = backends_for_speed(tf32=True)
        model = build_model(cfg)
        model.load_state_dict(state)
        model = model.to(device).eval()
        x = image.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        _release_memory()
        _reset_peak(device)
        times, probs = [], None
        for r in range(check.scale.warmup + check.scale.eval_repeats):
            _sync(device)
            t0 = time.perf_counter()
            with autocast(device, amp):
                probs = predict_probabilities(model, x, flip=True)
            _sync(device)
            if r >= check.scale.warmup:
                times.append(time.perf_counter() - t0)
        argmax[name] = probs.argmax(1).cpu()
        result[name] = {"amp": amp, "channels_last": channels_last, **settings,
                        "ms_per_image": round(1000 * float(np.median(times)), 2),
                        "peak_gib": _peak_gib(device),
                        "probabilities_finite": bool(torch.isfinite(probs).all())}
        del model, probs, x
    result["speedup_bf16_channels_last_over_tf32"] = round(
        result["tf32"]["ms_per_image"] / result["bf16_channels_last"]["ms_per_image"], 3)
    result["argmax_agreement"] = round(float((argmax["tf32"] == argmax["bf16_channels_last"]).float().mean()), 4)
    return result


# ------------------------------------------------------------------------------ c. IW loss

def section_iw_loss(check: Check) -> dict:
    from benchmarks.bench_train_step import authors_iw_max_square
    from maxsq_lib.losses import iw_max_square

    device = resolve_device(check.scale.device)
    ratio = C.AdaptConfig().iw_ratio
    cases, value_diff, grad_diff = [], 0.0, 0.0
    for seed, shape in enumerate(check.scale.iw_shapes * 2):
        g = torch.Generator().manual_seed(seed)
        # scaled so that predictions are peaked and some classes rare, as on real images
        logits = (torch.randn(shape, generator=g) * (1 + 3 * seed)).to(device)
        ours_in = logits.clone().requires_grad_(True)
        theirs_in = logits.clone().requires_grad_(True)
        ours = iw_max_square(ours_in, ratio=ratio, faithful=True)
        theirs = authors_iw_max_square(torch.softmax(theirs_in, dim=1), ratio=ratio)
        ours.backward()
        theirs.backward()
        ours, theirs = float(ours.detach()), float(theirs.detach())
        dv = abs(ours - theirs)
        dg = float((ours_in.grad - theirs_in.grad).abs().max())
        cases.append({"shape": list(shape), "scale": 1 + 3 * seed, "ours": ours, "authors": theirs,
                      "abs_difference": dv, "relative_difference": dv / max(abs(theirs), 1e-30),
                      "grad_max_abs_difference": dg, "grad_max_abs": float(theirs_in.grad.abs().max())})
        value_diff, grad_diff = max(value_diff, dv), max(grad_diff, dg)
    return {"ratio": ratio, "faithful": True, "device": str(device), "cases": cases,
            "max_abs_difference": value_diff, "grad_max_abs_difference": grad_diff}


# ------------------------------------------------------------------------------ d. adaptation

def _stage_summary(metrics: dict) -> dict:
    log = metrics.get("train_log") or []
    loss_keys = sorted({k for r in log for k, v in r.items() if isinstance(v, float)
                        and k not in ("lr", "iteration", "since")})
    finite = bool(log) and all(r.get("finite") for r in log) and all(
        math.isfinite(r[k]) for r in log for k in loss_keys if k in r)
    timing = metrics.get("timing") or {}
    return {"run": metrics.get("run"), "iterations": metrics.get("iterations"),
            "logged_iterations": len(log), "losses_finite": finite,
            "last_losses": {k: log[-1][k] for k in loss_keys if k in log[-1]} if log else {},
            "miou_last": (metrics.get("last") or {}).get("miou"),
            "miou_before": (metrics.get("before") or {}).get("miou"),
            "train_seconds": timing.get("train_seconds"), "wall_seconds": timing.get("wall_seconds"),
            "precision": metrics.get("precision")}


def section_adaptation(check: Check) -> dict:
    from maxsq_lib.engine import train

    cfg = check.config(check.run_overrides())
    source = train(cfg, "source", progress=False)
    adapt = train(cfg, "adapt", progress=False)
    result = {"profile": cfg.profile, "benchmark": cfg.benchmark, "method": cfg.adapt.method,
              "model": cfg.model.preset, "source_size": list(cfg.data.source_size),
              "target_size": list(cfg.data.target_size), "data": "fabricated GTA5 + Cityscapes layouts",
              "source": _stage_summary(source), "adapt": _stage_summary(adapt)}
    if not (result["source"]["losses_finite"] and result["adapt"]["losses_finite"]):
        raise RuntimeError(f"non-finite or missing losses: {result}")
    return result


# ------------------------------------------------------------------------------ f. notebook 04

def section_notebook(check: Check) -> dict:
    import papermill as pm

    # the kernel is another process: it finds the project and draws its figures off-screen
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ["MPLBACKEND"] = "Agg"
    source = REPO / "notebooks" / "04_adaptation.ipynb"
    output = check.out / source.name
    parameters = {"profile": "paper", "runs_root": str(check.tmp / "runs"), "data_root": str(check.data_root()),
                  "seed": 0, "device": check.scale.device, "method": NOTEBOOK_METHOD, "num_images": 2,
                  "overrides": check.run_overrides()}
    pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                        progress_bar=False, log_output=False, cwd=str(REPO / "notebooks"),
                        execution_timeout=check.scale.cell_timeout)
    nb = json.loads(output.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    runs = sorted(str(p.parent.relative_to(check.tmp / "runs"))
                  for p in (check.tmp / "runs").glob("paper/*/*/seed*/metrics.json"))
    return {"notebook": source.name, "profile": "paper", "method": NOTEBOOK_METHOD,
            "code_cells": len(code), "executed_cells": sum(c.get("execution_count") is not None for c in code),
            "error_outputs": len(errors), "runs_present": runs, "output": output.name}


# ------------------------------------------------------------------------------ e. DDP

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_ddp(check: Check) -> dict:
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    cfg = check.config()
    device = resolve_device(check.scale.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(0)
    backends_for_speed(tf32=True)
    t0 = time.perf_counter()
    tdist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        init_seconds = time.perf_counter() - t0
        plan = plan_for(cfg, "adapt")
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        model.train()
        before = copy.deepcopy(model.state_dict())
        # as the trainer wraps it under torchrun
        ddp = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
        optimizer = build_optimizer_for(model, plan.optim)
        g = torch.Generator().manual_seed(0)
        (sw, sh), (tw, th) = cfg.data.source_size, cfg.data.target_size
        images = torch.randn(plan.batch_size, 3, sh, sw, generator=g) * 50
        labels = torch.randint(-1, cfg.data.num_classes, (plan.batch_size, sh, sw), generator=g)
        t_images = torch.randn(plan.target_batch_size, 3, th, tw, generator=g) * 50
        logs = train_step(ddp, plan, images, labels, iter([(t_images, None, None)]), device, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = torch.ones(1, device=device)
        tdist.all_reduce(total)
        _sync(device)
        changed = sum(not torch.equal(before[k], v) for k, v in model.state_dict().items()
                      if v.is_floating_point())
        losses = {k: float(v) for k, v in logs.items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise RuntimeError(f"non-finite losses in the DDP step: {losses}")
        return {"backend": backend, "world_size": tdist.get_world_size(), "init_seconds": round(init_seconds, 2),
                "losses": losses, "losses_finite": True, "all_reduce_sum": float(total),
                "tensors_changed_by_the_step": changed, "source_size": [sw, sh], "target_size": [tw, th]}
    finally:
        tdist.destroy_process_group()


RUNNERS = {"train_step": section_train_step, "evaluation_flip": section_evaluation, "iw_loss": section_iw_loss,
           "adaptation": section_adaptation, "notebook": section_notebook, "ddp": section_ddp}


def summary(report: dict) -> str:
    s = report["sections"]
    lines = [f"device: {report['device']} | torch {report['torch']} | python {report['python']}"]
    t = s.get("train_step", {})
    if t.get("status") == "ok":
        lines.append(f"{'train step ' + t['batch'] + ' (ms / it, img/s, peak GiB)':<48}"
                     + "".join(f"{n:>22}" for n in VARIANTS))
        lines.append(f"{'':<48}" + "".join(
            f"{t[n]['ms_per_iteration']:>9.1f} {t[n]['images_per_second']:>5.1f} {t[n]['peak_gib'] or 0:>5.1f}"
            for n in VARIANTS))
        lines.append(f"bf16+channels_last / TF32 time: {t['bf16_channels_last']['time_ratio_to_tf32']}")
    e = s.get("evaluation_flip", {})
    if e.get("status") == "ok":
        lines.append(f"eval + flip {e['size'][0]}x{e['size'][1]}: TF32 {e['tf32']['ms_per_image']} ms, "
                     f"bf16+CL {e['bf16_channels_last']['ms_per_image']} ms; argmax agreement {e['argmax_agreement']}")
    for name, entry in s.items():
        state = entry["status"] + (f" ({entry['error']})" if entry.get("error") else "")
        lines.append(f"  {name:<16} {state}  {entry.get('seconds', '?')} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="runs/gpu_check", help="folder for gpu_check.json")
    parser.add_argument("--cpu", action="store_true", help="the CPU rehearsal at toy sizes")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of " + ", ".join(SECTIONS))
    parser.add_argument("--fail", choices=SECTIONS, help="make this section raise (tests the error path)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; nothing to measure (--cpu rehearses on the CPU)",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, CPU if args.cpu else GPU, args.fail)
    check.write()
    try:
        for name in SECTIONS:
            if name in chosen:
                check.run_section(name, RUNNERS[name])
    finally:
        shutil.rmtree(check.tmp, ignore_errors=True)
    check.report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    check.write()
    print(summary(check.report), flush=True)
    return 0 if all(e["status"] == "ok" for e in check.report["sections"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
