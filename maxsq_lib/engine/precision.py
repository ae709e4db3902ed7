"""Numeric precision of a run: ``amp`` (``auto``, ``none``, ``bf16``, ``fp16``) and the autocast it means.

``auto`` follows the machine: bf16 autocast where the processor computes bf16 natively (a CPU with
AVX-512 BF16 or AMX instructions; a CUDA device that supports bf16), fp32 elsewhere, because bf16
on a CPU without those instructions is emulated and slower than fp32. The choice is made once per
run and recorded (``config.yaml`` holds the concrete value, ``metrics.json`` the request and the
reason). Autocast covers the network's convolutions; the losses, softmax, entropy, IW histograms
and confusion matrices compute in float32 (the logits are cast back before any of them).
Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ..config import AMP_CHOICES

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX tiles), as torch detects them."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def cuda_has_bf16() -> bool:
    """Whether the current CUDA device computes bf16 (compute capability 8.0 and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_amp(amp: str, device: torch.device | str) -> tuple[str, str]:
    """The concrete precision of ``amp`` on ``device``, and why.

    Args:
        amp: one of :data:`AMP_CHOICES`.
        device: where the run computes (``"auto"``: CUDA when available, else the CPU).
    Returns:
        ``(concrete, reason)``: concrete is ``none``, ``bf16`` or ``fp16``; reason is one line.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {list(AMP_CHOICES)}, got {amp!r}")
    if amp != "auto":
        return amp, "set explicitly"
    if device == "auto":  # as the engine resolves it: CUDA when there is one
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return "bf16", "auto: this CPU has bf16 instructions (AVX-512 BF16 or AMX)"
        return "none", "auto: this CPU has no bf16 instructions (bf16 would be emulated, slower than fp32)"
    if device.type == "cuda":
        if cuda_has_bf16():
            return "bf16", "auto: this CUDA device supports bf16"
        return "none", "auto: this CUDA device does not support bf16"
    return "none", f"auto: no bf16 rule for device type {device.type!r}"


def autocast(device: torch.device | str, amp: str):
    """The autocast context of ``amp`` (``auto`` resolved for ``device``); float32 for ``none``."""
    device = torch.device(device)
    concrete, _ = resolve_amp(amp, device)
    if concrete == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[concrete])
