"""Rollouts of the mixed ODE-SDE sampler and the log-probs of their SDE transitions.

A rollout integrates a batch of candidates from Gaussian noise (t = 0) to the clean
estimate (t = 1) on ``time_grid(nfe)``: Euler ODE steps outside the SDE window, Eq. 6
SDE steps inside it (``flowse.sampling.sde``). For every window step it stores the
transition ``(x_t, x_next, t, dt)`` and its log-density under the sampling policy
("old" log-prob). The training side recomputes the same density under the current
policy with ``transition_log_prob``, which calls the network exactly as the rollout
does (same CFG form, eval mode, same per-sample padded length), so before any update
the ratio is 1 up to floating-point differences of batched kernels.

The randomness (initial noise and per-step noise) is passed in, so that the trainer can
draw it per prompt from a per-prompt seed and the samples do not depend on how prompts
are batched or sharded across ranks. Shapes: features ``[N, T, F]`` (normalised),
``mask [N, T]`` bool, one transition per (candidate, window step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from flowse.sampling.ode import time_grid
from flowse.sampling.sde import gaussian_log_prob, ode_step, sde_mean, sde_step, step_std

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x [B,T,F], cond [B,T,F], t [B], mask [B,T]) -> u [B,T,F]`` (CFG already applied)."""


def window_steps(nfe: int, start: int, size: int) -> list[int]:
    """0-based indices of the SDE steps: 1-based ``start`` .. ``start + size - 1``, clipped to ``nfe - 1``.

    The last step (0-based ``nfe - 1``) is never one: it stays an ODE step and is not trained (its SDE std
    is tiny and its noise would never be denoised; Flow-GRPO leaves it out too).
    """
    if not 1 <= start < nfe:
        raise ValueError(f"window start {start} outside 1..{nfe - 1} (the last of {nfe} steps is an ODE step)")
    return list(range(start - 1, min(start - 1 + size, nfe - 1)))


@dataclass
class Transitions:
    """SDE transitions, flattened over (candidate, window step); ``sample`` indexes the candidate."""

    x_t: torch.Tensor  # [M, T, F]
    x_next: torch.Tensor  # [M, T, F]
    t: torch.Tensor  # [M]
    dt: torch.Tensor  # [M]
    t_floor: torch.Tensor  # [M] the grid's first positive point (t = 0 clamp of s)
    log_prob: torch.Tensor  # [M] old log-prob (mean over valid elements)
    sample: torch.Tensor  # [M] long, candidate index within the rollout batch
    step: torch.Tensor  # [M] long, 0-based step index

    def __len__(self) -> int:
        return self.t.shape[0]

    def index(self, idx: torch.Tensor) -> "Transitions":
        return Transitions(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @staticmethod
    def cat(items: list["Transitions"]) -> "Transitions":
        return Transitions(*(torch.cat([getattr(x, f) for x in items]) for f in Transitions.__dataclass_fields__))

    def to(self, device) -> "Transitions":
        return Transitions(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class Rollout:
    x1: torch.Tensor  # [N, T, F] final (normalised) estimates, zero on padded frames
    transitions: Transitions
    nfe: int
    window: list[int]


@torch.no_grad()
def mixed_rollout(
    velocity: VelocityFn, cond: torch.Tensor, mask: torch.Tensor, nfe: int, window: list[int], noise_level: float,
    x0: torch.Tensor, step_noise: torch.Tensor, group_size: int = 1,
) -> Rollout:
    """Sample ``N`` candidates with SDE steps on ``window`` and ODE steps elsewhere.

    ``x0 [N, T, F]`` initial noise, ``step_noise [len(window), N, T, F]`` the SDE noise.
    ``group_size``: when ``> 1`` the caller guarantees that consecutive groups of this many
    candidates share ``x0``, ``cond`` and ``mask`` (GRPO's ``same_init_noise``); they are then
    identical until the first SDE step, so the ODE steps before it run once per group.
    """
    if step_noise.shape[0] != len(window):
        raise ValueError(f"step_noise has {step_noise.shape[0]} steps, the window {len(window)}")
    n = cond.shape[0]
    dev = cond.device
    m = mask[..., None].to(torch.float32)
    grid = time_grid(nfe, dev)
    t_floor = grid[1]
    x = x0.to(dev, torch.float32) * m
    first = min(window)
    if group_size > 1 and first > 0:
        if n % group_size:
            raise ValueError(f"{n} candidates are not groups of {group_size}")
        xg, cg, mg = x[::group_size], cond[::group_size], mask[::group_size]
        for k in range(first):
            ng = xg.shape[0]
            u = velocity(xg, cg, grid[k].expand(ng), mg).float()
            xg = ode_step(xg, u, (grid[k + 1] - grid[k]).expand(ng)) * m[::group_size]
        x = xg.repeat_interleave(group_size, 0)
    else:
        first = 0
    keep: list[Transitions] = []
    for k in range(first, nfe):
        t = grid[k].expand(n)
        dt = (grid[k + 1] - grid[k]).expand(n)
        u = velocity(x, cond, t, mask).float()
        if k in window:
            j = window.index(k)
            x_next, mean, std = sde_step(x, u, t, dt, noise_level, t_floor, noise=step_noise[j].to(dev))
            x_next = x_next * m
            lp = gaussian_log_prob(x_next, mean, std, mask)
            keep.append(Transitions(x, x_next, t.clone(), dt.clone(), t_floor.expand(n).clone(), lp,
                                    torch.arange(n, device=dev), torch.full((n,), k, dtype=torch.long, device=dev)))
        else:
            x_next = ode_step(x, u, dt) * m
        x = x_next
    return Rollout(x, Transitions.cat(keep), nfe, list(window))


def transition_log_prob(
    velocity: VelocityFn, tr: Transitions, cond: torch.Tensor, mask: torch.Tensor, noise_level: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-prob of ``tr.x_next`` under the policy behind ``velocity``: ``(log_prob [M], mean [M,T,F], std [M])``.

    ``cond, mask`` are the transitions' own (``[M, ...]``). Differentiable through ``velocity``.
    """
    u = velocity(tr.x_t, cond, tr.t, mask).float()
    mean = sde_mean(tr.x_t, u, tr.t, tr.dt, noise_level, tr.t_floor)
    std = step_std(tr.t, tr.dt, noise_level, tr.t_floor)
    return gaussian_log_prob(tr.x_next, mean, std, mask), mean, std
