"""The paper's Fig. 2 for a set of post-training runs from one base model: every metric against the
training step, or against the training time (the equal-compute comparison of methods).

    python -m flowse.bench.fig2 --exps exp/grpo_mini_fig2_* --out fig2.png [--table fig2.md] [--smooth 8]
    python -m flowse.bench.fig2 --exps exp/{grpo,nft,dpo}_mini_equal --x cpu_minutes --out cmp.png --table cmp.md

The paper's Fig. 2 puts one metric per panel ((a) DNSMOS, (b) speaker similarity, (d)
SpeechBERTScore), each with one curve per run, evaluated on a held-out test set against the
training steps. Here every metric any run logged gets a column, rewarded or not (reward hacking:
the rewarded curve rises while the others fall), with one curve per exp dir, solid where that
run rewards the metric and dashed where it does not:

- top row: the held-out evaluation (``eval.jsonl``: ODE sampler on the valid set, step 0 = the
  base model, judge metrics such as DMOS included), the paper's kind of curve;
- bottom row: the mean over each iteration's rollout candidates (``metrics.jsonl``:
  ``train/<metric>`` and ``reward_mean``, the latter in each run's own units), thin per
  iteration, bold as the trailing mean of the last ``--smooth`` iterations. Runs with the same
  seed and rollout shape see the same prompts and noise at every iteration
  (``flowse.rl.compare``), so their per-iteration wiggles are shared.

``--table`` writes markdown: per run and held-out metric, the change from the base model (step
0) to the last evaluated step, the mean over the held-out utterances of the paired difference
(``utt_keys`` / ``utt_values`` of the two rows, utterances defined at both) +- its standard error
(sample std / sqrt(n)), and which step the guarded export chose (``export.json``) and whether it
is the last one; with ``--x minutes`` or ``cpu_minutes`` also the training time at that step
(``train_seconds`` / ``train_cpu_seconds`` of the rows: wall-clock, and CPU time of all ranks, held-out
evaluations excluded; DPO's pair generation included) and the first rewarded metric's held-out
gain per minute of it (+- its standard error per minute).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from flowse.rl.export import EXPORT_FILE, paired_values
from flowse.utils.config import read_yaml
from flowse.utils.errors import UserError
from flowse.utils.fileio import atomic_open, read_jsonl, write_text


@dataclass
class Run:
    """One post-training exp dir: its logs, its export choice and its resolved config (``{}`` when absent)."""

    exp_dir: str
    label: str
    history: list[dict]
    evals: list[dict]
    export: dict
    config: dict

    @property
    def method(self) -> str:
        return str(self.config.get("method", "grpo"))

    @property
    def rewarded(self) -> list[str]:
        return list(self.config.get("reward", {}).get("metrics", []))

    def describe(self) -> str:
        """``R: OVRL+SPK, a 0.4, batch`` (the std normalisation only for a multi-metric reward)."""
        parts = [] if self.method == "grpo" else [self.method.upper()]
        if self.rewarded:
            parts.append("R: " + "+".join(self.rewarded))
        a = self.config.get("rollout", {}).get("noise_level")
        if a is not None and self.method == "grpo":
            parts.append(f"a {a:g}")
        if len(self.rewarded) > 1:
            parts.append(str(self.config.get("reward", {}).get("std_normalize", "")))
        return ", ".join(parts)


def read_json(path: str) -> dict:
    """A JSON object file (``export.json``); ``{}`` when absent."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_runs(exp_dirs: list[str]) -> list[Run]:
    """The runs of ``exp_dirs``, labelled by their dir names less the prefix they all share."""
    names = [os.path.basename(os.path.normpath(d)) for d in exp_dirs]
    prefix = os.path.commonprefix(names) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind("_") + 1]
    runs = []
    for d, name in zip(exp_dirs, names):
        history = read_jsonl(os.path.join(d, "metrics.jsonl"), skip_bad=True)
        evals = read_jsonl(os.path.join(d, "eval.jsonl"), skip_bad=True)
        if not history and not evals:
            raise UserError(f"{d}: no metrics.jsonl or eval.jsonl (not a post-training exp dir, or not started)")
        export = read_json(os.path.join(d, EXPORT_FILE))
        config = read_yaml(os.path.join(d, "config.yaml")) if os.path.isfile(os.path.join(d, "config.yaml")) else {}
        runs.append(Run(d, name[len(prefix):] or name, history, evals, export, config))
    return runs


