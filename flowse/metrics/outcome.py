"""Results of scoring a list: ``ScoreOutcome`` and its files (per-metric Kaldi-style files + ``summary.json``).

The file layout is described in ``flowse.metrics.scoring``. Metrics appear in the
registry's order (``flowse.metrics.registry``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from flowse.metrics.registry import all_outputs, output_spec
from flowse.utils.fileio import c_sorted, read_kv, write_json, write_kv


@dataclass
class ScoreOutcome:
    metrics: list[str]
    keys: list[str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def _mean(vals: Iterable[float]) -> tuple[float | None, int]:
    finite = [v for v in vals if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(finite)


def _pooled(vals: dict[str, float], weights: dict[str, float]) -> float | None:
    """``sum(v * w) / sum(w)`` over the items where both are finite (None when no weight)."""
    pairs = [(v, weights[k]) for k, v in vals.items()
             if math.isfinite(v) and math.isfinite(weights.get(k, math.nan))]
    total = sum(w for _, w in pairs)
    return float(sum(v * w for v, w in pairs) / total) if total > 0 else None


def summarize(out: ScoreOutcome, est: str = "", ref: str | None = None) -> dict:
    """The content of ``summary.json`` (means over the finite values; ``pooled`` for outputs
    declared ``pooled_by`` when their weight output was scored)."""
    metrics: dict[str, dict] = {}
    for m in all_outputs():
        if m in out.values:
            mean, count = _mean(out.values[m].values())
            und = {k: out.undefined.get(m, {})[k] for k in c_sorted(out.undefined.get(m, {}))}
            weight = output_spec(m).pooled_by
            pooled = {"pooled": _pooled(out.values[m], out.values[weight])} if weight in out.values else {}
            metrics[m] = {"mean": mean, **pooled, "count": count, "num_undefined": len(und), "undefined": und}
        elif m in out.unavailable:
            metrics[m] = {"mean": None, "count": 0, "status": "n/a", "hint": out.unavailable[m]}
    return {
        "num_utts": len(out.keys),
        "num_scored": len(out.keys) - len(out.skipped),
        "num_skipped": len(out.skipped),
        "skipped": {k: out.skipped[k] for k in c_sorted(out.skipped)},
        "metrics": metrics,
        "est": est,
        "ref": ref,
    }


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else repr(float(v))  # shortest exact form: merging loses nothing


def write_outcome(out_dir: str, out: ScoreOutcome, est: str = "", ref: str | None = None) -> dict:
    """Per-metric files and ``summary.json`` (returned) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    for m, vals in out.values.items():
        write_kv(os.path.join(out_dir, m), {k: _fmt(v) for k, v in vals.items()})
    summary = summarize(out, est, ref)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    return summary


def read_outcome(out_dir: str) -> ScoreOutcome:
    """Inverse of ``write_outcome`` (used to merge the parts of a parallel run)."""
    with open(os.path.join(out_dir, "summary.json"), encoding="utf-8") as f:
        s = json.load(f)
    out = ScoreOutcome(metrics=[], keys=[], skipped=dict(s["skipped"]))
    for m, info in s["metrics"].items():
        if info.get("status") == "n/a":
            out.unavailable[m] = info["hint"]
            continue
        out.metrics.append(m)
        out.values[m] = {k: float(v) for k, v in read_kv(os.path.join(out_dir, m)).items()}
        if info["undefined"]:
            out.undefined[m] = dict(info["undefined"])
    scored = set().union(*[set(v) for v in out.values.values()]) if out.values else set()
    out.keys = c_sorted(scored | set(out.skipped))
    return out


def merge_outcomes(parts: list[ScoreOutcome], keys: list[str]) -> ScoreOutcome:
    """One outcome from the parts of a parallel run over ``keys``; a key in no part is an error."""
    merged = ScoreOutcome(metrics=[m for m in all_outputs() if any(m in p.metrics for p in parts)], keys=list(keys))
    for p in parts:
        merged.skipped.update(p.skipped)
        merged.unavailable.update(p.unavailable)
        for m, vals in p.values.items():
            merged.values.setdefault(m, {}).update(vals)
        for m, und in p.undefined.items():
            merged.undefined.setdefault(m, {}).update(und)
    done = set(merged.skipped).union(*[set(v) for v in merged.values.values()])
    missing = [k for k in keys if k not in done]
    if missing and merged.values:
        raise RuntimeError(f"{len(missing)} utterances missing from the job outputs, e.g. {missing[:5]}")
    return merged
