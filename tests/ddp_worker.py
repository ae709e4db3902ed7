"""One rank of the DDP test (tests/test_ddp.py runs two under torchrun, gloo): a smoke adaptation
run whose gradient all-reduces are counted (a DDP comm hook), whose BatchNorm buffers are recorded
before and after each cross-rank averaging, and whose target loss rank 1 can poison.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT SMOKE_ROOT RUNS METHOD [nan]

Writes ``OUT/rank<k>.json`` (counts, or the divergence message) and ``OUT/bn<k>.pt``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from conftest import smoke_cfg  # tests/ is this script's folder, so it is on sys.path

from maxsq_lib import losses
from maxsq_lib.engine import distributed as distm
from maxsq_lib.engine import trainer

out, root, runs, method = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
poison = sys.argv[5:] == ["nan"]
rank = int(os.environ["RANK"])
counts = {"synced_backwards": 0, "per_iteration": []}


class CountingDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, module, **kwargs):
        super().__init__(module, **kwargs)
        counts["find_unused_parameters"] = kwargs.get("find_unused_parameters")

        def hook(state, bucket):
            # a backward pass that synchronises reduces every bucket; its last one marks the pass
            counts["synced_backwards"] += bucket.is_last()
            return default_hooks.allreduce_hook(state, bucket)

        self.register_comm_hook(None, hook)


torch.nn.parallel.DistributedDataParallel = CountingDDP
real_step, real_average, real_max_square = trainer.train_step, distm.average_batchnorm, losses.max_square
bn_records = []


def counted_step(*args, **kwargs):
    before = counts["synced_backwards"]
    logs = real_step(*args, **kwargs)
    counts["per_iteration"].append(counts["synced_backwards"] - before)
    return logs


def recorded_average(model, dist):
    def buffers():
        return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    before = buffers()
    real_average(model, dist)
    bn_records.append({"before": before, "after": buffers()})


def poisoned(logits, faithful=False):
    value = real_max_square(logits, faithful=faithful)
    if logits.grad_fn is not None and rank == 1 and len(counts["per_iteration"]) >= 2:
        return value * float("nan")
    return value


trainer.train_step, distm.average_batchnorm = counted_step, recorded_average
if poison:
    losses.max_square = poisoned
cfg = smoke_cfg(root, runs, method, tag=f"ddp-{method}{'-nan' if poison else ''}",
                adapt={"iterations": 6, "schedule_horizon": 6}, eval={"every": 3}, log_every=1)
try:
    trainer.train(cfg, "adapt", progress=False)
    result = counts
except trainer.TrainingDiverged as exc:
    result = {**counts, "diverged": str(exc)}
torch.save(bn_records, out / f"bn{rank}.pt")
(out / f"rank{rank}.json").write_text(json.dumps(result))
