"""Checkpoints: exact round trips, atomic writes, the authors' file layouts, unsafe and broken files."""

from __future__ import annotations

import dataclasses
import enum
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maxsq_lib.checkpoint import (
    CheckpointError,
    LoadReport,
    capture_rng_states,
    compare_state_dicts,
    load_checkpoint,
    load_weights,
    read_weights,
    restore_rng_states,
    save_checkpoint,
    to_storable,
)
from maxsq_lib.models import deeplabv2, parameter_groups

TINY = {"blocks": (1, 1, 1, 1), "width": 4, "aspp_dilations": (1, 2, 3, 4)}


def tiny_model(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return deeplabv2(num_classes, **TINY)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameter_groups(model, 0.01), lr=0.01, momentum=0.9, weight_decay=5e-4)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad()
    main, aux = model(x)
    (main.square().mean() + 0.1 * aux.square().mean()).backward()
    optimizer.step()


def draws() -> tuple:
    return torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def authors_style_file(path: Path, state: dict, legacy: bool = True, **meta) -> None:
    """A file laid out as the authors' releases: DataParallel keys, PyTorch-1.0 style (legacy) format.

    ``best_MIou`` is a numpy float64, pickled under numpy 1.x's module path as in their files.
    """
    payload = {
        "epoch": 3,
        "iteration": 8925,
        "state_dict": {"module." + k: v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "best_MIou": np.float64(0.4125),
        **meta,
    }
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    if legacy:  # a plain pickle stream: the module path can be rewritten in place
        path.write_bytes(
            path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        )


# ---------------------------------------------------------------------------------------------
# Our checkpoints


def test_round_trip_restores_model_optimizer_rng_and_resumes_identically(tmp_path):
    model = tiny_model(seed=0)
    optimizer = sgd(model)
    x = torch.randn(2, 3, 33, 41)
    for _ in range(2):
        train_step(model, optimizer, x)
    config = {"run": {"out_dir": tmp_path / "runs", "crop": (128, 64), "lr": np.float32(0.5)}}
    path = save_checkpoint(
        tmp_path / "ckpt.pt",
        model=model,
        optimizer=optimizer,
        step=2,
        config=config,
        extra={"miou": [0.1, 0.2]},
    )
    after_save = draws()

    restored = tiny_model(seed=1)
    restored_optimizer = sgd(restored)
    ckpt = load_checkpoint(path, restored, restored_optimizer, restore_rng=True)
    assert draws() == after_save
    assert (
        ckpt["step"] == 2
        and ckpt["extra"] == {"miou": [0.1, 0.2]}
    )
    assert ckpt["config"] == {
        "run": {"out_dir": str(tmp_path / "runs"), "crop": (128, 64), "lr": 0.5}
    }
    assert_same_state(model, restored)
    assert restored_optimizer.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]

    train_step(model, optimizer, x)
    train_step(restored, restored_optimizer, x)
    assert_same_state(model, restored)  # momentum buffers came back too

    plain = torch.load(path, weights_only=True)  # readable without our loader
    assert plain["format"] == "maxsq-checkpoint" and set(plain["rng"]) == {
        "python",
        "numpy",
        "torch",
        "cuda",
    }


def test_wrapped_model_is_saved_without_module_prefix_and_loads_into_a_wrapped_model(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "c.pt", model=nn.DataParallel(model), step=0)
    assert not any(
        k.startswith("module.") for k in torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    )
    other = nn.DataParallel(tiny_model(seed=5))
    ckpt = load_checkpoint(tmp_path / "c.pt", model=other)
    assert_same_state(model, other.module)
    assert ckpt["optimizer"] is None and ckpt["config"] is None


