"""DNS-style mixing of speech and noise, without the DNS synthesizer's bugs.

Procedure (DNS-Challenge style): the SNR is measured between the speech that
enters the mix (reverberant when a RIR was applied) and the noise, both as
whole-signal RMS; the noise is scaled to the requested SNR; the mix is brought to
a target RMS level (dBFS) with one gain shared by every part; if any part would
peak above ``peak`` all parts are scaled down together. The parts are rounded to
float32 first and ``noisy`` is their float32 sum, so ``noisy == speech + noise``
holds exactly for the stored arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Energy ratio of ``speech`` to ``noise`` in dB."""
    return float(10.0 * np.log10(np.sum(np.square(speech, dtype=np.float64)) / np.sum(np.square(noise, dtype=np.float64))))


@dataclass
class Mixture:
    """float32 parts of one mixture; ``noisy == speech + noise`` exactly.

    ``speech`` is what entered the mix (reverberant for reverberant utterances),
    ``target`` the training reference (``speech`` itself, or its dry / early part).
    """

    noisy: np.ndarray
    speech: np.ndarray
    noise: np.ndarray
    target: np.ndarray
    snr_db: float
    level_db: float
    gain: float
    clipped: bool


def mix(
    speech: np.ndarray,
    noise: np.ndarray,
    snr: float,
    level_db: float,
    target: np.ndarray | None = None,
    peak: float = 0.99,
) -> Mixture:
    """Mix ``speech`` and ``noise`` (same length) at ``snr`` dB, the mix at ``level_db`` dBFS RMS."""
    if speech.shape != noise.shape:
        raise ValueError(f"speech and noise lengths differ: {speech.shape} vs {noise.shape}")
    if target is not None and target.shape != speech.shape:
        raise ValueError(f"speech and target lengths differ: {speech.shape} vs {target.shape}")
    s = np.asarray(speech, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    s_rms, n_rms = rms(s), rms(n)
    if s_rms <= 0 or n_rms <= 0:
        raise ValueError("speech and noise must not be silent")
    s = s / s_rms
    t = s if target is None else np.asarray(target, dtype=np.float64) / s_rms
    n = n / n_rms * 10.0 ** (-snr / 20.0)
    gain = 10.0 ** (level_db / 20.0) / rms(s + n)
    s, n, t = s * gain, n * gain, t * gain
    top = max(np.max(np.abs(s + n)), np.max(np.abs(s)), np.max(np.abs(n)), np.max(np.abs(t)))
    clipped = bool(top > peak)
    if clipped:
        scale = peak * (1.0 - 1e-6) / top  # margin so float32 rounding stays under ``peak``
        s, n, t, gain = s * scale, n * scale, t * scale, gain * scale
    s32, n32 = s.astype(np.float32), n.astype(np.float32)
    t32 = s32 if target is None else t.astype(np.float32)
    noisy = s32 + n32
    return Mixture(noisy, s32, n32, t32, snr_db(s32, n32), float(20 * np.log10(rms(noisy))), float(gain / s_rms), clipped)


def crossfade_concat(a: np.ndarray, b: np.ndarray, overlap: int) -> np.ndarray:
    """``a`` then ``b`` with an equal-power crossfade of ``overlap`` samples (keeps the level of uncorrelated noise)."""
    overlap = min(overlap, len(a), len(b))
    if overlap <= 0:
        return np.concatenate([a, b])
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap)
    mid = a[-overlap:] * ramp[::-1] + b[:overlap] * ramp
    return np.concatenate([a[:-overlap], mid.astype(a.dtype), b[overlap:]])


def fit_noise(noise: np.ndarray, length: int, rng: np.random.Generator, crossfade: int = 800) -> np.ndarray:
    """A ``length``-sample piece of ``noise``: a random segment, or a crossfaded loop from a random offset."""
    if len(noise) >= length:
        start = int(rng.integers(0, len(noise) - length + 1))
        return noise[start : start + length]
    overlap = min(crossfade, len(noise) // 4)
    offset = int(rng.integers(0, len(noise)))
    out = noise
    while len(out) < offset + length:
        out = crossfade_concat(out, noise, overlap)
    return out[offset : offset + length]


def random_segment(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample segment of ``x`` (all of ``x`` when it is not longer)."""
    if len(x) <= length:
        return x
    start = int(rng.integers(0, len(x) - length + 1))
    return x[start : start + length]
