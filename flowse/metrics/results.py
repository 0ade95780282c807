"""RESULTS.md and results.json of an experiment, and the comparison table over experiments.

Inputs: ``<exp_dir>/scores_<set>/summary.json`` written by ``flowse.metrics.scoring``.
Outputs: ``<exp_dir>/results.json`` = ``{"<set>": {"SIG": .., "BAK": .., "OVRL": ..,
"P808": .., "SPK": .., "SBS": .., "PESQ": .., "ESTOI": .., "SISDR": ..}}`` (every
registered metric output, null for n/a), and ``<exp_dir>/RESULTS.md`` (environment, the
exp's config.yaml inline, one table row per test set; columns as the metrics declare
them). SPK, SBS and ESTOI are fractions in [0, 1] (x100 gives the paper's %), SI-SDR
is in dB.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import subprocess
import sys

from flowse.metrics.registry import Metric, Output, all_metrics, all_outputs
from flowse.utils.fileio import read_kv, write_json, write_text
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def table_columns() -> list[tuple[Metric, Output]]:
    """The RESULTS columns: every registered output that declares a column title, in registry order."""
    return [(m, o) for m in all_metrics() for o in m.outputs if o.column]


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def set_results(summary: dict) -> dict[str, float | None]:
    """Metric means of one summary.json (None where not computed or n/a)."""
    metrics = summary.get("metrics", {})
    return {m: (metrics[m]["mean"] if m in metrics else None) for m in all_outputs()}


def _git_commit(path: str) -> str:
    try:
        rev = subprocess.run(["git", "-C", path, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict[str, str]:
    """Date, git commit, versions and devices of this machine."""
    import flowse

    env = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git commit": _git_commit(os.path.dirname(os.path.dirname(os.path.abspath(flowse.__file__)))),
        "python": platform.python_version(),
    }
    for mod in ("torch", "torchaudio", "onnxruntime", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = "not installed"
    env["cpu"] = f"{_cpu_name()}, {os.cpu_count()} cores"
    try:
        import torch

        env["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none"
    except Exception:  # noqa: BLE001 - only informative
        env["gpu"] = "unknown"
    return env


def render_table(rows: list[tuple[str, dict | None, dict | None]], first: str = "set") -> tuple[str, list[str]]:
    """Markdown table; rows are (name, results, summary). Returns the text and the footnotes it needs."""
    columns = table_columns()
    head = f"| {first} | #utt | " + " | ".join(o.column for _, o in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    notes: list[str] = []
    for name, res, summ in rows:
        if res is None:
            lines.append(f"| {name} | not scored |" + " |" * len(columns))
            continue
        n = "?"
        if summ:
            n = str(summ.get("num_scored", "?"))
            if summ.get("num_skipped"):
                n += f" ({summ['num_skipped']} skipped)"
        cells = []
        for metric, out in columns:
            cell = fmt(res.get(out.name), out.fmt)
            if metric.hint and res.get(out.name) is None:  # a metric that can be unavailable: say why
                cell = f"n/a [^{metric.key}]"
                if f"[^{metric.key}]: {metric.hint}" not in notes:
                    notes.append(f"[^{metric.key}]: {metric.hint}")
            cells.append(cell)
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", notes


def make_results(exp_dir: str, sets: list[str], title: str | None = None) -> tuple[str, dict]:
    """Write ``RESULTS.md`` and ``results.json`` of ``exp_dir``; returns the markdown and the results."""
    results: dict[str, dict] = {}
    rows = []
    for s in sets:
        path = os.path.join(exp_dir, f"scores_{s}", "summary.json")
        if not os.path.isfile(path):
            logger.warning("%s: not found, %s is listed as not scored", path, s)
            rows.append((s, None, None))
            continue
        with open(path, encoding="utf-8") as f:
            summ = json.load(f)
        results[s] = set_results(summ)
        rows.append((s, results[s], summ))
    table, notes = render_table(rows)
    env = environment()
    title = title or f"Results: {os.path.basename(os.path.normpath(exp_dir))}"
    parts = [f"# {title}\n", "## Environment\n"]
    parts += [f"- {k}: {v}" for k, v in env.items()]
    parts.append(f"- exp dir: `{exp_dir}`\n")
    parts.append("## Scores\n")
    parts.append("DNSMOS P.835 SIG/BAK/OVRL; SPK speaker similarity, SBS SpeechBERTScore and ESTOI in [0, 1] "
                 "(x100 = %); PESQ wide band; SI-SDR in dB. Means over the scored utterances.\n")
    parts.append(table)
    if notes:
        parts.append("\n".join(notes) + "\n")
    export_path = os.path.join(exp_dir, "export.json")  # a GRPO exp: which step is the model, and why
    if os.path.isfile(export_path):
        with open(export_path, encoding="utf-8") as f:
            parts.append("## Exported step\n\n" + json.load(f)["summary"] + "\n")
    cfg_path = os.path.join(exp_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg_text = f.read().rstrip("\n")
        parts.append("## Config\n")
        parts.append(f"<details><summary>{cfg_path}</summary>\n\n```yaml\n{cfg_text}\n```\n</details>\n")
    md = "\n".join(parts)
    write_text(os.path.join(exp_dir, "RESULTS.md"), md)
    write_json(os.path.join(exp_dir, "results.json"), results)
    return md, results


def collect(exp_root: str) -> list[tuple[str, str, dict]]:
    """``(system, set, results)`` for every ``<exp_root>/*/results.json``, sorted by system then set order."""
    rows = []
    for path in sorted(glob.glob(os.path.join(exp_root, "*", "results.json"))):
        system = os.path.basename(os.path.dirname(path))
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            logger.warning("%s: unreadable (%s), left out", path, e)
            continue
        for s, res in data.items():
            rows.append((system, s, res))
    return rows


def render_collection(rows: list[tuple[str, str, dict]]) -> str:
    """One markdown table, rows system x set."""
    columns = table_columns()
    head = "| system | set | " + " | ".join(o.column for _, o in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for system, s, res in rows:
        lines.append(f"| {system} | {s} | " + " | ".join(fmt(res.get(o.name), o.fmt) for _, o in columns) + " |")
    return "\n".join(lines) + "\n"


def utterance_scores(system_dir: str, test_set: str, metric: str) -> dict[str, float]:
    """Per-utterance values of ``metric`` (``<system>/scores_<set>/<METRIC>``), non-finite ones left out."""
    path = os.path.join(system_dir, f"scores_{test_set}", metric)
    if not os.path.isfile(path):
        return {}
    values = {k: float(v) for k, v in read_kv(path).items()}
    return {k: v for k, v in values.items() if v == v and abs(v) != float("inf")}


def paired_difference(system_dir: str, base_dir: str, test_set: str, metric: str) -> tuple[float, float, int] | None:
    """``(mean, standard error, n)`` of ``system - base`` over the utterances both scored; None when n < 2."""
    a, b = utterance_scores(system_dir, test_set, metric), utterance_scores(base_dir, test_set, metric)
    keys = sorted(set(a) & set(b))
    if len(keys) < 2:
        return None
    d = [a[k] - b[k] for k in keys]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, (var / len(d)) ** 0.5, len(d)


def render_paired(exp_root: str, pairs: list[tuple[str, str]], rows: list[tuple[str, str, dict]]) -> str:
    """A markdown table of paired differences ``system - base`` (mean +- standard error over the test
    utterances both systems scored), one row per pair and test set, for ``pairs`` of exp dir names."""
    columns = table_columns()
    sets = list(dict.fromkeys(s for _, s, _ in rows))
    head = "| system - base | set | n | " + " | ".join(o.column for _, o in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    for system, base in pairs:
        for test_set in sets:
            cells, n = [], 0
            for _, o in columns:
                d = paired_difference(os.path.join(exp_root, system), os.path.join(exp_root, base), test_set, o.name)
                if d is None:
                    cells.append("n/a")
                else:
                    cells.append(f"{d[0]:+{o.fmt}} ± {d[1]:{o.fmt}}")
                    n = max(n, d[2])
            if n:
                lines.append(f"| {system} - {base} | {test_set} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``"grpo_mini:pretrain_mini pretrain_mini:noisy_input"`` -> ``[(system, base), ...]`` (exp dir names
    or paths; their basenames are used)."""
    pairs = []
    for item in text.split():
        system, sep, base = item.partition(":")
        if not sep or not system or not base:
            raise ValueError(f"--paired: {item!r} is not SYSTEM:BASE")
        pairs.append((os.path.basename(os.path.normpath(system)), os.path.basename(os.path.normpath(base))))
    return pairs


def main_collect(argv: list[str] | None = None) -> int:
    """``collect_results.py EXP_ROOT [--out RESULTS.md] [--paired "SYS:BASE ..."]``: print (and write) the
    comparison table and the paired differences."""
    import argparse

    p = argparse.ArgumentParser(description="Collect every <exp_root>/*/results.json into one markdown table.")
    p.add_argument("exp_root")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.add_argument("--paired", default="",
                   help="space-separated SYSTEM:BASE exp dirs: also tabulate SYSTEM - BASE per utterance (mean +- SE)")
    args = p.parse_args(argv)
    try:
        pairs = parse_pairs(args.paired)
    except ValueError as e:
        p.error(str(e))
    rows = collect(args.exp_root)
    if not rows:
        print(f"no {args.exp_root}/*/results.json found", file=sys.stderr)
        return 1
    md = render_collection(rows)
    have = {system for system, _, _ in rows}
    pairs = [(a, b) for a, b in pairs if a in have and b in have]
    if pairs:
        md += ("\nPaired differences (mean ± standard error over the test utterances both systems scored; "
               "an effect within about 2 SE is noise):\n\n" + render_paired(args.exp_root, pairs, rows))
    if args.out:
        write_text(args.out, f"# Results in {args.exp_root}\n\n" + md)
    print(md, end="")
    return 0