def test_a_save_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=tiny_model(), step=1)
    before = path.read_bytes()

    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*extra\['fn'\]"):
        save_checkpoint(path, model=tiny_model(), step=2, extra={"fn": lambda: 0})

    def write_half_then_fail(obj, handle, *args, **kwargs):
        handle.write(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", write_half_then_fail)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*disk full"):
        save_checkpoint(path, model=tiny_model(), step=3)
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_ctrl_c_during_a_save_is_an_interrupt_not_a_broken_checkpoint(tmp_path):
    """torch.save turns a KeyboardInterrupt raised by the file's write into a RuntimeError; the
    save must give the interrupt back (the command then says what was kept) and keep the old file."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model=tiny_model(), step=1)
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        writes = [0]
        original = handle.write

        def write(data):
            writes[0] += 1
            if writes[0] == 3:
                raise KeyboardInterrupt
            return original(data)

        handle.write = write
        real_save(obj, handle, *args, **kwargs)

    torch.save = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, model=tiny_model(), step=2)
    finally:
        torch.save = real_save
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_bad_step_and_wrong_optimizer_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="step"):
        save_checkpoint(tmp_path / "c.pt", model=tiny_model(), step=-1)
    save_checkpoint(tmp_path / "c.pt", model=tiny_model(), step=0)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "c.pt", optimizer=sgd(tiny_model()))
    save_checkpoint(tmp_path / "c.pt", model=tiny_model(), optimizer=sgd(tiny_model()), step=0)
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_checkpoint(tmp_path / "c.pt", optimizer=other)


def test_rng_states_survive_weights_only_serialisation(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.randn()  # cached Gaussians are part of the state
    torch.save(capture_rng_states(), tmp_path / "rng.pt")
    expected = draws() + (random.gauss(0, 1), np.random.randn())
    restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() + (random.gauss(0, 1), np.random.randn()) == expected
    with pytest.raises(ValueError, match="python"):
        restore_rng_states({"torch": torch.get_rng_state()})


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Opts:
    path: Path
    sizes: tuple


def test_to_storable_converts_plain_types_and_names_what_it_cannot_store():
    stored = to_storable(
        {
            "a": Opts(Path("x/y"), (1, 2)),
            "b": np.int64(3),
            "c": np.arange(3),
            "d": Colour.RED,
            "e": {3, 1},
            "f": torch.float16,
        }
    )
    assert stored["a"] == {"path": "x/y", "sizes": (1, 2)} and type(stored["b"]) is int
    assert (
        torch.equal(stored["c"], torch.arange(3)) and stored["d"] == "red" and stored["e"] == [1, 3]
    )
    assert stored["f"] is torch.float16
    with pytest.raises(TypeError, match=r"config\['model'\]\[1\].*Linear"):
        to_storable({"model": [1, nn.Linear(1, 1)]}, "config")
    with pytest.raises(TypeError, match="dict key"):
        to_storable({(1, 2): 3})


def test_compare_state_dicts_sorts_keys_into_loaded_missing_unexpected_mismatched():
    model_state = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    report = compare_state_dicts(
        model_state, {"a": torch.ones(2), "b": torch.ones(4), "z": torch.ones(1)}
    )
    assert report.loaded == ["a"] and report.missing == ["c"] and report.unexpected == ["z"]
    assert report.mismatched == [("b", (4,), (3,))] and not report.ok
    assert "b: file [4] vs model [3]" in str(report)
    assert LoadReport(loaded=["a"]).ok


# ---------------------------------------------------------------------------------------------
# The authors' released checkpoints


def test_reference_checkpoint_in_the_authors_layout_loads(tmp_path):
    source = tiny_model(seed=7)
    authors_style_file(tmp_path / "GTA5_source.pth", source.state_dict())
    model = nn.DataParallel(tiny_model(seed=8))
    report = load_weights(model, tmp_path / "GTA5_source.pth")
    assert_same_state(source, model.module)
    assert report.ok and len(report.loaded) == len(source.state_dict())
    assert report.info == {"epoch": 3, "iteration": 8925, "best_MIou": pytest.approx(0.4125), "format": "authors"}
    assert report.note.startswith(f"loaded {tmp_path / 'GTA5_source.pth'}: the authors' training checkpoint")

    # A bare DataParallel state_dict (no 'state_dict' entry) loads as well.
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "bare.pth")
    bare = tiny_model(seed=9)
    assert load_weights(bare, tmp_path / "bare.pth").info["format"] == "state_dict_module"
    assert_same_state(source, bare)


def test_reference_checkpoint_with_an_extra_key_names_it(tmp_path):
    state = tiny_model().state_dict()
    state["layer7.conv.weight"] = torch.zeros(1)
    authors_style_file(tmp_path / "extra.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_weights(tiny_model(), tmp_path / "extra.pth")
    message = str(info.value)
    assert str(tmp_path / "extra.pth") in message
    assert "unexpected keys (1)" in message and "layer7.conv.weight" in message


def test_reference_checkpoint_with_16_classes_into_19_names_the_shape_mismatch(tmp_path):
    source = tiny_model(16)
    authors_style_file(tmp_path / "synthia_source.pth", source.state_dict(), legacy=False)
    model = tiny_model(19)
    with pytest.raises(CheckpointError) as info:
        load_weights(model, tmp_path / "synthia_source.pth")
    message = str(info.value)
    assert "shape mismatches (16)" in message
    assert "layer5.conv2d_list.0.weight: file [16, 64, 3, 3] vs model [19, 64, 3, 3]" in message
    assert "heads have 16 classes, the model's 19" in message

    # Non-strict: the backbone loads, the heads are reported and left alone.
    heads_before = model.layer6.conv2d_list[0].weight.clone()
    report = load_weights(model, tmp_path / "synthia_source.pth", strict=False)
    assert len(report.mismatched) == 16 and not report.missing and not report.unexpected
    assert torch.equal(model.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    assert torch.equal(model.layer6.conv2d_list[0].weight, heads_before)


def test_resume_points_to_the_one_weight_loader_which_reads_ours_too(tmp_path):
    authors_style_file(tmp_path / "authors.pth", tiny_model().state_dict())
    with pytest.raises(CheckpointError, match="use load_weights, which reads every format"):
        load_checkpoint(tmp_path / "authors.pth")
    source = tiny_model(seed=5)
    save_checkpoint(tmp_path / "ours.pt", model=source, step=7)
    model = tiny_model(seed=6)
    report = load_weights(model, tmp_path / "ours.pt")
    assert_same_state(source, model)
    assert report.info == {"step": 7, "format": "maxsq"}


def init_style_state(model: nn.Module, layer4_channels: int) -> dict:
    """The DeepLab COCO init file's layout: 'Scale.' keys, no num_batches_tracked, its own layer5."""
    state = {
        "Scale." + k: v.clone()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked") and not k.startswith(("layer5", "layer6"))
    }
    for i in range(4):
        state[f"Scale.layer5.conv2d_list.{i}.weight"] = torch.randn(21, layer4_channels, 3, 3)
        state[f"Scale.layer5.conv2d_list.{i}.bias"] = torch.randn(21)
    return state


