"""Paired comparison of two GRPO runs, iteration by iteration.

Two runs with the same ``seed`` and rollout shape (prompts per round, rounds, group size,
crop, nfe/window ranges) see the same prompts, crops and sampler noise at every
iteration (all are drawn from per-(seed, iteration, prompt) seeds), so the difference of
their logged ``train/<metric>`` means at one iteration is caused by the policies alone.
Against a *null* run (``--train.lr 1e-12``) this measures whether the updates raise the
objective they optimise (the SDE-rollout reward), with paired standard errors far
smaller than a held-out evaluation's. Iteration 0 is identical by construction (both
runs sample from the initial model): a non-zero difference there means the runs are
not comparable.
"""
from __future__ import annotations

import os

import numpy as np

from flowse.utils.fileio import read_jsonl


def load_history(exp_dir: str) -> dict[int, dict]:
    """``<exp_dir>/metrics.jsonl`` as ``{iteration: record}``."""
    path = os.path.join(exp_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not a GRPO exp dir (no metrics.jsonl)")
    return {r["iteration"]: r for r in read_jsonl(path)}


def paired_differences(run: dict[int, dict], base: dict[int, dict], key: str, block: int = 8
                       ) -> list[tuple[int, int, float, float]]:
    """``(first_iter, last_iter, mean, standard error)`` of ``run[key] - base[key]`` per block of iterations."""
    its = sorted(i for i in set(run) & set(base) if key in run[i] and key in base[i])
    d = np.array([run[i][key] - base[i][key] for i in its], dtype=np.float64)
    out = []
    for s in range(0, len(d), block):
        c = d[s : s + block]
        se = float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else float("nan")
        out.append((its[s], its[s + len(c) - 1], float(c.mean()), se))
    return out


def check_comparable(run: dict[int, dict], base: dict[int, dict], key: str = "reward_mean", tol: float = 1e-6) -> None:
    """Raise when iteration 0 differs: the runs did not sample the same prompts and noise."""
    if 0 in run and 0 in base and abs(run[0][key] - base[0][key]) > tol:
        raise ValueError(f"iteration 0 {key} differs ({run[0][key]:.6f} vs {base[0][key]:.6f}): the runs do not "
                         "share seed, prompts and rollout shape, so a paired comparison is meaningless")
