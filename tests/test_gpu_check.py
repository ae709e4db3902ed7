"""The GPU check (``benchmarks/gpu_check.sh`` / ``gpu_check.py``) in its CPU rehearsal.

The check runs once on a lent GPU machine, with no second try; its ``--cpu`` mode runs every
section here at toy sizes, so that what can fail without a GPU (imports, configs, the fabricated
layouts, papermill, the process group, the report) has failed here first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["train_step", "evaluation_flip", "iw_loss", "adaptation", "notebook", "ddp"]


def _env() -> dict:
    return dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg", PYTHON=sys.executable,
                PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(out), "--cpu"],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=600)
    seconds = time.perf_counter() - t0
    print(f"gpu_check --cpu: {seconds:.1f} s")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return json.loads((out / "gpu_check.json").read_text()), out


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_every_section_ran_and_the_report_is_whole(rehearsal):
    report, _ = rehearsal
    assert report["mode"] == "cpu" and report["finished"]
    assert list(report["sections"]) == SECTIONS
    for name, entry in report["sections"].items():
        assert entry["status"] == "ok", (name, entry)
        assert entry["seconds"] > 0


@pytest.mark.slow
def test_training_step_is_timed_with_speed_settings_in_every_variant(rehearsal):
    step = rehearsal[0]["sections"]["train_step"]
    assert step["method"] == "maxsquare_iw_multi" and step["batch"] == "1+1"
    for name in ("tf32", "bf16", "bf16_channels_last"):
        v = step[name]
        # reset before timing, whatever ran before in the process
        assert v["deterministic_algorithms"] is False and v["cudnn_benchmark"] is True, v
        assert v["ms_per_iteration"] > 0 and v["images_per_second"] > 0
        assert v["losses_finite"] and _finite(v["first_losses"].values())
    assert step["bf16_channels_last"]["time_ratio_to_tf32"] > 0
    assert step["bf16_channels_last"]["first_losses_within_tolerance"]


@pytest.mark.slow
def test_evaluation_with_flip_is_timed(rehearsal):
    ev = rehearsal[0]["sections"]["evaluation_flip"]
    for name in ("tf32", "bf16_channels_last"):
        assert ev[name]["ms_per_image"] > 0 and ev[name]["probabilities_finite"]
    assert 0 <= ev["argmax_agreement"] <= 1


@pytest.mark.slow
def test_iw_loss_matches_the_authors_formulation(rehearsal):
    iw = rehearsal[0]["sections"]["iw_loss"]
    assert len(iw["cases"]) >= 2 and iw["faithful"] is True
    assert iw["max_abs_difference"] < 1e-5
    assert all(c["relative_difference"] < 1e-5 for c in iw["cases"])
    largest = max(c["grad_max_abs"] for c in iw["cases"])
    assert iw["grad_max_abs_difference"] < 1e-4 * largest


@pytest.mark.slow
def test_short_adaptation_on_the_fabricated_layouts_has_finite_losses(rehearsal):
    ad = rehearsal[0]["sections"]["adaptation"]
    assert ad["profile"] == "paper" and ad["method"] == "maxsquare_iw_multi"
    for stage in ("source", "adapt"):
        s = ad[stage]
        assert s["losses_finite"] and s["logged_iterations"] == s["iterations"] == 2, s
        assert _finite(s["last_losses"].values()) and s["last_losses"]
    assert ad["source"]["run"] == "source_multi"
    assert "target_loss" in ad["adapt"]["last_losses"]
    assert 0 <= ad["adapt"]["miou_last"] <= 1


@pytest.mark.slow
def test_notebook_04_runs_in_the_paper_profile(rehearsal):
    report, out = rehearsal
    nb = report["sections"]["notebook"]
    assert nb["profile"] == "paper" and nb["error_outputs"] == 0
    assert nb["executed_cells"] == nb["code_cells"] > 10
    # the notebook trained its own source model and adaptation run on the fabricated files
    assert "paper/gta5_cityscapes/source/seed0" in nb["runs_present"]
    assert f"paper/gta5_cityscapes/{nb['method']}/seed0" in nb["runs_present"]
    executed = json.loads((out / nb["output"]).read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and 'profile = "paper"' in "".join(injected[0]["source"])


@pytest.mark.slow
def test_one_process_ddp_step(rehearsal):
    ddp = rehearsal[0]["sections"]["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 1
    assert ddp["losses_finite"] and _finite(ddp["losses"].values())
    assert ddp["all_reduce_sum"] == 1.0 and ddp["tensors_changed_by_the_step"] > 0


def test_a_failing_section_records_one_line_and_the_next_still_runs(tmp_path):
    # through the shell script, as the device runs it
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--cpu",
                          "--sections", "evaluation_flip,iw_loss", "--fail", "evaluation_flip"],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=300)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["sections"]) == ["evaluation_flip", "iw_loss"]
    failed = report["sections"]["evaluation_flip"]
    assert failed["status"] == "error"
    assert failed["error"] == "RuntimeError: failure requested by --fail evaluation_flip"
    assert failed["where"].startswith("gpu_check.py:")
    assert report["sections"]["iw_loss"]["status"] == "ok"
    assert report["sections"]["iw_loss"]["max_abs_difference"] < 1e-5
    assert not list(tmp_path.glob(".*.tmp")) and "finished" in report


def test_without_cuda_and_without_cpu_it_says_so(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=120)
    assert run.returncode == 2 and "CUDA is not available" in run.stderr
