"""DDP with two gloo processes (tests/ddp_worker.py): one gradient all-reduce per iteration, the
same BatchNorm statistics on both ranks at every evaluation, and a non-finite loss on one rank that
stops both ranks with the one-line error (no rank left waiting at a collective)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maxsq_lib.engine import train

from conftest import smoke_cfg  # noqa: E402  (tests/ is on sys.path under pytest)

ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def source_model(smoke_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    train(smoke_cfg(smoke_root, runs), "source", progress=False)
    return runs


def _two_ranks(out: Path, smoke_root, runs, method: str, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(out), str(smoke_root), str(runs), method, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("method, aux_trained", [("maxsquare", False), ("maxsquare_iw_multi", True)])
def test_one_allreduce_per_iteration_and_equal_batchnorm(source_model, smoke_root, tmp_path, method, aux_trained):
    ranks = _two_ranks(tmp_path, smoke_root, source_model, method)
    for r in ranks:
        # source and target backward passes, one gradient synchronisation
        assert r["per_iteration"] == [1] * 6
        # the idle aux head is the only reason to search for unused parameters
        assert r["find_unused_parameters"] is (not aux_trained)
    bn = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in range(2)]
    # evaluations: before adapting, at iterations 3 and 6, final, final with flip
    assert len(bn[0]) == len(bn[1]) == 5
    differed = []
    for first, second in zip(*bn):
        differed.append(any(not torch.equal(first["before"][k], second["before"][k]) for k in first["before"]))
        for key, value in first["after"].items():  # averaged: one model on both ranks
            assert torch.equal(value, second["after"][key]), key
            torch.testing.assert_close(value, (first["before"][key] + second["before"][key]) / 2)
    # each rank's statistics follow its own batches while it trains (the source model and the
    # evaluations after the last step start equal)
    assert differed == [False, True, True, False, False]


def test_nonfinite_loss_on_one_rank_stops_both(source_model, smoke_root, tmp_path):
    ranks = _two_ranks(tmp_path, smoke_root, source_model, "maxsquare", "nan")
    # rank 1's loss is NaN from its 3rd iteration; the flag is agreed on at the next log
    for r in ranks:
        assert r["diverged"] == ("a loss or weight became NaN or infinite between iterations 2 and 3; "
                                 "training stopped. The last good checkpoint is "
                                 f"{source_model}/smoke/minicity/maxsquare-ddp-maxsquare-nan/seed0/last.pt "
                                 "(iteration 2); resume with a lower learning rate or λ.")
        assert len(r["per_iteration"]) == 3
