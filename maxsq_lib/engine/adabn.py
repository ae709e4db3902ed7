"""AdaBN: the BatchNorm-only control with no gradient step (Li et al. 2016, "Revisiting Batch
Normalization for Practical Domain Adaptation").

The source model's BatchNorm statistics are re-estimated on the target train images (one pass,
cumulative average) and nothing else changes. It separates what BatchNorm alone does from what the
adaptation loop adds: ``none`` also trains on source while target batches move the statistics, and
every loss method adds its target loss on top. Introduced in notebook ``04_adaptation``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..models import unwrap_model


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, dataset, batch_size: int, device: torch.device | str,
                         progress: bool = False) -> int:
    """Replace every BatchNorm layer's running statistics by their average over ``dataset``.

    Args:
        model: the network (bare or wrapped); left in eval mode, weights untouched.
        dataset: items ``(image, label, name)``; labels are not read.
        batch_size: images per forward pass.
        device: where the model runs.
        progress: a tqdm bar.
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
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for images, _labels, _names in tqdm(loader, desc="adabn", disable=not progress, leave=False):
            net(images.to(device), with_aux=False)
            seen += len(images)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        net.eval()
    return seen
