"""The dry run's costs (issue 23): estimated GPU memory per stage against a hand computation, the
measured time per iteration from a gpu_check report, and the /dev/shm warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from maxsq_lib import config as C
from maxsq_lib.cli import main
from maxsq_lib.course import costs, dryrun


class Toy(torch.nn.Module):
    """A 1×1 convolution (3 → 4 channels, 16 parameters) and a ReLU, as (main, aux) logits."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x, with_aux=True):
        return torch.relu(self.conv(x)), None


def test_saved_activations_by_hand():
    model = Toy().to("meta")
    # an 8×8 image: the input (3·64 values) for the convolution, the ReLU's output (4·64) and the
    # loss's float32 log-softmax of it (4·64); the weight is a parameter, not an activation
    assert costs.saved_activation_bytes(model, 1, (8, 8), False) == (3 * 64 + 4 * 64 + 4 * 64) * 4
    model.to(torch.bfloat16)
    assert costs.saved_activation_bytes(model, 1, (8, 8), False, torch.bfloat16) == (3 * 64 + 4 * 64) * 2 + 4 * 64 * 4


def test_printed_memory_equals_the_hand_computation(smoke_root, tmp_path, capsys, monkeypatch):
    import maxsq_lib.engine.build as build

    monkeypatch.setattr(build, "build_model", lambda cfg: Toy())
    monkeypatch.setattr(costs, "_MEMORY", {})
    monkeypatch.setattr(costs, "_META_MODELS", {})
    main(["adapt", "--method", "maxsquare", "--profile", "smoke", "--dry-run", "--data-root", str(smoke_root),
          "--runs", str(tmp_path)])
    out = capsys.readouterr().out
    # smoke adaptation: Adam (weights, gradients, 2 moments: 4 × 4 bytes × 16 parameters), batch 2
    # at 64×32 in both passes: 2·2048·(3 + 4 + 4) floats saved in fp32; in bf16 the input and ReLU
    # output halve, the log-softmax stays float32, and autocast's bf16 weight copy adds 2 × 16 bytes
    pixels = 2 * 64 * 32
    fp32 = 4 * 4 * 16 + pixels * 11 * 4
    bf16 = 4 * 4 * 16 + 2 * 16 + pixels * 7 * 2 + pixels * 4 * 4
    assert (fp32, bf16) == (180480, 123168)
    assert f"GPU memory per iteration, estimated: fp32 176.2 KiB, bf16 120.3 KiB (0.00 M parameters" in out


def test_paper_memory_and_the_measured_step(monkeypatch, tmp_path):
    cfg = C.resolve("paper", "gta5_cityscapes", "maxsquare")
    m = costs.training_memory(cfg, "adapt")
    assert m["parameters"] == 44_601_560  # DeepLabv2-ResNet-101 with two ASPP heads of 19 classes
    # SGD with momentum: 3 × 4 bytes per parameter; the 1280×720 source pass saves the most
    assert 6 < m["fp32"] / 2**30 < 7.5 and 0.5 < m["bf16"] / m["fp32"] < 0.6
    assert costs.measured_step(cfg, "adapt", (Path("x.json"), {"mode": "cpu"})) is None
    report = {"mode": "cuda", "device": "NVIDIA H100", "sections": {"train_step": {
        "status": "ok", "batch": "1+1", "source_size": [1280, 720], "target_size": [1024, 512],
        "tf32": {"ms_per_iteration": 400.0}, "bf16": {"ms_per_iteration": 250.0},
        "bf16_channels_last": {"ms_per_iteration": 180.0}}}}
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(report))
    hours = 29_750 * 0.4 / 3600  # the paper's 29,750 iterations at the TF32 step (amp: none)
    assert costs.measured_step(cfg, "adapt", (path, report)) == (
        f"measured on NVIDIA H100 ({path}): 400 ms/iteration TF32, 250 bf16, 180 bf16 + channels_last "
        f"→ 29,750 iterations ≈ {hours:.1f} h at this run's precision (tf32)")
    assert costs.measured_step(cfg, "source", (path, report)) is None


def test_shared_memory_warning(monkeypatch, tmp_path, capsys):
    cfg = C.resolve("paper", "gta5_cityscapes", "maxsquare")
    # 8 workers × 4 batches × (source 1280×720 + val 1024×512 + target 1024×512) × (3 float32 + int16)
    need = 8 * 4 * (1280 * 720 + 1024 * 512 + 1024 * 512) * 14
    assert cfg.eval.batch_size == 1 and costs.prefetch_bytes(cfg, "adapt") == need
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(64 * 2**20, 0, 64 * 2**20))
    main(["adapt", "--method", "maxsquare", "--profile", "paper", "--dry-run", "--data-root", str(tmp_path),
          "--runs", str(tmp_path)])
    out = capsys.readouterr().out
    assert (f"⚠ shared memory: /dev/shm\n      64.00 MiB, less than the {need / 2**20:.2f} MiB the loader workers "
            f"prefetch") in out
