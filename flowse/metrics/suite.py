"""All metrics behind one call: ``MetricSuite(metrics, models).compute(est, ref)``.

Used by the scoring CLI (files) and by the GRPO reward (tensors). Conventions:
- inputs are float 16 kHz mono waveforms; values beyond [-1, 1] are clipped first
  (``sanitize``), as writing a 16-bit wav would (the DNSMOS reference rejects them);
- DNSMOS (SIG BAK OVRL P808) needs no reference; SPK SBS PESQ ESTOI SISDR do;
- SPK and SBS use the full signals; PESQ, ESTOI and SI-SDR, which compare samples,
  use estimate and reference trimmed to the shorter of the two;
- a value that is undefined for an item is NaN, and ``undefined[metric]`` lists
  ``(index, reason)`` so that callers can warn and report counts; an item with NaN
  or Inf samples gets NaN for every metric (e.g. a diverged GRPO rollout);
- SBS without a configured model is *unavailable* (``unavailable["SBS"]`` holds the
  hint), never replaced by something else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from flowse.metrics.config import NEEDS_REF, SBS_HINT, ScoreModelsConfig, expand_metrics
from flowse.metrics.intrusive import MetricUndefined, estoi, pesq_wb, si_sdr
from flowse.utils.log import get_logger

logger = get_logger(__name__)

_INTRUSIVE = {"PESQ": pesq_wb, "ESTOI": estoi, "SISDR": si_sdr}


def sanitize(wav: np.ndarray) -> tuple[np.ndarray, bool]:
    """float32 mono waveform clipped to [-1, 1]; the flag says whether clipping happened."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size and float(np.max(np.abs(wav))) > 1.0:
        return np.clip(wav, -1.0, 1.0), True
    return wav, False


@dataclass
class SuiteResult:
    values: dict[str, np.ndarray]
    undefined: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    trimmed: list[tuple[int, int, int]] = field(default_factory=list)  # (index, est_len, ref_len)


class MetricSuite:
    """Loads the models of the requested metrics once; ``compute`` scores a batch."""

    def __init__(self, metrics: Sequence[str] | str, models: ScoreModelsConfig | None = None, device: str = "cpu"):
        self.models_cfg = models = models or ScoreModelsConfig()
        requested = expand_metrics(list(metrics) if not isinstance(metrics, str) else metrics)
        self.unavailable: dict[str, str] = {}
        if "SBS" in requested and not models.sbs.model_dir:
            self.unavailable["SBS"] = SBS_HINT
        self.metrics = [m for m in requested if m not in self.unavailable]
        self.dnsmos = self.speaker = self.sbs = None
        if any(m in self.metrics for m in ("SIG", "BAK", "OVRL", "P808")):
            from flowse.metrics.dnsmos import DNSMOS

            self.dnsmos = DNSMOS(models.dnsmos, device)
        if "SPK" in self.metrics:
            from flowse.metrics.speaker import SpeakerSimilarity

            self.speaker = SpeakerSimilarity(models.speaker, device)
        if "SBS" in self.metrics:
            from flowse.metrics.speechbertscore import SpeechBERTScore

            self.sbs = SpeechBERTScore(models.sbs, device)

    @property
    def needs_ref(self) -> list[str]:
        return [m for m in self.metrics if m in NEEDS_REF]

    def compute(
        self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None = None, metrics: Sequence[str] | None = None
    ) -> SuiteResult:
        """Each configured metric (or the subset ``metrics``) per item: ``values[metric]`` is float64 ``[B]``."""
        wanted = self.metrics if metrics is None else [m for m in self.metrics if m in metrics]
        if metrics is not None and len(wanted) != len(set(metrics)):
            raise ValueError(f"metrics {sorted(set(metrics) - set(wanted))} are not loaded in this suite")
        needs_ref = [m for m in wanted if m in NEEDS_REF]
        if ref is None and needs_ref:
            raise ValueError(f"metrics {needs_ref} need a reference; none given")
        if ref is not None and len(ref) != len(est):
            raise ValueError(f"{len(est)} estimates but {len(ref)} references")
        est = [sanitize(w)[0] for w in est]
        ref = [sanitize(w)[0] for w in ref] if ref is not None else None
        res = SuiteResult(values={})
        n = len(est)
        broken: dict[int, str] = {}
        for i in range(n):
            if not np.all(np.isfinite(est[i])):
                broken[i] = "NaN or Inf samples in the estimate"
            elif ref is not None and needs_ref and not np.all(np.isfinite(ref[i])):
                broken[i] = "NaN or Inf samples in the reference"
        for i in broken:  # scored as silence so that batches keep their shape; reported NaN below
            est[i] = np.zeros_like(est[i])
            if ref is not None:
                ref[i] = np.zeros_like(ref[i])
        if any(m in wanted for m in ("SIG", "BAK", "OVRL", "P808")):
            d = self.dnsmos.score(est, p808="P808" in wanted)
            for m in ("SIG", "BAK", "OVRL", "P808"):
                if m in wanted:
                    res.values[m] = d[m]
        if "SPK" in wanted:
            spk = self.speaker.score(est, ref)
            res.values["SPK"] = spk
            bad = [(i, "all-zero estimate or reference: no speaker embedding") for i in range(n)
                   if np.isnan(spk[i]) and i not in broken]
            if bad:
                res.undefined["SPK"] = bad
        if "SBS" in wanted:
            res.values["SBS"] = self.sbs.sbs(est, ref)
        intrusive = [m for m in wanted if m in _INTRUSIVE]
        if intrusive:
            for m in intrusive:
                res.values[m] = np.full(n, np.nan)
            for i in range(n):
                if i in broken:
                    continue
                e, r = est[i], ref[i]
                if len(e) != len(r):
                    res.trimmed.append((i, len(e), len(r)))
                    k = min(len(e), len(r))
                    e, r = e[:k], r[:k]
                for m in intrusive:
                    try:
                        res.values[m][i] = _INTRUSIVE[m](e, r)
                    except MetricUndefined as err:
                        res.undefined.setdefault(m, []).append((i, str(err)))
        values = {m: np.asarray(res.values[m], dtype=np.float64) for m in wanted}
        for i, reason in broken.items():
            for m in wanted:
                values[m][i] = np.nan
                res.undefined.setdefault(m, []).append((i, reason))
        return SuiteResult(
            values=values,
            undefined=res.undefined,
            trimmed=res.trimmed,
        )
