"""Learning-rate schedules as multipliers of the base LR (for ``torch.optim.lr_scheduler.LambdaLR``),
and the AdamW optimizer every trainer uses, both from a ``TrainConfig``.

Warmup is linear from ``1 / (warmup + 1)`` of the base LR up to the base LR at step ``warmup``;
then ``linear`` decays to ``final_ratio`` of the base LR at ``max_steps`` (the paper's
pretraining: 10k warmup then linear decay over 100k steps; GRPO: no warmup, linear decay),
``cosine`` follows a half cosine to ``final_ratio``, ``constant`` stays at the base LR,
``exponential`` multiplies by ``decay`` every ``decay_steps`` steps, continuously (HiFi-GAN).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from flowse.train.config import SCHEDULES, TrainConfig


def lr_multiplier(step: int, max_steps: int, warmup_steps: int = 0, kind: str = "linear",
                  final_ratio: float = 0.0, decay: float = 1.0, decay_steps: int = 1) -> float:
    """Multiplier of the base LR used for the update after ``step`` completed steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    if kind == "exponential":
        return decay ** ((step - warmup_steps) / decay_steps)
    span = max(1, max_steps - warmup_steps)
    frac = min(1.0, max(0.0, (step - warmup_steps) / span))
    if kind == "linear":
        return final_ratio + (1.0 - final_ratio) * (1.0 - frac)
    if kind == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The ``cfg.schedule`` of ``optimizer``; step it once per optimizer step."""
    fn: Callable[[int], float] = lambda s: lr_multiplier(  # noqa: E731
        s, cfg.max_steps, cfg.warmup_steps, cfg.schedule, cfg.final_lr_ratio, cfg.lr_decay, cfg.lr_decay_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def make_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors, or param groups that may set their own ``weight_decay``)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_betas[0], cfg.adam_betas[1]), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay)
