"""The paper's Fig. 2 for a set of GRPO runs from one base model: every metric against the training step.

    python -m flowse.bench.fig2 --exps exp/grpo_mini_fig2_* --out fig2.png [--table fig2.md] [--smooth 8]

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
is the last one.
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
    """One GRPO exp dir: its logs, its export choice and its resolved config (``{}`` when absent)."""

    exp_dir: str
    label: str
    history: list[dict]
    evals: list[dict]
    export: dict
    config: dict

    @property
    def rewarded(self) -> list[str]:
        return list(self.config.get("reward", {}).get("metrics", []))

    def describe(self) -> str:
        """``R: OVRL+SPK, a 0.4, batch`` (the std normalisation only for a multi-metric reward)."""
        parts = []
        if self.rewarded:
            parts.append("R: " + "+".join(self.rewarded))
        a = self.config.get("rollout", {}).get("noise_level")
        if a is not None:
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
            raise UserError(f"{d}: no metrics.jsonl or eval.jsonl (not a GRPO exp dir, or not started)")
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


def held_out_table(runs: list[Run], metrics: list[str]) -> str:
    """Markdown: the base model's held-out means, then each run's paired change last evaluated step - step 0."""
    metrics = [m for m in metrics if any(m in row.get("utt_values", {}) for r in runs for row in r.evals)]
    head = ["run", "reward", "utts", "last step", "exported step", "exported = last"] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    bases = [next((row for row in r.evals if int(row["step"]) == 0 and "utt_values" in row), None) for r in runs]
    first = next((b for b in bases if b is not None), None)
    if first is not None:
        means = [f"{np.nanmean(first['utt_values'][m]):.4f}" if m in first["utt_values"] else "n/a" for m in metrics]
        lines.append("| base (step 0) | | " + f"{len(first['utt_keys'])} | 0 | | | " + " | ".join(means) + " |")
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


def plot_fig2(runs: list[Run], metrics: list[str], path: str, smooth: int = 8) -> str:
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
            rows = [row for row in run.evals if f"eval/{m}" in row]
            if rows:
                axes[0, j].plot([row["step"] for row in rows], [row[f"eval/{m}"] for row in rows], style, marker="o",
                                color=color)
            key = "reward_mean" if m == "reward" else f"train/{m}"
            rows = [row for row in run.history if key in row]
            if rows:
                steps = [row["step"] for row in rows]
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
            ax.set_xlabel("training step", fontsize=8)
            ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=colors[i % len(colors)]) for i in range(len(runs))]
    labels = [f"{r.label} ({r.describe()})" if r.describe() else r.label for r in runs]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    fig.suptitle("Metrics vs training step, one curve per run (solid: rewarded by that run, dashed: not). Top: "
                 "held-out evaluation (ODE sampler, step 0 = base model); bottom: rollout candidates' mean per "
                 f"iteration (thin) and over the last {smooth} iterations (bold)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07 + 0.025 * ((len(labels) - 1) // 3), 1, 0.95))
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exps", nargs="+", required=True, help="GRPO exp dirs trained from the same base model")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--table", default=None, help="markdown file for the held-out paired changes (default: none)")
    p.add_argument("--metrics", nargs="+", default=None, help="metrics to show (default: every one logged)")
    p.add_argument("--smooth", type=int, default=8, help="iterations in the trailing mean of the rollout curves")
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
    print(f"wrote {plot_fig2(runs, metrics, args.out, args.smooth)}")
    if args.table:
        table = held_out_table(runs, metrics)
        write_text(args.table, table)
        print(table, end="")
        print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
