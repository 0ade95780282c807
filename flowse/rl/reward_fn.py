"""Rewards of GRPO candidates: a pluggable two-part callable.

The trainer needs (1) per-candidate metric values, computed where the candidates are
(``metrics``: the expensive part, vocoder + metric models; ``judge=True`` adds the held-out
judge metrics, e.g. DMOS, which the held-out evaluation shows but no rollout pays for),
(2) the rewarded values ``s_i m_i`` of ALL candidates of the iteration (``rewarded_values``:
the trainer logs their spread and freezes their stds) and (3) the scalar reward from them
(``reward``: cheap; the multi-metric reward divides each metric by a std, of the collected
data or frozen, which must not depend on how candidates were sharded across ranks).

``AudioReward`` is the SE reward of the paper: log-mel -> vocoder -> waveform (resampled
to the metrics' 16 kHz when the vocoder runs at another rate) -> ``flowse.rl.reward.RewardModel``.
Any object with the same two methods works (the tests use a cheap mel-domain reward
without a vocoder).
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from flowse.features.audio import resample
from flowse.metrics.registry import METRIC_RATE
from flowse.metrics.suite import MetricSuite
from flowse.rl.prompts import PromptBatch


class RewardFn(Protocol):
    last_times: dict[str, float]

    def metrics(self, mel: torch.Tensor, prompts: PromptBatch, judge: bool = False) -> dict[str, np.ndarray]:
        """``mel [N, T, F]`` log-mel estimates (valid frames per ``prompts.mask``) -> ``{name: [N]}``;
        ``judge``: the judge metrics too."""

    def rewarded_values(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The scaled value of each rewarded metric ``{name: [N]}`` (finite)."""

    def reward(self, metrics: dict[str, np.ndarray], stds: dict[str, float] | None = None) -> np.ndarray:
        """All candidates' metric values -> rewards ``[N]``; ``stds``: frozen normalisation stds."""


class AudioReward:
    """Vocoder + ``RewardModel``: every metric of the reward config is computed and returned (rewarded or logged).

    Candidates and their clean references (``prompts.ref_wav``, same crops) are at the
    vocoder's ``sample_rate``; both are resampled to ``METRIC_RATE`` before scoring.
    """

    def __init__(self, vocoder, reward_model, batch_size: int = 64, judge: MetricSuite | None = None):
        self.vocoder = vocoder
        self.reward_model = reward_model
        self.judge = judge
        self.batch_size = batch_size
        self.last_times: dict[str, float] = {"vocoder": 0.0, "reward": 0.0}

    def decode(self, mel: torch.Tensor, prompts: PromptBatch) -> list[np.ndarray]:
        hop = self.vocoder.hop_length
        lengths = prompts.lengths
        noisy = prompts.noisy_tensor(hop) if self.vocoder.needs_noisy else None
        out: list[np.ndarray] = []
        for s in range(0, mel.shape[0], self.batch_size):
            sl = slice(s, s + self.batch_size)
            wav = self.vocoder.decode(mel[sl], lengths[sl], noisy[sl] if noisy is not None else None).cpu()
            out += [wav[i, : int(lengths[s + i]) * hop].numpy() for i in range(wav.shape[0])]
        return out

    def metrics(self, mel: torch.Tensor, prompts: PromptBatch, judge: bool = False) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        est = self.decode(mel, prompts)
        ref = prompts.ref_wav
        rate = self.vocoder.sample_rate
        if rate != METRIC_RATE:
            est = [resample(w, rate, METRIC_RATE) for w in est]
            ref = [resample(w, rate, METRIC_RATE) for w in ref] if ref is not None else None
        t1 = time.perf_counter()
        m = self.reward_model.compute(est, ref)
        if judge and self.judge is not None:
            m.update(self.judge.compute(est, ref if self.judge.needs_ref else None).values)
        t2 = time.perf_counter()
        self.last_times = {"vocoder": t1 - t0, "reward": t2 - t1}
        return {k: np.asarray(v, dtype=np.float64) for k, v in m.items()}

    def rewarded_values(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.reward_model.rewarded_values(metrics)

    def reward(self, metrics: dict[str, np.ndarray], stds: dict[str, float] | None = None) -> np.ndarray:
        return np.asarray(self.reward_model.reward(metrics, stds), dtype=np.float64)
