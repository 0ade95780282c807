"""All metrics behind one call: ``MetricSuite(metrics, models).compute(est, ref)``.

Used by the scoring CLI (files) and by the GRPO reward (tensors). Conventions:
- inputs are float 16 kHz mono waveforms; values beyond [-1, 1] are clipped first
  (``sanitize``), as writing a 16-bit wav would (the DNSMOS reference rejects them);
- the metrics are those of ``flowse.metrics.registry``; a metric declared ``aligned``
  (PESQ, ESTOI, SI-SDR compare samples) gets estimate and reference trimmed to the
  shorter of the two, the others (SPK, SBS) the full signals;
- a value that is undefined for an item is NaN, and ``undefined[metric]`` lists
  ``(index, reason)`` so that callers can warn and report counts; an item with NaN
  or Inf samples gets NaN for every metric (e.g. a diverged GRPO rollout);
- a metric that is not available here (SBS without a configured model) is
  *unavailable* (``unavailable["SBS"]`` holds the hint), never replaced by something else;
  so are the metrics that need reference transcripts (WER) in a suite built ``with_text=False``;
- ``texts`` (one reference transcript or None per item) go to the metrics declared
  ``needs_text`` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from flowse.metrics.config import ScoreModelsConfig
from flowse.metrics.registry import expand_metrics, owner, unavailable_outputs
from flowse.utils.log import get_logger

logger = get_logger(__name__)

NO_TEXT_HINT = "{} is n/a: no reference transcripts (a Kaldi text file '<utt> <words>': score --text, <set>/text)"


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
    """Builds the scorers of the requested metrics once; ``compute`` scores a batch."""

    def __init__(self, metrics: Sequence[str] | str, models: ScoreModelsConfig | None = None, device: str = "cpu",
                 with_text: bool = True):
        self.models_cfg = models = models or ScoreModelsConfig()
        requested = expand_metrics(list(metrics) if not isinstance(metrics, str) else metrics)
        self.unavailable: dict[str, str] = unavailable_outputs(requested, models)
        if not with_text:
            self.unavailable.update({m: NO_TEXT_HINT.format(m) for m in requested if owner(m).needs_text})
        self.metrics = [m for m in requested if m not in self.unavailable]
        self.scorers = {}  # metric key -> scorer, in registry order
        for spec in dict.fromkeys(owner(m) for m in self.metrics):
            self.scorers[spec.key] = spec.build(spec.section(models), device)

    @property
    def needs_ref(self) -> list[str]:
        return [m for m in self.metrics if owner(m).needs_ref]

    def compute(
        self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None = None, metrics: Sequence[str] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> SuiteResult:
        """Each configured metric (or the subset ``metrics``) per item: ``values[metric]`` is float64 ``[B]``."""
        wanted = self.metrics if metrics is None else [m for m in self.metrics if m in metrics]
        if metrics is not None and len(wanted) != len(set(metrics)):
            raise ValueError(f"metrics {sorted(set(metrics) - set(wanted))} are not loaded in this suite")
        needs_ref = [m for m in wanted if owner(m).needs_ref]
        if ref is None and needs_ref:
            raise ValueError(f"metrics {needs_ref} need a reference; none given")
        if ref is not None and len(ref) != len(est):
            raise ValueError(f"{len(est)} estimates but {len(ref)} references")
        needs_text = [m for m in wanted if owner(m).needs_text]
        if texts is None and needs_text:
            raise ValueError(f"metrics {needs_text} need reference transcripts; none given")
        if texts is not None and len(texts) != len(est):
            raise ValueError(f"{len(est)} estimates but {len(texts)} transcripts")
        est = [sanitize(w)[0] for w in est]
        ref = [sanitize(w)[0] for w in ref] if ref is not None else None
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
        res = SuiteResult(values={})
        groups = dict.fromkeys(owner(m) for m in wanted)
        aligned = None
        if any(spec.aligned for spec in groups):
            aligned = self._aligned(est, ref, broken, res.trimmed)
        for spec in groups:
            outputs = [m for m in spec.output_names if m in wanted]
            e, r = aligned if spec.aligned else (est, ref if spec.needs_ref else None)
            extra = {"texts": list(texts)} if spec.needs_text else {}
            scores = self.scorers[spec.key](e, r, outputs, **extra)
            reasons = getattr(scores, "undefined", {})
            for m in outputs:
                res.values[m] = np.asarray(scores[m], dtype=np.float64)
                items = [(i, why) for i, why in reasons.get(m, []) if i not in broken]
                if items:
                    res.undefined[m] = items
        values = {m: res.values[m] for m in wanted}
        for i, reason in broken.items():
            for m in wanted:
                values[m][i] = np.nan
                res.undefined.setdefault(m, []).append((i, reason))
        return SuiteResult(values=values, undefined=res.undefined, trimmed=res.trimmed)

    @staticmethod
    def _aligned(est, ref, broken, trimmed: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Estimate and reference cut to the shorter of the two; ``trimmed`` lists the unbroken items cut."""
        est_t, ref_t = [], []
        for i, (e, r) in enumerate(zip(est, ref)):
            if len(e) != len(r):
                if i not in broken:
                    trimmed.append((i, len(e), len(r)))
                k = min(len(e), len(r))
                e, r = e[:k], r[:k]
            est_t.append(e)
            ref_t.append(r)
        return est_t, ref_t
