"""Synthetic noise families for the mini corpus (no noise corpus can be downloaded).

Every generator returns float64 ``[n]`` with unit RMS at 16 kHz; ``make_noise``
draws the family's parameters from ``rng`` and normalises the result to
``peak`` so that it can be stored as 16-bit wav. Families:
white, pink (1/f), brown (1/f^2, high-passed at 20 Hz), babble (3-7 overlapping
synthetic talkers), hum (mains/engine fundamental with decaying harmonics and
drift), band (band-limited noise), modulated (amplitude-modulated coloured
noise, traffic/wind-like), clicks (sparse decaying bursts on a quiet floor).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from flowse.features.audio import SAMPLE_RATE
from flowse.data.mixing import crossfade_concat

FAMILIES = ("white", "pink", "brown", "babble", "hum", "band", "modulated", "clicks")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def colored(n: int, exponent: float, rng: np.random.Generator, sr: int = SAMPLE_RATE, highpass: float = 20.0) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    shape = np.ones_like(f)
    shape[1:] = f[1:] ** (-exponent / 2.0)
    shape[f < highpass] = 0.0
    return _unit(np.fft.irfft(spec * shape, n))


def hum(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Harmonic hum: fundamental 50/60 Hz (mains) or 30-140 Hz (engines), slow pitch drift, pink floor."""
    f0 = float(rng.choice([50.0, 60.0])) if rng.random() < 0.5 else float(rng.uniform(30, 140))
    t = np.arange(n) / sr
    drift = 1.0 + 0.01 * rng.uniform(0, 1) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0 * drift) / sr
    decay = rng.uniform(0.5, 1.5)
    x = np.zeros(n)
    for k in range(1, int(min(40, (sr / 2 - 100) // f0)) + 1):
        x += k**-decay * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return _unit(_unit(x) + 10 ** (-rng.uniform(20, 35) / 20) * colored(n, 1.0, rng, sr))


def band(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """White noise through a band-pass 1-3 octaves wide, low edge 80-3000 Hz."""
    from scipy.signal import butter, sosfilt

    lo = float(np.exp(rng.uniform(np.log(80), np.log(3000))))
    hi = min(lo * 2 ** rng.uniform(1, 3), 0.45 * sr)
    sos = butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return _unit(sosfilt(sos, rng.standard_normal(n + 2000))[2000:])


def modulated(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Coloured noise with a slow amplitude envelope (sinusoidal 0.2-6 Hz or a smoothed random walk)."""
    base = colored(n, rng.uniform(0.0, 2.0), rng, sr) if rng.random() < 0.6 else band(n, rng, sr)
    t = np.arange(n) / sr
    depth = rng.uniform(0.4, 0.95)
    if rng.random() < 0.5:
        env = 1 + depth * np.sin(2 * np.pi * rng.uniform(0.2, 6.0) * t + rng.uniform(0, 2 * np.pi))
    else:
        knots = rng.standard_normal(int(n / sr * rng.uniform(1, 4)) + 2)
        env = np.interp(t, np.linspace(0, t[-1] if n > 1 else 1, len(knots)), knots)
        env = 1 + depth * np.tanh(env)
    return _unit(base * env)


def clicks(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Keyboard/tapping-like clicks: Poisson events (2-12 /s) of 1-10 ms decaying bursts over a -40 dB floor."""
    x = 10 ** (-rng.uniform(35, 45) / 20) * rng.standard_normal(n)
    rate = rng.uniform(2, 12)
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * n / sr * 2) + 4))
    for start in (times * sr).astype(int):
        if start >= n:
            break
        length = int(rng.uniform(0.001, 0.01) * sr)
        seg = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.2 * length)) * rng.uniform(0.2, 1.0)
        end = min(n, start + length)
        x[start:end] += seg[: end - start]
    return _unit(x)


def babble(n: int, talkers: Sequence[np.ndarray], rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """3-7 simultaneous talkers, each a crossfaded chain of random utterances from ``talkers``."""
    if not talkers:
        raise ValueError("babble noise needs synthetic babble speech, none was given")
    out = np.zeros(n)
    for _ in range(int(rng.integers(3, 8))):
        chain = np.zeros(int(rng.integers(0, sr // 2)))
        while len(chain) < n:
            utt = np.asarray(talkers[int(rng.integers(len(talkers)))], dtype=np.float64)
            chain = crossfade_concat(chain, _unit(utt), int(0.01 * sr)) if len(chain) else _unit(utt)
        out += chain[:n] * 10 ** (rng.uniform(-6, 0) / 20)
    return _unit(out)


def make_noise(family: str, n: int, rng: np.random.Generator, talkers: Sequence[np.ndarray] = (), peak: float = 0.9) -> np.ndarray:
    """One noise signal of ``family`` with ``n`` samples, peak-normalised to ``peak`` (float32)."""
    if family == "white":
        x = rng.standard_normal(n)
    elif family == "pink":
        x = colored(n, 1.0, rng)
    elif family == "brown":
        x = colored(n, 2.0, rng)
    elif family == "babble":
        x = babble(n, talkers, rng)
    elif family == "hum":
        x = hum(n, rng)
    elif family == "band":
        x = band(n, rng)
    elif family == "modulated":
        x = modulated(n, rng)
    elif family == "clicks":
        x = clicks(n, rng)
    else:
        raise ValueError(f"unknown noise family {family!r}; choose one of {list(FAMILIES)}")
    return (x * (peak / np.max(np.abs(x)))).astype(np.float32)
