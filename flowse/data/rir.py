"""Room impulse responses: synthetic shoebox rooms, reverberation and its training targets.

Synthetic RIRs are hybrid: pyroomacoustics' image-source method gives the direct
path and early reflections up to ``max_order`` (full-order ISM for RT60 1.3 s
takes seconds to minutes per room), and an exponentially decaying Gaussian tail
with the requested RT60 continues it from ``tail_start_ms`` after the direct path,
level-matched to the ISM response just before. The Schroeder RT60 of the result
matches the requested value (tested); pure order-limited ISM would decay far too fast.

Reverberant targets: ``early`` keeps the RIR up to ``early_ms`` (50 ms) after the
direct path; ``dry`` keeps only the direct-path peak. Both stay time-aligned with
the reverberant speech (they include the propagation delay).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flowse.features.audio import SAMPLE_RATE
from flowse.utils.config import check


@dataclass
class RirSynthConfig:
    rt60_range: tuple[float, float] = (0.3, 1.3)
    room_min: tuple[float, float, float] = (3.0, 3.0, 2.5)  # metres (x, y, z)
    room_max: tuple[float, float, float] = (10.0, 8.0, 4.0)
    wall_margin: float = 0.5  # source and microphone stay this far from every wall (m)
    distance_range: tuple[float, float] = (0.5, 3.0)  # source-microphone distance (m)
    max_order: int = 12  # image-source order; the statistical tail does the rest
    tail_start_ms: float = 50.0
    count: dict[str, int] = field(default_factory=lambda: {"train": 40, "valid": 8, "test": 16})

    def __post_init__(self):
        lo, hi = self.rt60_range
        check(0.05 <= lo <= hi <= 3.0, f"rir.rt60_range must satisfy 0.05 <= lo <= hi <= 3, got {self.rt60_range}")
        check(all(0 < a <= b for a, b in zip(self.room_min, self.room_max)), "rir: need 0 < room_min <= room_max")
        check(min(self.room_min) > 2 * self.wall_margin, "rir.room_min must exceed twice wall_margin")
        check(0 < self.distance_range[0] <= self.distance_range[1], "rir.distance_range must be positive, lo <= hi")
        check(self.max_order >= 1 and self.tail_start_ms > 0, "rir: max_order >= 1 and tail_start_ms > 0")
        for k, v in self.count.items():
            check(k in ("train", "valid", "test") and v >= 0, f"rir.count: keys train/valid/test, counts >= 0; got {k}: {v}")


def _place(room: np.ndarray, margin: float, dist: tuple[float, float], rng: np.random.Generator):
    lo, hi = np.full(3, margin), room - margin
    for _ in range(200):
        src, mic = rng.uniform(lo, hi), rng.uniform(lo, hi)
        d = float(np.linalg.norm(src - mic))
        if dist[0] <= d <= dist[1]:
            return src, mic, d
    mic = rng.uniform(lo, hi)  # room too small for the range: nearest feasible distance
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    for d in np.linspace(dist[1], 0.1, 60):
        src = mic + direction * d
        if np.all(src >= lo) and np.all(src <= hi):
            return src, mic, float(d)
    return (lo + hi) / 2, (lo + hi) / 2 + np.array([0.1, 0, 0]), 0.1


def synth_rir(cfg: RirSynthConfig, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> tuple[np.ndarray, dict]:
    """One synthetic RIR (float32, direct-path peak normalised to 1) and its facts (rt60, room, distance)."""
    import pyroomacoustics as pra

    rt60 = float(rng.uniform(*cfg.rt60_range))
    room = rng.uniform(cfg.room_min, cfg.room_max)
    src, mic, dist = _place(room, cfg.wall_margin, cfg.distance_range, rng)
    try:
        absorption, order = pra.inverse_sabine(rt60, room)
    except ValueError:  # room too large for so short an RT60: the tail still imposes it
        absorption, order = 0.99, cfg.max_order
    shoebox = pra.ShoeBox(room, fs=sr, materials=pra.Material(float(absorption)), max_order=min(order, cfg.max_order))
    shoebox.add_source(src)
    shoebox.add_microphone(mic)
    shoebox.compute_rir()
    ism = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    rir = add_tail(ism, rt60, rng, int(cfg.tail_start_ms * sr / 1000), sr)
    rir /= np.max(np.abs(rir))
    info = {"rt60": round(rt60, 4), "room": [round(float(v), 3) for v in room], "distance": round(dist, 3)}
    return rir.astype(np.float32), info


def add_tail(ism: np.ndarray, rt60: float, rng: np.random.Generator, start: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Replace ``ism`` after ``start`` samples past its direct path by a Gaussian tail decaying 60 dB in ``rt60``."""
    direct = int(np.argmax(np.abs(ism)))
    onset = direct + start
    fade = max(1, int(0.02 * sr))
    length = max(len(ism), onset + fade + 1, direct + int(1.2 * rt60 * sr))
    out = np.zeros(length)
    out[: len(ism)] = ism
    ref = out[max(direct + 1, onset - fade) : onset]
    level = float(np.sqrt(np.mean(ref**2))) if ref.size else 1e-3 * np.max(np.abs(ism))
    t = np.arange(length - onset) / sr
    tail = rng.standard_normal(length - onset) * level * np.exp(-3.0 * np.log(10.0) * t / rt60)
    ramp = np.linspace(0.0, 1.0, fade)
    out[onset : onset + fade] = out[onset : onset + fade] * (1 - ramp) + tail[:fade] * ramp
    out[onset + fade :] = tail[fade:]
    return out


def schroeder_rt60(rir: np.ndarray, sr: int = SAMPLE_RATE, decay_db: float = 20.0) -> float | None:
    """RT60 from the Schroeder backward integral, extrapolated from the -5 to -(5+decay_db) dB range (T20)."""
    e = np.cumsum(np.square(rir[::-1], dtype=np.float64))[::-1]
    if e[0] <= 0:
        return None
    edc = 10 * np.log10(np.maximum(e / e[0], 1e-30))
    start = np.argmax(edc <= -5.0)
    end = np.argmax(edc <= -5.0 - decay_db)
    if edc[-1] > -5.0 - decay_db or end <= start:
        return None
    t = np.arange(start, end) / sr
    slope = np.polyfit(t, edc[start:end], 1)[0]
    return float(-60.0 / slope) if slope < 0 else None


def target_rir(rir: np.ndarray, kind: str, early_ms: float = 50.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The part of ``rir`` that makes the reverberant training target: ``early`` or ``dry`` (direct path)."""
    direct = int(np.argmax(np.abs(rir)))
    if kind == "dry":
        out = np.zeros(direct + 1, dtype=rir.dtype)
        out[direct] = rir[direct]
        return out
    if kind == "early":
        return rir[: direct + int(early_ms * sr / 1000) + 1]
    raise ValueError(f"unknown reverberant target {kind!r}; choose 'early' or 'dry'")


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``, cut to ``len(x)`` (float64; FFT convolution)."""
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(np.asarray(x, np.float64), size) * np.fft.rfft(np.asarray(rir, np.float64), size), size)
    return y[: len(x)]


def load_rir(path: str, sr: int = SAMPLE_RATE, name: str = "") -> np.ndarray:
    """Read a RIR file: first channel (averaging microphones would smear the direct path), resampled, validated."""
    import soundfile as sf

    from flowse.features.audio import AudioError, resample, validate

    try:
        x, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise AudioError(f"{name or path}: cannot read audio ({e})") from None
    return validate(resample(x[:, 0], file_sr, sr), name or path)
