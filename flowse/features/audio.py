"""Audio reading with the checks every stage needs.

Audio inside the toolkit is float32 mono. ``SAMPLE_RATE`` (16 kHz) is the default rate of
every stage and the rate of scoring; a stage that works at another rate (the rate of its
feature config, ``MelConfig.sample_rate``, or the simulation's ``sample_rate``) passes it.
``read_audio`` downmixes multi-channel files (mean over channels) and resamples
other rates; it raises ``AudioError`` (naming the file) for unreadable, empty,
non-finite or all-zero audio so that callers can skip with one warning line.
"""
from __future__ import annotations

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and the reason."""


def resample(x: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited polyphase resampling (scipy), float32 out."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def validate(x: np.ndarray, name: str, min_seconds: float = 0.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Raise ``AudioError`` for empty, too short, non-finite or all-zero audio."""
    if x.size == 0:
        raise AudioError(f"{name}: empty audio")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: contains NaN or Inf samples")
    if not np.any(x):
        raise AudioError(f"{name}: all samples are zero")
    if x.shape[-1] < min_seconds * sr:
        raise AudioError(f"{name}: too short ({x.shape[-1] / sr:.2f} s < {min_seconds} s)")
    return x


def read_audio(path: str, sr: int = SAMPLE_RATE, min_seconds: float = 0.0, check: bool = True) -> np.ndarray:
    """Read an audio file as float32 mono at ``sr``; see the module doc for the checks."""
    try:
        x, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise AudioError(f"{path}: cannot read audio ({e})") from None
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    x = resample(x, file_sr, sr)
    return validate(x, path, min_seconds, sr) if check else x


def write_wav(path: str, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM wav atomically (values clipped to [-1, 1])."""
    from flowse.utils.fileio import atomic_open

    with atomic_open(path, "wb") as f:
        sf.write(f, np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), sr, format="WAV", subtype="PCM_16")


def rms_db(x: np.ndarray, eps: float = 1e-12) -> float:
    """RMS level in dBFS."""
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + eps))
