"""Scoring of audio lists (``wav.scp`` or folders) into Kaldi-style per-metric files.

Output of a scoring dir ``D``: one file per metric (``D/SIG``, ``D/OVRL``, ``D/PESQ``...,
``<utt> <value>`` in C order, ``nan`` where the metric is undefined for that utt) and
``D/summary.json``::

    {"num_utts": 150, "num_scored": 149, "num_skipped": 1,
     "skipped": {"utt7": "cannot read audio (...)"},
     "metrics": {"OVRL": {"mean": 3.21, "count": 149, "num_undefined": 0, "undefined": {}},
                 "SBS": {"mean": null, "count": 0, "status": "n/a", "hint": "..."}, ...},
     "est": "...", "ref": "..."}

Means are over the defined (finite) values; ``count`` says how many. What is
skipped (one log line each, listed in the summary): unreadable audio, empty, NaN
or Inf samples, not mono, shorter than ``min_seconds`` (default 0.5 s), a reference
that cannot be used. Scored with a warning: all-zero (silent) audio, samples beyond
[-1, 1] (clipped), other sample rates (resampled), estimate and reference of
different lengths (PESQ/ESTOI/SI-SDR compare them trimmed to the shorter).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from flowse.features.audio import SAMPLE_RATE, AudioError, read_audio
from flowse.data.kaldi import load_entry
from flowse.metrics.config import ALL_METRICS
from flowse.metrics.suite import MetricSuite, sanitize
from flowse.utils.fileio import c_sorted, read_kv, write_json, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")


def audio_list(spec: str) -> dict[str, str]:
    """``wav.scp`` -> its entries; a folder -> ``{file basename without extension: path}``."""
    if os.path.isdir(spec):
        out: dict[str, str] = {}
        for name in sorted(os.listdir(spec)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTS:
                continue
            if stem in out:
                raise ValueError(f"{spec}: two audio files share the utterance id {stem!r}")
            out[stem] = os.path.join(spec, name)
        if not out:
            raise ValueError(f"{spec}: no audio files ({', '.join(AUDIO_EXTS)})")
        return out
    if os.path.isfile(spec):
        out = read_kv(spec)
        if not out:
            raise ValueError(f"{spec}: empty list")
        return out
    raise FileNotFoundError(f"no such scp file or folder: {spec}")


def load_wave(value: str, name: str) -> tuple[np.ndarray, int]:
    """Audio of one list entry at 16 kHz, and the rate it had before resampling."""
    if os.path.isfile(value):
        import soundfile as sf

        try:
            rate = sf.info(value).samplerate
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{value}: cannot read audio ({e})") from None
        return read_audio(value, check=False), rate
    return load_entry(value, name), SAMPLE_RATE


def unusable(wav: np.ndarray, min_seconds: float) -> str | None:
    """Why a waveform cannot be scored, or None."""
    if wav.ndim != 1:
        return f"not a mono waveform (shape {wav.shape})"
    if wav.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(wav)):
        return "NaN or Inf samples"
    if wav.size < min_seconds * SAMPLE_RATE:
        return f"too short ({wav.size / SAMPLE_RATE:.3f} s < {min_seconds} s)"
    return None


@dataclass
class ScoreOutcome:
    metrics: list[str]
    keys: list[str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


class _Notes:
    """Conditions reported once per run (with a count and an example) instead of per utterance."""

    def __init__(self):
        self.items: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.items.setdefault(kind, []).append(example)

    def log(self) -> None:
        for kind, ex in self.items.items():
            logger.warning("%d utterance(s): %s (e.g. %s)", len(ex), kind, ex[0])


def score_keys(
    keys: list[str],
    est: dict[str, str],
    ref: dict[str, str] | None,
    suite: MetricSuite,
    batch_size: int = 16,
    min_seconds: float = 0.5,
    progress: bool = True,
) -> ScoreOutcome:
    """Score ``keys`` (utt ids of ``est``; ``ref`` has the same ids) with ``suite``'s metrics."""
    from tqdm import tqdm

    out = ScoreOutcome(metrics=list(suite.metrics), keys=list(keys), unavailable=dict(suite.unavailable))
    for m in out.metrics:
        out.values[m] = {}
    notes = _Notes()
    bar = tqdm(total=len(keys), desc="scoring", unit="utt", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(keys), batch_size):
        names, est_w, ref_w = [], [], []
        for key in keys[start : start + batch_size]:
            try:
                e, rate = load_wave(est[key], f"{key} (estimate)")
                if rate != SAMPLE_RATE:
                    notes.add(f"not at {SAMPLE_RATE} Hz, resampled", f"{key} at {rate} Hz")
                why = unusable(e, min_seconds)
                if why:
                    raise AudioError(why)
                r = None
                if ref is not None:
                    r, rate = load_wave(ref[key], f"{key} (reference)")
                    if rate != SAMPLE_RATE:
                        notes.add(f"reference not at {SAMPLE_RATE} Hz, resampled", f"{key} at {rate} Hz")
                    why = unusable(r, min_seconds)
                    if why:
                        raise AudioError(f"reference: {why}")
            except AudioError as err:
                reason = str(err)
                logger.warning("skipped %s: %s", key, reason)
                out.skipped[key] = reason
                continue
            if sanitize(e)[1]:
                notes.add("estimate has samples beyond [-1, 1], clipped", key)
            if r is not None and sanitize(r)[1]:
                notes.add("reference has samples beyond [-1, 1], clipped", key)
            if not np.any(e):
                logger.warning("%s: the estimate is all zeros (silence); scored as such", key)
            if r is not None and not np.any(r):
                logger.warning("%s: the reference is all zeros (silence); intrusive metrics are undefined", key)
            names.append(key)
            est_w.append(e)
            ref_w.append(r)
        if names:
            res = suite.compute(est_w, ref_w if ref is not None else None)
            for i, j_est, j_ref in res.trimmed:
                notes.add(
                    "estimate and reference lengths differ; PESQ/ESTOI/SI-SDR use both trimmed to the shorter",
                    f"{names[i]}: {j_est} vs {j_ref} samples",
                )
            for m, vals in res.values.items():
                for k, v in zip(names, vals):
                    out.values[m][k] = float(v)
            for m, items in res.undefined.items():
                for i, reason in items:
                    logger.warning("%s undefined for %s: %s (NaN, excluded from the mean)", m, names[i], reason)
                    out.undefined.setdefault(m, {})[names[i]] = reason
        bar.update(len(keys[start : start + batch_size]))
    bar.close()
    notes.log()
    return out


def _mean(vals: Iterable[float]) -> tuple[float | None, int]:
    finite = [v for v in vals if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(finite)


def summarize(out: ScoreOutcome, est: str = "", ref: str | None = None) -> dict:
    metrics: dict[str, dict] = {}
    for m in ALL_METRICS:
        if m in out.values:
            mean, count = _mean(out.values[m].values())
            und = {k: out.undefined.get(m, {})[k] for k in c_sorted(out.undefined.get(m, {}))}
            metrics[m] = {"mean": mean, "count": count, "num_undefined": len(und), "undefined": und}
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
    merged = ScoreOutcome(metrics=[m for m in ALL_METRICS if any(m in p.metrics for p in parts)], keys=list(keys))
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
