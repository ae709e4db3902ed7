"""AdaBN: the BatchNorm-only control with no gradient step (Li et al. 2016, "Revisiting Batch
Normalization for Practical Domain Adaptation").

The source model's BatchNorm statistics are re-estimated on the target train images (one pass,
cumulative average) and nothing else changes. It separates what BatchNorm alone does from what the
adaptation loop adds: ``none`` also trains on source while target batches move the statistics, and
every loss method adds its target loss on top. Introduced in notebook ``04_adaptation``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..models import unwrap_model
from .precision import autocast
from .sampling import loader_options


def statistics_images(dataset, count: int | None):
    """The target images BatchNorm statistics are estimated from: all of ``dataset``, or ``count``
    of them spread evenly over its list (every k-th item), so that a sorted list (Cityscapes is
    sorted by city) is still covered.

    Args:
        dataset: the target train split (not augmented).
        count: how many images, or None for all.
    Returns:
        ``dataset`` or a :class:`torch.utils.data.Subset` of it.
    """
    n = len(dataset)
    if count is None or count >= n:
        return dataset
    if count < 1:
        raise ValueError(f"eval.bn_images must be >= 1 or null, got {count}")
    return Subset(dataset, [i * n // count for i in range(count)])


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, dataset, batch_size: int, device: torch.device | str,
                         progress: bool = False, amp: str = "none", channels_last: bool = False,
                         workers: int = 0) -> int:
    """Replace every BatchNorm layer's running statistics by their average over ``dataset``.

    Args:
        model: the network (bare or wrapped); left in eval mode, weights untouched.
        dataset: items ``(image, label, name)``; labels are not read.
        batch_size: images per forward pass.
        device: where the model runs.
        progress: a tqdm bar.
        amp: the forward passes' precision (:func:`maxsq_lib.engine.precision.autocast`); the
            statistics are accumulated in float32 either way.
        channels_last: feed channels-last inputs.
        workers: DataLoader workers (pinned memory on CUDA).
    Returns:
        the number of images seen.
    """
    net = unwrap_model(model)
    layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an exponential one
    net.train()
    seen = 0
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_options(workers, device))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for images, _labels, _names in tqdm(loader, desc="adabn", disable=not progress, leave=False):
            with autocast(device, amp):
                net(images.to(device, non_blocking=True).contiguous(memory_format=memory_format), with_aux=False)
            seen += len(images)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        net.eval()
    return seen
