"""GPU check for a lent accelerator (called by ``benchmarks/gpu_check.sh``).

1. the ``smoke`` course's training runs on CUDA (source + the five methods), wall time;
2. one DeepLabv2-ResNet-101 adaptation iteration at the paper's sizes (source 1280×720 + target
   1024×512, batch 1+1, MaxSquare+IW+Multi, the engine's own step) in fp32 and with bf16 autocast
   + channels_last: ms per iteration, peak GPU memory, the ratio, and the losses of the first
   iteration from identical weights and inputs (relative difference);
3. evaluation of one 1024×512 image with flip ensembling, same two modes: ms per image, peak
   memory, and the share of pixels whose argmax agrees.

Self-contained: synthetic inputs for 2 and 3, MiniCity generated locally for 1; nothing is
downloaded. Writes ``gpu_check.json`` into the folder given as the first argument.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from maxsq_lib import config as C  # noqa: E402
from maxsq_lib.engine.evaluation import predict_probabilities  # noqa: E402
from maxsq_lib.engine.build import build_model, build_optimizer_for  # noqa: E402
from maxsq_lib.engine.trainer import plan_for, train_step  # noqa: E402

LOSS_TOLERANCE = 0.02
"""Accepted relative difference of bf16 vs fp32 losses on the first iteration (bf16 keeps 8 bits
of mantissa; the softmax and losses are computed in fp32 inside autocast)."""


def _sync() -> None:
    torch.cuda.synchronize()


def smoke_course(work: Path) -> dict:
    from maxsq_prep.minicity import generate_minicity
    from maxsq_lib.engine import train

    data, runs = work / "minicity-smoke", work / "runs"
    t0 = time.perf_counter()
    generate_minicity(root=data, profile="smoke", progress=False)
    over = {"runs_root": str(runs), "data": {"root": str(data)}, "device": "cuda"}
    train(C.resolve("smoke", "minicity", None, over), "source", progress=False)
    result = {}
    for method in ("none", "minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi"):
        m = train(C.resolve("smoke", "minicity", method, over), "adapt", progress=False)
        result[method] = round(100 * m["last"]["miou"], 2)
    return {"seconds": round(time.perf_counter() - t0, 1), "miou_smoke": result}


def _paper_cfg(amp: str, channels_last: bool) -> C.RunConfig:
    return C.resolve("paper", "gta5_cityscapes", "maxsquare_iw_multi",
                     {"amp": amp, "channels_last": channels_last, "device": "cuda",
                      "data": {"target_size": [1024, 512]}})


def train_iteration(amp: str, channels_last: bool, state: dict, iterations: int = 10) -> dict:
    cfg = _paper_cfg(amp, channels_last)
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(state)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    plan = plan_for(cfg, "adapt")
    optimizer = build_optimizer_for(model, plan.optim)
    g = torch.Generator().manual_seed(0)
    (sw, sh), (tw, th) = cfg.data.source_size, cfg.data.target_size
    images = torch.randn(1, 3, sh, sw, generator=g) * 50
    labels = torch.randint(0, cfg.data.num_classes, (1, sh, sw), generator=g)
    t_images = torch.randn(1, 3, th, tw, generator=g) * 50
    model.train()
    first = None
    times = []
    torch.cuda.reset_peak_memory_stats()
    for it in range(iterations + 3):
        _sync()
        t0 = time.perf_counter()
        logs = train_step(model, plan, images, labels, iter([(t_images, None, None)]), device, cfg)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync()
        if first is None:
            first = {k: float(v) for k, v in logs.items()}
        if it >= 3:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"ms_per_iteration": round(1000 * times[len(times) // 2], 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "first_losses": first}


@torch.no_grad()
def evaluation(amp: str, channels_last: bool, state: dict, repeats: int = 10) -> dict:
    cfg = _paper_cfg(amp, channels_last)
    model = build_model(cfg)
    model.load_state_dict(state)
    model = model.cuda().eval()
    image = torch.randn(1, 3, 512, 1024, generator=torch.Generator().manual_seed(1)).cuda() * 50
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" else torch.autocast("cuda", enabled=False)
    torch.cuda.reset_peak_memory_stats()
    times, probs = [], None
    for r in range(repeats + 2):
        _sync()
        t0 = time.perf_counter()
        with ctx:
            probs = predict_probabilities(model, image, flip=True)
        _sync()
        if r >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"ms_per_image": round(1000 * times[len(times) // 2], 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "argmax": probs.argmax(1).cpu()}


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; nothing to measure", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0)
    report: dict = {"device": name, "torch": str(torch.__version__)}
    with tempfile.TemporaryDirectory() as tmp:
        report["smoke_course"] = smoke_course(Path(tmp))
    torch.manual_seed(0)
    state = build_model(_paper_cfg("none", False)).state_dict()
    fp32 = train_iteration("none", False, state)
    bf16 = train_iteration("bf16", True, state)
    rel = {k: abs(bf16["first_losses"][k] - v) / max(abs(v), 1e-12)
           for k, v in fp32["first_losses"].items() if k in bf16["first_losses"]}
    report["train_iteration"] = {"fp32": fp32, "bf16_channels_last": bf16,
                                 "speedup": round(fp32["ms_per_iteration"] / bf16["ms_per_iteration"], 2),
                                 "loss_relative_difference": rel,
                                 "losses_within_tolerance": all(v <= LOSS_TOLERANCE for v in rel.values()),
                                 "tolerance": LOSS_TOLERANCE}
    e32, e16 = evaluation("none", False, state), evaluation("bf16", True, state)
    agree = float((e32.pop("argmax") == e16.pop("argmax")).float().mean())
    report["evaluation_flip"] = {"fp32": e32, "bf16_channels_last": e16,
                                 "speedup": round(e32["ms_per_image"] / e16["ms_per_image"], 2),
                                 "argmax_agreement": round(agree, 4)}
    t, e = report["train_iteration"], report["evaluation_flip"]
    print(f"device: {name} | torch {torch.__version__}")
    print(f"smoke course (training runs) on CUDA: {report['smoke_course']['seconds']} s")
    print(f"{'measurement':<44}{'fp32':>10}{'bf16+CL':>10}{'ratio':>8}")
    print(f"{'R101 adaptation iteration (ms)':<44}{fp32['ms_per_iteration']:>10}{bf16['ms_per_iteration']:>10}{t['speedup']:>8}")
    print(f"{'R101 adaptation peak memory (GiB)':<44}{fp32['peak_gib']:>10}{bf16['peak_gib']:>10}")
    print(f"{'R101 eval 1024x512 + flip (ms/image)':<44}{e32['ms_per_image']:>10}{e16['ms_per_image']:>10}{e['speedup']:>8}")
    print(f"{'R101 eval peak memory (GiB)':<44}{e32['peak_gib']:>10}{e16['peak_gib']:>10}")
    print(f"first-iteration losses, max relative difference: {max(rel.values()):.4f} "
          f"(tolerance {LOSS_TOLERANCE}); eval argmax agreement {agree:.4f}")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
