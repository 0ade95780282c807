"""The shared training settings: one ``TrainConfig`` vocabulary for every trainer (the ``train:`` yaml section).

Pretraining, GRPO and HiFi-GAN training subclass it for their own defaults and their
method-specific keys (``flowse.train.pretrain.PretrainTrainConfig``,
``flowse.rl.config.GRPOTrainConfig``, ``flowse.train.hifigan.HiFiGANTrainConfig``).
Steps are optimizer steps throughout: ``max_steps``, the LR schedule, every ``*_interval``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowse.utils.config import check

SCHEDULES = ("linear", "cosine", "constant", "exponential")


@dataclass
class TrainConfig:
    """``schedule``: LR multiplier after a linear warmup of ``warmup_steps`` (``flowse.train.schedule``):
    ``linear`` / ``cosine`` decay to ``final_lr_ratio`` of ``lr`` at ``max_steps``, ``constant``, or
    ``exponential`` (``lr_decay ** (step / lr_decay_steps)``). AdamW with ``adam_betas``, ``adam_eps``,
    ``weight_decay``; ``grad_clip`` 0 = no clipping. ``amp``: ``auto`` = bf16 autocast on CUDA, fp32 on CPU
    (for the trainers that autocast). ``eval_interval`` 0: evaluate only at the end. ``keep_checkpoints`` 0
    keeps all. ``max_bad_steps``: consecutive non-finite steps tolerated (where steps are checked).
    """

    max_steps: int = 100000
    lr: float = 1e-4
    schedule: Literal["linear", "cosine", "constant", "exponential"] = "linear"
    warmup_steps: int = 0
    final_lr_ratio: float = 0.0
    lr_decay: float = 0.999
    lr_decay_steps: int = 1000
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    amp: Literal["auto", "bf16", "fp32"] = "auto"
    log_interval: int = 100
    eval_interval: int = 2000
    ckpt_interval: int = 2000
    keep_checkpoints: int = 3
    max_bad_steps: int = 20
    seed: int = 1234
    progress: bool = True

    def __post_init__(self):
        check(self.max_steps > 0, f"train.max_steps must be positive, got {self.max_steps}")
        check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(0.0 <= self.final_lr_ratio <= 1.0, "train.final_lr_ratio must be in [0, 1]")
        check(0.0 < self.lr_decay <= 1.0 and self.lr_decay_steps > 0,
              "train: lr_decay must be in (0, 1] and lr_decay_steps positive")
        check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
              f"train.adam_betas: two values in [0, 1), got {self.adam_betas}")
        check(self.grad_clip >= 0 and self.weight_decay >= 0 and self.adam_eps > 0,
              "train: grad_clip and weight_decay must be >= 0, adam_eps > 0")
        check(min(self.log_interval, self.ckpt_interval) > 0 and self.eval_interval >= 0,
              "train: log_interval and ckpt_interval must be positive, eval_interval >= 0")
        check(self.max_bad_steps >= 0, "train.max_bad_steps must be >= 0")
