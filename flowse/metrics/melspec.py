"""librosa-compatible mel spectrograms in torch, so that no metric needs librosa at run time.

The reference implementations of DNSMOS P.808 (``speechmos``/``dnsmos_local.py``)
and of Resemblyzer compute their model inputs with
``librosa.feature.melspectrogram``: a centred STFT (zero padding of ``n_fft // 2``
on both sides, librosa >= 0.10's ``pad_mode="constant"``), a periodic Hann window
of ``n_fft`` samples, power 2, and Slaney-normalised filters on the Slaney mel
scale whose FFT bin frequencies are ``rfftfreq(n_fft) * sr`` (this matters for odd
``n_fft`` such as DNSMOS's 321, where torchaudio's ``linspace`` bins differ).
"""
from __future__ import annotations

import numpy as np
import torch

_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (linear below 1 kHz, logarithmic above)."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney filterbank ``[n_mels, n_fft // 2 + 1]`` float32, equal to ``librosa.filters.mel`` defaults."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class PowerMelSpectrogram(torch.nn.Module):
    """``wav [B, n]`` -> power mel ``[B, 1 + n // hop, n_mels]`` as ``librosa.feature.melspectrogram``."""

    def __init__(self, sr: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float32), persistent=False)
        self.register_buffer("fbank", torch.from_numpy(mel_filters(sr, n_fft, n_mels)).T.contiguous(), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wav.float(), self.n_fft, self.hop_length, self.n_fft, self.window,
            center=True, pad_mode="constant", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, n_freq, frames]
        return power.transpose(1, 2) @ self.fbank
