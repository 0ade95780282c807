"""Exponential moving average of a model's weights (float32 shadow copies).

``shadow = decay * shadow + (1 - decay) * param`` after every optimizer step from
``start_step`` on (before it the shadow tracks the weights exactly). Buffers are copied
as they are. When enabled, the EMA weights are what the model dir stores for inference.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, start_step: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.start_step = decay, start_step
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights in; ``step`` = optimizer steps done so far."""
        params = dict(model.named_parameters())
        decay = self.decay if step >= self.start_step else 0.0
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if k in params and v.is_floating_point():
                s.mul_(decay).add_(v.detach().float(), alpha=1.0 - decay)
            else:
                s.copy_(v.detach())

    def state_dict(self) -> dict:
        return {"decay": self.decay, "start_step": self.start_step, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.start_step = float(state["decay"]), int(state["start_step"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    def weights(self, like: nn.Module) -> dict[str, torch.Tensor]:
        """The EMA state dict in ``like``'s dtypes and devices."""
        ref = like.state_dict()
        return {k: self.shadow[k].to(device=ref[k].device, dtype=ref[k].dtype) for k in ref}

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.weights(model))
        try:
            yield model
        finally:
            model.load_state_dict(backup)