def test_init_checkpoint_copies_the_backbone_and_leaves_the_heads(tmp_path):
    donor = tiny_model(seed=3)
    donor.layer1[0].bn1.running_mean.fill_(0.25)
    torch.save(init_style_state(donor, layer4_channels=4 * 8 * 4), tmp_path / "init.pth")
    model = tiny_model(seed=4)
    heads_before = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith(("layer5", "layer6"))
    }

    report = load_weights(model, tmp_path / "init.pth", purpose="init")

    state = model.state_dict()
    for key, value in donor.state_dict().items():
        if key.startswith(("layer5", "layer6")):
            assert torch.equal(state[key], heads_before[key]), key
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(state[key], value), key
    assert report.skipped == [
        f"Scale.layer5.conv2d_list.{i}.{p}" for i in range(4) for p in ("weight", "bias")
    ]
    assert set(report.missing) == set(heads_before) | {
        k for k in state if k.endswith("num_batches_tracked")
    }
    assert not report.unexpected and not report.mismatched
    assert "skipped keys (8)" in str(report)


def test_init_checkpoint_that_does_not_fit_is_refused(tmp_path):
    donor = tiny_model()
    state = init_style_state(donor, 128)
    del state["Scale.layer2.0.conv1.weight"]
    torch.save(state, tmp_path / "init.pth")
    with pytest.raises(CheckpointError, match=r"(?s)init\.pth.*layer2\.0\.conv1\.weight"):
        load_weights(tiny_model(), tmp_path / "init.pth", purpose="init")
    # The init file has no trained heads: it starts source training and serves nothing else.
    torch.save(init_style_state(donor, 4 * 8 * 4), tmp_path / "whole.pth")
    for purpose in ("start", "evaluate"):
        with pytest.raises(CheckpointError, match="this is the DeepLab init file"):
            load_weights(tiny_model(), tmp_path / "whole.pth", purpose=purpose)
    with pytest.raises(ValueError, match="purpose must be one of"):
        load_weights(tiny_model(), tmp_path / "whole.pth", purpose="resume")


# ---------------------------------------------------------------------------------------------
# Broken and unsafe files


def broken_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    torch.save({"x": torch.zeros(256)}, good)
    files = {
        "text": tmp_path / "notes.pth",
        "random": tmp_path / "random.pth",
        "truncated": tmp_path / "truncated.pth",
        "empty": tmp_path / "empty.pth",
        "missing": tmp_path / "missing.pth",
        "directory": tmp_path / "folder.pth",
    }
    files["text"].write_text("this is not a checkpoint\n")
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["empty"].write_bytes(b"")
    files["directory"].mkdir()
    return files


LOADERS = {
    "load_checkpoint": lambda path: load_checkpoint(path, tiny_model()),
    "load_weights": lambda path: load_weights(tiny_model(), path),
    "read_weights": read_weights,
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_broken_files_give_an_error_naming_the_path(tmp_path, loader):
    for kind, path in broken_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            LOADERS[loader](path)
        message = str(info.value)
        assert str(path) in message, kind
        assert "expected a PyTorch checkpoint" in message, kind


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, loader, zip_format):
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.pth"
    payload = {"hook": RunsACommand(marker), "state_dict": {"module.conv1.weight": torch.zeros(1)}}
    if zip_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match=r"refused for safety.*system") as info:
        LOADERS[loader](path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()