def metric_names(runs: list[Run]) -> list[str]:
    """Every metric any run logged (``eval/<m>`` or ``train/<m>``), in the metric registry's order."""
    from flowse.metrics.registry import all_outputs

    found = {k.split("/", 1)[1] for r in runs for row in r.history + r.evals for k in row
             if k.startswith(("eval/", "train/"))}
    order = [m for m in all_outputs() if m in found]
    return order + sorted(found - set(order))


X_AXES = {"step": ("step", 1.0, "training step"), "minutes": ("train_seconds", 60.0, "training minutes (wall-clock)"),
          "cpu_minutes": ("train_cpu_seconds", 60.0, "training CPU-minutes (all ranks)")}


def x_of(row: dict, x: str) -> float | None:
    """The x value of a log row on axis ``x`` (``X_AXES``); None when the row lacks it."""
    key, div, _ = X_AXES[x]
    return float(row[key]) / div if key in row else None


def paired_change(row: dict, base: dict, metric: str) -> tuple[float, float, int]:
    """``(mean, standard error, n)`` of ``row - base`` over the utterances where both have a finite ``metric``."""
    if metric not in row.get("utt_values", {}) or metric not in base.get("utt_values", {}):
        return math.nan, math.nan, 0
    a, b = paired_values(row, base, metric)
    d = a - b
    if not d.size:
        return math.nan, math.nan, 0
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else math.nan
    return float(d.mean()), se, int(d.size)


def _fmt(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:+.4f}" + ("" if math.isnan(se) else f" +- {se:.4f}")


