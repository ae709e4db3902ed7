"""Deterministic, resumable data order.

The sample drawn at iteration ``t`` is a pure function of ``(seed, t, rank)``: the stream of samples
is the concatenation of per-epoch permutations ``perm_e = rng(seed, e).permutation(n)``, and
iteration ``t`` of rank ``r`` (of ``world`` ranks, batch size ``b``) reads stream positions
``(t·world + r)·b ... (t·world + r)·b + b − 1``. Resuming at iteration ``t`` therefore needs no saved
sampler state, and the result does not depend on the number of DataLoader workers. Each position
also carries its epoch, which seeds the item's augmentation (flip, blur).

Every loader of the engine (training, evaluation, BatchNorm re-estimation) takes its options from
:func:`loader_options`: the profile's workers, pinned memory for a CUDA device, and labels that
travel as int16 (class ids and -1 fit; a quarter of int64's shared memory per prefetched batch),
back to int64 on the device.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

PREFETCH_FACTOR = 4  # batches each loader worker keeps ready; the dry run sizes /dev/shm from it


@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def stream_item(position: int, n: int, seed: int, shuffle: bool = True) -> tuple[int, int]:
    """(dataset index, epoch) at a stream position.

    Args:
        position: global sample counter (≥ 0).
        n: dataset length.
        seed: run seed.
        shuffle: permute each epoch (training) or read in order.
    Returns:
        ``(index, epoch)``.
    """
    epoch, offset = divmod(position, n)
    index = int(_epoch_permutation(n, seed, epoch)[offset]) if shuffle else offset
    return index, epoch


class StreamBatchSampler(Sampler[list[int]]):
    """Yields the stream positions of each iteration's batch, from ``start`` to ``stop``.

    Args:
        batch_size: images per iteration and rank.
        start, stop: iteration range [start, stop).
        rank, world: distributed position (1 process: 0, 1).
    """

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.batch_size, self.start, self.stop = batch_size, start, stop
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        b = self.batch_size
        for t in range(self.start, self.stop):
            first = (t * self.world + self.rank) * b
            yield list(range(first, first + b))


class StreamDataset(Dataset):
    """Maps stream positions to ``(image, label, name)`` items of a base dataset.

    The base dataset's ``item(index, epoch)`` seeds the item's augmentation with its own seed,
    the epoch and the index, so the augmentation is reproducible in any worker.
    """

    def __init__(self, base, seed: int, shuffle: bool = True):
        if len(base) == 0:
            raise ValueError(f"{type(base).__name__}: the dataset is empty")
        self.base, self.seed, self.shuffle = base, seed, shuffle

    def __len__(self) -> int:  # positions are unbounded; a length is needed by some tools only
        return len(self.base)

    def __getitem__(self, position: int):
        index, epoch = stream_item(position, len(self.base), self.seed, self.shuffle)
        return self.base.item(index, epoch)


def collate(batch):
    """Stack ``(image, label, name)`` items into ``(images, int16 labels, names)``; in a worker the
    stacked tensors are allocated in shared memory directly (``default_collate``)."""
    return default_collate([(image, torch.as_tensor(label).to(torch.int16), name) for image, label, name in batch])


def loader_options(workers: int, device) -> dict:
    """DataLoader options of the engine's loaders: ``workers`` processes, each keeping
    :data:`PREFETCH_FACTOR` batches, pinned memory when ``device`` is CUDA, int16 labels
    (:func:`collate`)."""
    return dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda", collate_fn=collate,
                prefetch_factor=PREFETCH_FACTOR if workers else None)
