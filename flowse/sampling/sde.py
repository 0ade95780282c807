"""Mixed ODE-SDE sampling step of Flow-GRPO, in the SE time convention, with its log-density.

Time runs t: 0 (Gaussian noise) -> 1 (clean mel); a step goes from ``t`` to ``t + dt``
with ``dt > 0`` and ``u = v_theta(x_t, c, t)`` the (CFG-combined) velocity.

- ODE step (outside the SDE window): ``x_next = x + u dt`` (Euler).
- SDE step (inside the window), paper Eq. 6::

      s      = a sqrt((1 - t) / t)
      x_mean = x + [u + s^2 / (2 (1 - t)) (-x + t u)] dt
      x_next = x_mean + s sqrt(dt) eps,   eps ~ N(0, I)

  For t > 0 this equals ``x (1 - a^2 dt / (2 t)) + u (1 + a^2 / 2) dt``.

The t = 0 clamp. ``s`` is singular at t = 0 (the first grid point). Flow-GRPO
(``sd3_sde_with_logprob.py``) evaluates ``sqrt(sigma / (1 - sigma))`` with ``sigma == 1``
replaced by ``sigmas[1]`` in the denominator only; in SE time (t = 1 - sigma) that is
``s = a sqrt((1 - 0) / t_1)``, with ``t_1`` the grid's first positive point (= t + dt of
the first step). We pass ``t_1`` explicitly (``t_floor``): ``s = a sqrt((1 - t) / max(t, t_1))``.
The general (Eq. 6) form is used for the mean, so at t = 0 it stays finite:
``x_mean = x (1 - a^2 / 2 * dt / t_1) + u dt`` and the step std is ``a sqrt(dt / t_1)``
(= a on a uniform grid).

The last step. The drift's ``1 / (1 - t)`` is only singular at t = 1, which is never
a step's start (steps start at t_0 .. t_{K-1} < 1); with ``s^2 = a^2 (1 - t) / t`` the
``(1 - t)`` cancels analytically, and we compute ``s^2 / (2 (1 - t))`` as
``a^2 / (2 max(t, t_1))`` so no step can divide by zero. The last step's std
``a sqrt((1 - t) dt / t)`` is small (0.042 for a = 0.4, 10 uniform steps), which makes its
log-density sharp; Flow-GRPO-Fast / the paper train on early steps only (window).

Log-density ``log p(x_next | x, c)`` is the Gaussian density with mean ``x_mean`` and std
``s sqrt(dt)``, averaged (not summed) over the non-batch elements of valid frames
(Flow-GRPO averages, which is why its PPO clip range is as small as 1e-4).

All of this runs in fp32 whatever the network's precision: bf16 overflows and
rounding in the mean/variance terms gave NaN in Flow-GRPO (autocast is disabled here).
Shapes: ``x, u [B, T, F]``; ``t, dt [B]`` (or scalars); ``mask [B, T]`` bool (True = valid).
"""
from __future__ import annotations

import math

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _col(v: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``[B]`` value broadcast against ``like [B, ...]`` in fp32."""
    v = torch.as_tensor(v, dtype=torch.float32, device=like.device)
    if v.dim() == 0:
        v = v.expand(like.shape[0])
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def sde_sigma(t: torch.Tensor | float, a: float, t_floor: torch.Tensor | float) -> torch.Tensor:
    """Diffusion coefficient ``s = a sqrt((1 - t) / max(t, t_floor))`` (``t_floor = t_1``, see module doc)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    t_floor = torch.as_tensor(t_floor, dtype=torch.float32, device=t.device)
    return a * torch.sqrt((1.0 - t) / torch.maximum(t, t_floor))


def sde_mean(
    x: torch.Tensor, u: torch.Tensor, t: torch.Tensor | float, dt: torch.Tensor | float, a: float,
    t_floor: torch.Tensor | float,
) -> torch.Tensor:
    """Eq. 6 mean ``x + [u + s^2/(2(1-t)) (-x + t u)] dt`` in fp32, ``s^2/(2(1-t)) = a^2/(2 max(t, t_1))``."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        u = u.float()
        tc, dtc = _col(t, x), _col(dt, x)
        coef = (a * a) / (2.0 * torch.maximum(tc, _col(t_floor, x)))
        return x + (u + coef * (-x + tc * u)) * dtc


def step_std(t: torch.Tensor | float, dt: torch.Tensor | float, a: float, t_floor: torch.Tensor | float) -> torch.Tensor:
    """Std ``s sqrt(dt)`` of the SDE transition (``[B]`` or scalar, fp32)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    dt = torch.as_tensor(dt, dtype=torch.float32, device=t.device)
    return sde_sigma(t, a, t_floor) * torch.sqrt(dt)


def ode_step(x: torch.Tensor, u: torch.Tensor, dt: torch.Tensor | float) -> torch.Tensor:
    """Euler step ``x + u dt`` in fp32."""
    with torch.autocast(x.device.type, enabled=False):
        return x.float() + u.float() * _col(dt, x)


def sde_step(
    x: torch.Tensor, u: torch.Tensor, t: torch.Tensor | float, dt: torch.Tensor | float, a: float,
    t_floor: torch.Tensor | float, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SDE step; returns ``(x_next, x_mean, std [B])``.

    ``noise`` (``[B, T, F]`` standard normal) may be given to control the randomness
    (the trainer draws it per prompt so results do not depend on batch composition).
    """
    mean = sde_mean(x, u, t, dt, a, t_floor)
    std = step_std(_col(t, x).flatten(), _col(dt, x).flatten(), a, t_floor)
    if noise is None:
        gen_device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=gen_device).to(x.device)
    x_next = mean + _col(std, mean) * noise.float()
    return x_next, mean, std


def masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over all non-batch elements of valid frames: ``v [B, T, F]``, ``mask [B, T]`` -> ``[B]``."""
    if mask is None:
        return v.flatten(1).mean(1)
    m = mask.to(v.dtype).unsqueeze(-1)
    n = m.sum(dim=(1, 2)).clamp_min(1.0) * v.shape[-1]
    return (v * m).sum(dim=(1, 2)) / n


def gaussian_log_prob(
    x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``log N(x_next; mean, std^2)`` per element, averaged over valid elements -> ``[B]`` (fp32).

    ``x_next`` is treated as data (detached); gradients flow through ``mean``.
    """
    with torch.autocast(mean.device.type, enabled=False):
        mean = mean.float()
        std_c = _col(std, mean)
        lp = -((x_next.detach().float() - mean) ** 2) / (2 * std_c**2) - torch.log(std_c) - _LOG_SQRT_2PI
        return masked_mean(lp, mask)


def gaussian_kl_equal_std(
    mean_p: torch.Tensor, mean_q: torch.Tensor, std: torch.Tensor | float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``KL(N(mean_p, std^2) || N(mean_q, std^2)) = (mean_p - mean_q)^2 / (2 std^2)``, mean over valid elements.

    With ``std = s sqrt(dt)`` this is ``||.||^2 / (2 s^2 dt)`` (Flow-GRPO's code divides by
    ``2 s^2`` only, i.e. its KL is off by a factor dt; we use the exact per-step KL).
    """
    with torch.autocast(mean_p.device.type, enabled=False):
        d = mean_p.float() - mean_q.float()
        return masked_mean(d**2 / (2 * _col(std, d) ** 2), mask)
