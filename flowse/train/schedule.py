"""Learning-rate schedules as multipliers of the base LR (for ``torch.optim.lr_scheduler.LambdaLR``).

Warmup is linear from ``1 / (warmup + 1)`` of the base LR up to the base LR at step ``warmup``;
then ``linear`` decays to ``final_ratio`` of the base LR at ``max_steps`` (the paper's
pretraining: 10k warmup then linear decay over 100k steps; GRPO: no warmup, linear decay),
``cosine`` follows a half cosine to ``final_ratio``, ``constant`` stays at the base LR.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def lr_multiplier(step: int, max_steps: int, warmup_steps: int = 0, kind: str = "linear",
                  final_ratio: float = 0.0) -> float:
    """Multiplier of the base LR used for the update after ``step`` completed steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    frac = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return final_ratio + (1.0 - final_ratio) * (1.0 - frac)
    if kind == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {kind!r}; choose 'linear', 'cosine' or 'constant'")


def make_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, warmup_steps: int = 0, kind: str = "linear",
                   final_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    fn: Callable[[int], float] = lambda s: lr_multiplier(s, max_steps, warmup_steps, kind, final_ratio)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