def held_out_table(runs: list[Run], metrics: list[str], x: str = "step") -> str:
    """Markdown: the base model's held-out means, then each run's paired change last evaluated step - step 0
    (with ``x`` a time axis: the time at that step and the first rewarded metric's gain per unit of it)."""
    metrics = [m for m in metrics if any(m in row.get("utt_values", {}) for r in runs for row in r.evals)]
    timed = x != "step"
    unit = x.replace("_", "-")
    head = ["run", "reward", "utts", "last step", "exported step", "exported = last"] + metrics
    if timed:
        head += [unit, f"rewarded gain per {unit[:-1]}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    bases = [next((row for row in r.evals if int(row["step"]) == 0 and "utt_values" in row), None) for r in runs]
    first = next((b for b in bases if b is not None), None)
    if first is not None:
        means = [f"{np.nanmean(first['utt_values'][m]):.4f}" if m in first["utt_values"] else "n/a" for m in metrics]
        lines.append("| base (step 0) | | " + f"{len(first['utt_keys'])} | 0 | | | " + " | ".join(means)
                     + (" | | " if timed else "") + " |")
    for run, base in zip(runs, bases):
        rows = [row for row in run.evals if "utt_values" in row]
        last = max(rows, key=lambda row: int(row["step"])) if rows else None
        exported = run.export.get("step")
        last_step = run.export.get("last_step", last["step"] if last else exported)
        same = "n/a" if exported is None else ("yes" if int(exported) == int(last_step) else "no")
        cells = []
        n = 0
        for m in metrics:
            if base is None or last is None:
                cells.append("n/a")
                continue
            mean, se, k = paired_change(last, base, m)
            n = max(n, k)
            cells.append(_fmt(mean, se))
        if timed:
            t = x_of(last, x) if last else None
            cells.append("n/a" if t is None else f"{t:.1f}")
            gain = paired_change(last, base, run.rewarded[0]) if run.rewarded and base and last else (math.nan,) * 2
            cells.append("n/a" if t is None or not t or math.isnan(gain[0]) else
                         f"{run.rewarded[0]} {_fmt(gain[0] / t, gain[1] / t)}")
        lines.append("| " + " | ".join([run.label, run.describe(), str(n), str(last["step"]) if last else "n/a",
                                        "n/a" if exported is None else str(exported), same] + cells) + " |")
    notes = ["", "Change from the base model (step 0) to the last evaluated step: mean over the held-out utterances "
                 "of the paired difference +- its standard error; exported step: the guarded export's choice "
                 "(export.json)."]
    if any(b is not None and first is not None and not _same_base(b, first) for b in bases):
        notes.append("Warning: the runs' step-0 evaluations differ, so they do not share the base model and "
                     "held-out set, and their changes are not comparable.")
    return "\n".join(lines + notes) + "\n"


def _same_base(a: dict, b: dict, tol: float = 1e-6) -> bool:
    if a["utt_keys"] != b["utt_keys"] or set(a["utt_values"]) != set(b["utt_values"]):
        return False
    return all(np.allclose(a["utt_values"][m], b["utt_values"][m], atol=tol, equal_nan=True) for m in a["utt_values"])


def trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values up to each index (fewer at the start)."""
    ok = np.isfinite(y)
    s = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])
    c = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(len(y)) + 1
    lo = np.maximum(idx - window, 0)
    n = c[idx] - c[lo]
    return np.where(n > 0, (s[idx] - s[lo]) / np.maximum(n, 1), np.nan)


def plot_fig2(runs: list[Run], metrics: list[str], path: str, smooth: int = 8, x: str = "step") -> str:
    """Write the figure (see the module doc) to ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    columns = metrics + ["reward"]
    fig, axes = plt.subplots(2, len(columns), figsize=(3 * len(columns), 5.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, m in enumerate(columns):
        for i, run in enumerate(runs):
            color = colors[i % len(colors)]
            style = "-" if m in run.rewarded or m == "reward" else "--"
            rows = [row for row in run.evals if f"eval/{m}" in row and x_of(row, x) is not None]
            if rows:
                axes[0, j].plot([x_of(row, x) for row in rows], [row[f"eval/{m}"] for row in rows], style, marker="o",
                                color=color)
            key = "reward_mean" if m == "reward" else f"train/{m}"
            rows = [row for row in run.history if key in row and x_of(row, x) is not None]
            if rows:
                steps = [x_of(row, x) for row in rows]
                y = np.array([row[key] for row in rows], dtype=np.float64)
                axes[1, j].plot(steps, y, style, color=color, alpha=0.25, linewidth=0.8)
                axes[1, j].plot(steps, trailing_mean(y, smooth), style, color=color, linewidth=1.6)
    letters = iter("abcdefghijklmnopqrstuvwxyz" * 2)
    for row, where in enumerate(("held-out", "rollout mean")):
        for j, m in enumerate(columns):
            ax = axes[row, j]
            if not ax.lines:
                ax.axis("off")
                continue
            name = "reward (each run's own)" if m == "reward" else m
            ax.set_title(f"({next(letters)}) {name}, {where}", fontsize=9)
            ax.set_xlabel(X_AXES[x][2], fontsize=8)
            ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=colors[i % len(colors)]) for i in range(len(runs))]
    labels = [f"{r.label} ({r.describe()})" if r.describe() else r.label for r in runs]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    fig.suptitle(f"Metrics vs {X_AXES[x][2]}, one curve per run (solid: rewarded by that run, dashed: not). Top: "
                 "held-out evaluation (ODE sampler, step 0 = base model); bottom: rollout candidates' mean per "
                 f"iteration (thin) and over the last {smooth} iterations (bold)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07 + 0.025 * ((len(labels) - 1) // 3), 1, 0.95))
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exps", nargs="+", required=True, help="post-training exp dirs trained from the same base model")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--table", default=None, help="markdown file for the held-out paired changes (default: none)")
    p.add_argument("--metrics", nargs="+", default=None, help="metrics to show (default: every one logged)")
    p.add_argument("--smooth", type=int, default=8, help="iterations in the trailing mean of the rollout curves")
    p.add_argument("--x", default="step", choices=sorted(X_AXES), help="the x axis (time: equal-compute comparisons)")
    args = p.parse_args(argv)
    if args.smooth < 1:
        raise UserError(f"--smooth must be >= 1, got {args.smooth}")
    missing = [d for d in args.exps if not os.path.isdir(d)]
    if missing:
        raise UserError(f"--exps: no such directory: {' '.join(missing)}")
    runs = load_runs(args.exps)
    metrics = metric_names(runs)
    if args.metrics:
        unknown = [m for m in args.metrics if m not in metrics]
        if unknown:
            raise UserError(f"--metrics {' '.join(unknown)}: not logged by these runs; choose from {metrics}")
        metrics = args.metrics
    print(f"wrote {plot_fig2(runs, metrics, args.out, args.smooth, args.x)}")
    if args.table:
        table = held_out_table(runs, metrics, args.x)
        write_text(args.table, table)
        print(table, end="")
        print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
