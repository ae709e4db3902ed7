"""The authors' optimiser and schedule: SGD with the heads at 10× the learning rate, poly decay.

Light on purpose (torch only): a researcher's own loop imports it without the engine. Adam is the
``cpu`` profile's choice for a network trained from scratch (see ``configs/cpu.yaml``).
Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import torch

from .models import parameter_groups, unwrap_model


def poly_lr(base_lr: float, iteration: int, horizon: int, power: float = 0.9) -> float:
    """The authors' poly schedule: ``base · (1 − t / horizon) ** power``."""
    return base_lr * (1.0 - iteration / horizon) ** power


def build_optimizer(model: torch.nn.Module, name: str = "sgd", lr: float = 2.5e-4, head_lr_mult: float = 10.0,
                    momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """SGD (the authors': momentum 0.9, weight decay 5e-4) or Adam over the two parameter groups of
    :func:`maxsq_lib.models.parameter_groups` (backbone at ``lr``, heads at ``head_lr_mult · lr``);
    each group remembers its ``base_lr`` for :func:`set_poly_lr`.

    Args:
        model: a DeepLabV2 (bare or wrapped).
        name: ``"sgd"`` or ``"adam"`` (betas 0.9, 0.99).
        lr: base learning rate (2.5e-4 in the paper).
    Returns:
        the optimizer.
    """
    groups = [g for g in parameter_groups(unwrap_model(model), lr, head_lr_mult) if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    raise ValueError(f"optimizer name must be 'sgd' or 'adam', got {name!r}")


def set_poly_lr(optimizer: torch.optim.Optimizer, iteration: int, horizon: int, power: float = 0.9) -> float:
    """Set every group's learning rate to its ``base_lr`` on the poly schedule; returns the factor."""
    factor = poly_lr(1.0, iteration, horizon, power)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
    return factor
