"""Group-relative advantages (paper Eq. 8), per prompt over its G candidates.

``A_i = (R_i - mean_g) / (std_g + eps)`` with the population std (ddof 0, as Flow-GRPO's
``PerPromptStatTracker``), clamped to ``[-clip, clip]`` (Flow-GRPO: 5). A group whose
rewards are all equal (std <= ``zero_std_tol``) carries no learning signal and is dropped
(paper 3.2); callers log how many groups were dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Advantages:
    values: np.ndarray  # [N] float64, 0 for dropped samples
    keep: np.ndarray  # [N] bool, False for samples of zero-std groups
    num_groups: int
    num_zero_std: int
    group_std_mean: float  # mean within-group reward std (a measure of exploration)

    @property
    def zero_std_fraction(self) -> float:
        return self.num_zero_std / max(self.num_groups, 1)


def group_advantages(
    rewards: np.ndarray, group_ids: np.ndarray, clip: float = 5.0, eps: float = 1e-4, zero_std_tol: float = 1e-8,
    std: str = "group",
) -> Advantages:
    """Advantages of ``rewards [N]`` grouped by ``group_ids [N]`` (any hashable ids; order kept).

    ``std``: ``group`` divides by each group's own std (GRPO, Eq. 8); ``global`` by the std of all
    ``rewards`` (DiffusionNFT's ``global_std``: a group with little spread gets small advantages)."""
    if std not in ("group", "global"):
        raise ValueError(f"advantage std must be 'group' or 'global', got {std!r}")
    rewards = np.asarray(rewards, dtype=np.float64)
    group_ids = np.asarray(group_ids)
    if rewards.shape != group_ids.shape or rewards.ndim != 1:
        raise ValueError(f"rewards {rewards.shape} and group_ids {group_ids.shape} must be equal 1-d shapes")
    if not np.all(np.isfinite(rewards)):
        bad = np.flatnonzero(~np.isfinite(rewards)).tolist()[:5]
        raise ValueError(f"non-finite rewards at candidate indices {bad}")
    adv = np.zeros_like(rewards)
    keep = np.zeros(rewards.shape, dtype=bool)
    uniq = list(dict.fromkeys(group_ids.tolist()))
    n_zero = 0
    stds = []
    global_std = float(rewards.std())
    for g in uniq:
        idx = np.flatnonzero(group_ids == g)
        r = rewards[idx]
        sd = float(r.std())
        stds.append(sd)
        if len(idx) < 2 or sd <= zero_std_tol:
            n_zero += 1
            continue
        scale = sd if std == "group" else global_std
        adv[idx] = np.clip((r - r.mean()) / (scale + eps), -clip, clip)
        keep[idx] = True
    return Advantages(adv, keep, len(uniq), n_zero, float(np.mean(stds)) if stds else 0.0)


def within_group_share(values: np.ndarray, group_ids: np.ndarray) -> float:
    """Mean within-group variance / total variance of ``values [N]`` (population variances; groups of
    equal size, as GRPO's): the part of a metric's spread that group-relative advantages can see
    (the rest is spread between prompts). NaN when the total variance is 0."""
    values = np.asarray(values, dtype=np.float64)
    total = float(values.var())
    if total <= 0:
        return float("nan")
    group_ids = np.asarray(group_ids)
    within = [float(values[group_ids == g].var()) for g in dict.fromkeys(group_ids.tolist())]
    return float(np.mean(within)) / total
