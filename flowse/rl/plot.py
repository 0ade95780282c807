"""PNG curves of a GRPO run (paper Fig. 2 kind): every metric vs optimizer step.

``train_curves.png``: reward mean/std, every metric's mean over the collected candidates
(rewarded or not: reward hacking shows as one curve up and others down), each rewarded
metric's std over the iteration (what ``reward.std_normalize: batch`` divides by) and its
within-group share of variance (what the group advantages can see), KL, ratio and clip
fraction, zero-std group fraction. ``eval_curves.png``: the held-out metrics of the ODE
sampler vs step (step 0 = the base model; judge metrics such as DMOS included), the step the
guarded export chose marked.
"""
from __future__ import annotations

import os

from flowse.utils.fileio import atomic_open


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(1, n))
    return (n + cols - 1) // cols, cols


def _finish(fig, axes, used: int, title: str, path: str) -> str:
    """Blank the unused panels, title the figure, write it atomically, close it; returns ``path``."""
    import matplotlib.pyplot as plt

    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return path


def plot_curves(exp_dir: str, history: list[dict], eval_history: list[dict]) -> list[str]:
    """Write the PNGs into ``exp_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if history:
        steps = [r["step"] for r in history]
        panels: list[tuple[str, list[str]]] = [("reward", ["reward_mean"])]
        panels += [(k[6:], [k]) for k in history[-1] if k.startswith("train/")]
        panels += [(f"std of rewarded {k[4:]}", [k]) for k in history[-1] if k.startswith("std/")]
        panels += [(f"within-group share of {k[7:]} variance", [k]) for k in history[-1] if k.startswith("within/")]
        panels += [("KL", ["kl"]), ("ratio", ["ratio_mean", "ratio_min", "ratio_max"]), ("clip fraction", ["clip_frac"]),
                   ("zero-std group fraction", ["zero_std_frac"])]
        rows, cols = _grid(len(panels))
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        for ax, (title, keys) in zip(axes.flat, panels):
            for k in keys:
                ys = [r.get(k, float("nan")) for r in history]
                ax.plot(steps, ys, label=k if len(keys) > 1 else None)
            if title == "reward":
                lo = [r["reward_mean"] - r["reward_std"] for r in history]
                hi = [r["reward_mean"] + r["reward_std"] for r in history]
                ax.fill_between(steps, lo, hi, alpha=0.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            if len(keys) > 1:
                ax.legend(fontsize=6)
        out.append(_finish(fig, axes, len(panels), "GRPO training (means over the collected candidates)",
                           os.path.join(exp_dir, "train_curves.png")))
    if eval_history:
        keys = [k for k in eval_history[-1] if k.startswith("eval/")]
        rows, cols = _grid(len(keys))
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        steps = [r["step"] for r in eval_history]
        chosen = eval_history[-1].get("guarded_step")
        for ax, k in zip(axes.flat, keys):
            ax.plot(steps, [r.get(k, float("nan")) for r in eval_history], marker="o")
            if chosen is not None:
                ax.axvline(chosen, color="tab:green", linestyle=":", linewidth=1)
            ax.set_title(k[5:], fontsize=9)
            ax.set_xlabel("step", fontsize=8)
        out.append(_finish(fig, axes, len(keys), "held-out evaluation (ODE sampler; step 0 = base model; "
                           "dotted: guarded export)", os.path.join(exp_dir, "eval_curves.png")))
    return out
