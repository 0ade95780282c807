"""Training curves: one PNG panel per metric of JSON-lines log rows (one object per line with ``step``)."""
from __future__ import annotations

import math

from flowse.utils.fileio import atomic_open, read_jsonl

DEFAULT_KEYS = ("loss", "valid_loss", "lr", "grad_norm", "audio_s_per_s")


def read_metrics(path: str) -> list[dict]:
    """The metrics log of a (possibly still running) job; a half-written last line is skipped."""
    return read_jsonl(path, skip_bad=True)


def plot_metrics(rows: list[dict], png_path: str, keys: tuple[str, ...] | list[str] = DEFAULT_KEYS,
                 title: str | None = None) -> list[str]:
    """Plot each of ``keys`` present in ``rows`` (e.g. ``metrics.jsonl`` + ``eval.jsonl``) against ``step``
    (log y for losses); returns the keys drawn."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and "step" in r
               and math.isfinite(r[k])]
        if pts:
            series[k] = pts
    if not series:
        return []
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.2 * len(series)), sharex=True, squeeze=False)
    for ax, (k, pts) in zip(axes[:, 0], series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, lw=1)
        ax.set_ylabel(k)
        if "loss" in k and min(ys) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
    return list(series)
