"""Synthetic test signals shared by the metric tests (no corpus needed)."""
import numpy as np


def speechlike(sec: float, f0: float = 140.0, seed: int = 0, noise: float = 0.01, gain: float = 0.08,
               harmonics: int = 11, sr: int = 16000) -> np.ndarray:
    """Harmonic voice with syllable-rate amplitude modulation and pauses, plus ``noise`` x white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sec * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 2.7 * t))) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
    env = np.clip(np.sin(2 * np.pi * 3.1 * t + seed), 0, None) ** 0.5
    return (gain * voice * env + noise * rng.standard_normal(t.size)).astype(np.float32)
