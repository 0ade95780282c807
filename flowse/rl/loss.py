"""GRPO objective (paper Eq. 9) on SDE transitions, per transition (sample, window step).

    r      = exp(logp_new - logp_old)
    policy = max(-A r, -A clip(r, 1 - eps, 1 + eps))         (PPO clip, Flow-GRPO: eps = 1e-4)
    kl     = ||mean_theta - mean_ref||^2 / (2 s^2 dt)         (closed form, equal std, mean over elements)
    loss   = policy + beta kl

Returned per transition (``[B]``): the trainer sums them with weight ``1 / N`` where N is
the number of transitions of the optimizer update over ALL ranks, so that Eq. 9's mean
over candidates and window steps does not depend on micro-batching or world size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    loss: torch.Tensor  # [B] per-transition total (differentiable)
    policy: torch.Tensor  # [B]
    kl: torch.Tensor  # [B]
    ratio: torch.Tensor  # [B] detached
    clipped: torch.Tensor  # [B] bool: |r - 1| > eps (the clip is active or would be)


def grpo_loss(
    logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_range: float,
    kl: torch.Tensor | None = None, beta: float = 0.0,
) -> LossTerms:
    """Per-transition clipped policy loss plus ``beta * kl`` (all ``[B]``, fp32)."""
    adv = advantages.to(logp_new)
    ratio = torch.exp(logp_new - logp_old.to(logp_new))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy = torch.maximum(unclipped, clipped)
    kl_t = kl if kl is not None else torch.zeros_like(policy)
    loss = policy + beta * kl_t if beta else policy
    return LossTerms(loss, policy.detach(), kl_t.detach(), ratio.detach(), (ratio.detach() - 1.0).abs() > clip_range)
