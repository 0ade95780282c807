"""Euler ODE sampler of the flow (SE time: t = 0 noise -> t = 1 clean).

``time_grid`` and the loop structure of ``ode_sample`` are shared with GRPO's mixed
ODE-SDE sampler (``flowse/sampling/sde.py``): step k goes from ``t_k`` to ``t_{k+1}``
with ``dt = t_{k+1} - t_k > 0`` and velocity ``model.velocity(x, cond, t_k, mask, w)``.
Everything runs in float32 on normalised features.
"""
from __future__ import annotations

import torch


def time_grid(nfe: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform grid ``[nfe + 1]`` from ``t_0 = 0`` to ``t_nfe = 1`` (float32)."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    return torch.linspace(0.0, 1.0, nfe + 1, device=device, dtype=torch.float32)


def euler_step(x: torch.Tensor, u: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
    """``x + u dt``."""
    return x + u * dt


def initial_noise(shape: tuple[int, ...], device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(shape, device=device, generator=generator, dtype=torch.float32)


@torch.no_grad()
def ode_sample(
    model,
    cond_norm: torch.Tensor,
    mask: torch.Tensor | None = None,
    nfe: int | None = None,
    cfg_strength: float | None = None,
    generator: torch.Generator | None = None,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate ``dx = v dt`` from Gaussian ``x0`` at t = 0 to the clean estimate at t = 1.

    ``model``: a ``FlowSE`` (its ``velocity`` applies CFG with weight ``cfg_strength``,
    default ``model.flow_cfg.cfg_strength``); ``cond_norm [B, T, F]`` normalised noisy
    mel; ``mask [B, T]`` valid frames; ``nfe`` Euler steps (default ``model.flow_cfg.nfe``).
    Returns the normalised clean estimate ``[B, T, F]``, zero on padded frames.
    """
    nfe = model.flow_cfg.nfe if nfe is None else nfe
    b, n, f = cond_norm.shape
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=cond_norm.device)
    m = mask[..., None].to(torch.float32)
    x = initial_noise((b, n, f), cond_norm.device, generator) if x0 is None else x0.to(torch.float32)
    x = x * m
    ts = time_grid(nfe, cond_norm.device)
    for k in range(nfe):
        t, dt = ts[k], ts[k + 1] - ts[k]
        u = model.velocity(x, cond_norm, t.expand(b), mask, cfg_strength).float()
        x = euler_step(x, u, dt) * m
    return x
