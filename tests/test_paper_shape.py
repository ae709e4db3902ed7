"""The ``paper`` profile's shape on the CPU: notebook 04 through papermill on fabricated GTA5 and
Cityscapes files in their real layouts and at their native resolutions.

What runs is what a GPU run of the paper profile runs, minus the CUDA kernels: DeepLabv2-ResNet-101
(the ``paper`` preset, 44.6 M parameters), the authors' recipe (SGD, poly, batch 1 + 1, λ_T 0.09,
λ_seg 0.1), source pretraining and MaxSquare+IW+Multi (aux head, image-wise weights, pseudo-labels)
for two iterations each, the GTA5 / Cityscapes loaders reading 1914×1052 and 2048×1024 PNGs,
evaluation on two images with and without flip against 2048×1024 labels
(``eval.full_resolution_labels``), and every cell of ``04_adaptation`` with ``-p profile paper``,
its dose at the start included (at the loop's batch, 1 + 1).

One compromise, measured: the network's input sizes are a quarter of the paper's in each direction
(source 320×180, target and val 320×160 instead of 1280×720 and 1280×640). On this 2-core machine
one ResNet-101 forward pass at 1280×720 took 36 s and a training step about 4× that, so the two
stages, four evaluations and the notebook's dose at the paper's sizes would take about half an
hour. Everything that depends on the file sizes (the loaders' resize, the upsampling of the
predictions to the labels' 2048×1024) still runs at the real ones.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METHOD = "maxsquare_iw_multi"
SOURCE_SIZE, TARGET_SIZE = (320, 180), (320, 160)
"""A quarter of the paper's 1280×720 source and of Multi's 1280×640 target / val crops."""


def _env() -> dict:
    return dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def _size(wh) -> str:
    return f"[{wh[0]},{wh[1]}]"


@pytest.fixture(scope="module")
def paper_shape(tmp_path_factory):
    from maxsq_prep.fake_layouts import REAL_SIZES, fabricate

    tmp = tmp_path_factory.mktemp("paper_shape")
    t0 = time.perf_counter()
    # four GTA5 training images: the most the notebook's dose takes at any profile (one at the paper's)
    data = fabricate(tmp / "datasets", sizes=REAL_SIZES, source_train=4, source_val=2, target_train=2,
                     target_val=2)
    fabricated = time.perf_counter() - t0
    runs = tmp / "runs"
    overrides = [f"data.source_size={_size(SOURCE_SIZE)}", f"data.target_size={_size(TARGET_SIZE)}",
                 f"data.val_size={_size(TARGET_SIZE)}", "data.workers=0", "eval.full_resolution_labels=true",
                 "eval.limit=2", "source.init_checkpoint=null", "source.iterations=2", "adapt.iterations=2",
                 "eval.every=2", "log_every=1", "checkpoint_every=2", "image_every=2"]
    # Multi starts from the multi-level source model: the notebook trains it first (course.starting_model)
    out = tmp / "04_adaptation.ipynb"
    t2 = time.perf_counter()
    run = subprocess.run([str(BIN / "papermill"), str(REPO / "notebooks" / "04_adaptation.ipynb"), str(out),
                          "-p", "profile", "paper", "-p", "method", METHOD, "-p", "device", "cpu",
                          "-p", "data_root", str(data), "-p", "runs_root", str(runs),
                          "-y", json.dumps({"overrides": overrides}), "-k", "python3",
                          "--cwd", str(REPO / "notebooks"), "--no-progress-bar"],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=900)
    executed = time.perf_counter() - t2
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(f"paper shape: fabricate {fabricated:.1f} s, notebook 04 {executed:.1f} s")
    return {"data": data, "runs": runs / "paper" / "gta5_cityscapes", "notebook": json.loads(out.read_text())}


CITYSCAPES_19_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
"""The Cityscapes label ids of the 19 evaluated classes (the others are ignored)."""


def _labelled_pixels(data: Path) -> int:
    import numpy as np
    from PIL import Image

    files = sorted((data / "Cityscapes" / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    assert len(files) == 2
    return int(sum(np.isin(np.asarray(Image.open(f)), CITYSCAPES_19_IDS).sum() for f in files))


def _text(cell) -> str:
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for o in cell.get("outputs", []))


@pytest.mark.slow
def test_fabricated_files_have_the_native_sizes_and_layouts(paper_shape):
    from PIL import Image

    data = paper_shape["data"]
    assert Image.open(data / "GTA5" / "images" / "00001.png").size == (1914, 1052)
    assert Image.open(data / "GTA5" / "labels" / "00001.png").mode == "P"
    label = data / "Cityscapes" / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    assert Image.open(label).size == (2048, 1024)
    assert (data / "Cityscapes" / "list" / "val.txt").read_text().split() == [
        "val_frankfurt_000000_000019", "val_frankfurt_000001_000019"]


@pytest.mark.slow
def test_every_cell_of_notebook_04_ran_in_the_paper_profile(paper_shape):
    nb = paper_shape["notebook"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code)
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    injected = next(c for c in code if "injected-parameters" in c["metadata"].get("tags", []))
    assert 'profile = "paper"' in "".join(injected["source"])
    text = "\n".join(_text(c) for c in code)
    # the two fabricated target images at the target crop, logits upsampled to it
    assert "logits (B, C, H, W) = (2, 19, 160, 320)" in text
    assert "batches of 1 source + 1 target images, sgd at lr 0.00025" in text
    ratios = {m: float(r) for m, r in re.findall(r"^(\w+)\s+‖∇L_T‖ / ‖∇CE_s‖ = (\S+) at λ_T 1", text, re.M)}
    assert set(ratios) == {"minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi"}, text[-3000:]
    assert all(math.isfinite(r) and r > 0 for r in ratios.values()), ratios


@pytest.mark.slow
def test_the_adaptation_run_is_the_papers_recipe_with_every_path(paper_shape):
    import yaml

    run = paper_shape["runs"] / METHOD / "seed0"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["profile"] == "paper" and cfg["model"]["preset"] == "paper"
    a = cfg["adapt"]
    assert (a["method"], a["lambda_target"], a["lambda_seg"], a["batch_size"], a["target_batch_size"]) == (
        METHOD, 0.09, 0.1, 1, 1)
    assert (a["optim"]["name"], a["optim"]["lr"], a["optim"]["momentum"]) == ("sgd", 2.5e-4, 0.9)
    assert cfg["source"]["multi"] is True and cfg["eval"]["flip"] is True

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["init"].startswith("loaded ") and "source_multi/seed0/final.pt" in metrics["init"]
    log = metrics["train_log"]
    assert metrics["iterations"] == 2 and [r["iteration"] for r in log] == [1, 2]
    # every part of the step: source CE of both heads, IW MaxSquare, the aux head's pseudo-label CE
    parts = ("source_ce", "source_aux_ce", "target_main_loss", "target_aux_ce", "loss")
    assert all(r["finite"] and all(math.isfinite(r[k]) for k in parts) for r in log), log
    assert all(r["target_main_loss"] < 0 and 0 <= r["pseudo_label_fraction"] <= 1 for r in log), log
    # pseudo-labels were kept (about 5-8 % of the pixels at δ 0.95 from these weights), so the aux
    # head's CE had pixels to train on
    assert any(r["pseudo_label_fraction"] > 0 and r["target_aux_ce"] > 0 for r in log), log
    for key, flip in (("before", False), ("last", False), ("last_flip", True)):
        ev = metrics[key]
        assert (ev["images"], ev["label_resolution"], ev["flip"]) == (2, "full", flip), (key, ev)
        assert 0 <= ev["miou"] <= 1
    # the evaluation counted every pixel of the two 2048×1024 label maps that has one of the 19
    # classes, so the predictions were upsampled to the labels' size
    assert sum(map(sum, metrics["last"]["confusion"])) == _labelled_pixels(paper_shape["data"])
    assert (paper_shape["runs"] / "source_multi" / "seed0" / "final.pt").is_file()
    assert not (paper_shape["runs"] / "source").exists()  # the plain source model is not what Multi starts from
