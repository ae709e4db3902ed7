"""What a run costs, as the dry run prints it: the GPU memory of one training iteration (weights,
gradients, optimizer state and the activations a meta-device forward saves for backward; fp32 and
bf16), the shared memory the loader workers prefetch, and, once ``benchmarks/gpu_check.py`` has run
on a GPU, the measured time per iteration. Estimates, stated as such; nothing is allocated.
"""

from __future__ import annotations

from pathlib import Path

from .. import config as C


def saved_activation_bytes(model, batch: int, size, with_aux: bool, dtype=None) -> int:
    """Bytes autograd keeps for the backward pass of one forward, the loss's float32 log-softmax of
    each returned logit map included; each storage counted once, parameters not counted.

    Args:
        model: a network on the meta device (nothing is computed or allocated), returning
            ``(main, aux)``; its parameters and the input are in ``dtype``.
        batch: images per forward.
        size: ``(W, H)`` of the input.
        with_aux: compute the aux head.
        dtype: the input's dtype (default float32; bfloat16 stands for bf16 autocast, which
            casts every convolution's input and output).
    Returns:
        the bytes.
    """
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        if not isinstance(t, torch.nn.Parameter):
            storages[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    x = torch.empty(batch, 3, size[1], size[0], device="meta", dtype=dtype or torch.float32)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for logits in model(x, with_aux=with_aux):
            if logits is not None:
                logits.float().log_softmax(1)
    return sum(storages.values())


_MEMORY: dict[tuple, dict[str, int]] = {}
_META_MODELS: dict[tuple, object] = {}


def human_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def training_memory(cfg: C.RunConfig, stage: str) -> dict[str, int]:
    """Estimated GPU memory (bytes) of one training iteration of ``stage`` at fp32 and bf16.

    Weights, gradients and optimizer state in float32 (4 bytes × parameters × 3 for SGD with
    momentum, × 4 for Adam), bf16 autocast's copies of the weights (2 bytes × parameters), and the
    larger of the passes' saved activations (:func:`saved_activation_bytes`; the source and target
    passes are back-propagated one after the other). Activation gradients, cuDNN workspaces and the
    allocator's cache come on top: a floor, not a measurement.

    Args:
        cfg: the resolved run config.
        stage: ``"source"`` or ``"adapt"``.
    Returns:
        ``{"parameters", "fp32", "bf16"}``.
    """
    import torch

    from ..engine.build import build_model
    from ..engine.trainer import plan_for

    plan, d = plan_for(cfg, stage), cfg.data
    passes = [(plan.batch_size, d.source_size, plan.source_aux)]
    if plan.strategy is not None and plan.strategy.loss_fn is not None:
        passes.append((plan.target_batch_size, d.target_size, plan.strategy.uses_aux))
    o = plan.optim
    key = (cfg.model.preset, d.num_classes, cfg.model.aspp_branches, o.name, o.momentum > 0,
           tuple((b, tuple(size), aux) for b, size, aux in passes))
    if key not in _MEMORY:
        if key[:3] not in _META_MODELS:  # building ResNet-101, even on the meta device, takes seconds
            with torch.device("meta"):
                _META_MODELS[key[:3]] = build_model(cfg)
        model = _META_MODELS[key[:3]].float()
        n = sum(p.numel() for p in model.parameters())
        state = 4 * n * (2 + (2 if o.name == "adam" else int(o.momentum > 0)))
        fp32 = max(saved_activation_bytes(model, *p) for p in passes)
        bf16 = max(saved_activation_bytes(model.to(torch.bfloat16), *p, dtype=torch.bfloat16) for p in passes)
        _MEMORY[key] = {"parameters": n, "fp32": state + fp32, "bf16": state + 2 * n + bf16}
    return _MEMORY[key]


def prefetch_bytes(cfg: C.RunConfig, stage: str) -> int:
    """Shared memory the loader workers of a run fill: ``data.workers`` × prefetch factor ×
    the bytes of one batch (float32 images, int16 labels) of each loader alive at once (source,
    target in adaptation, evaluation).

    Args:
        cfg: the resolved run config.
        stage: ``"source"`` or ``"adapt"``.
    Returns:
        the bytes (0 without workers).
    """
    from ..engine.sampling import PREFETCH_FACTOR
    from ..engine.trainer import plan_for

    plan, d = plan_for(cfg, stage), cfg.data
    loaders = [(plan.batch_size, d.source_size), (cfg.eval.batch_size, d.val_size)]
    if stage == "adapt":
        loaders.append((plan.target_batch_size, d.target_size))
    batch = sum(b * w * h * (3 * 4 + 2) for b, (w, h) in loaders)
    return cfg.data.workers * PREFETCH_FACTOR * batch


def _gpu_check_report() -> tuple[Path, dict] | None:
    """The JSON ``benchmarks/gpu_check.py`` left: ``runs/gpu_check/gpu_check.json`` under the
    project root, or a path named in ``benchmarks/RESULTS.md``."""
    import json
    import re

    from .notebook import project_root

    root = project_root()
    results = root / "benchmarks" / "RESULTS.md"
    named = re.findall(r"[\w./-]*gpu_check\.json", results.read_text()) if results.is_file() else []
    for path in [root / "runs" / "gpu_check" / "gpu_check.json", *(root / n for n in named)]:
        try:
            return path, json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def measured_step(cfg: C.RunConfig, stage: str, report: tuple[Path, dict] | None = None) -> str | None:
    """The time per iteration ``benchmarks/gpu_check.py`` measured on a GPU for this stage's shape
    (an adaptation iteration at the same sizes and batch), with the stage's hours at the run's
    precision; None when no GPU measurement of that shape exists.

    Args:
        cfg: the resolved run config.
        stage: ``"source"`` or ``"adapt"``.
        report: ``(path, parsed JSON)``; default: :func:`_gpu_check_report`.
    Returns:
        one line, or None.
    """
    path, data = report or _gpu_check_report() or (None, {})
    t = data.get("sections", {}).get("train_step", {})
    a, d = cfg.adapt, cfg.data
    if (stage != "adapt" or data.get("mode") != "cuda" or t.get("status") != "ok"
            or t.get("batch") != f"{a.batch_size}+{a.target_batch_size}"
            or list(t.get("source_size", ())) != list(d.source_size)
            or list(t.get("target_size", ())) != list(d.target_size)):
        return None
    ms = {name: t[name]["ms_per_iteration"] for name in ("tf32", "bf16", "bf16_channels_last")}
    mine = "tf32" if cfg.amp == "none" else "bf16_channels_last" if cfg.channels_last else "bf16"
    hours = a.iterations * ms[mine] / 3.6e6
    return (f"measured on {data.get('device')} ({path}): {ms['tf32']:.0f} ms/iteration TF32, "
            f"{ms['bf16']:.0f} bf16, {ms['bf16_channels_last']:.0f} bf16 + channels_last "
            f"→ {a.iterations:,} iterations ≈ {hours:.1f} h at this run's precision ({mine})")


def cost_lines(cfg: C.RunConfig, stage: str, indent: str = "      ") -> list[str]:
    """The dry run's cost lines of one run: estimated memory, and the measured time if any."""
    m = training_memory(cfg, stage)
    lines = [f"{indent}GPU memory per iteration, estimated: fp32 {human_bytes(m['fp32'])}, bf16 {human_bytes(m['bf16'])} "
             f"({m['parameters'] / 1e6:.2f} M parameters with gradients and optimizer state + the "
             f"activations a meta-device forward saves for backward; workspaces and allocator cache on top)"]
    measured = measured_step(cfg, stage)
    return lines + ([f"{indent}{measured}"] if measured else [])
