"""Log-mel features, the one definition shared by dumping, vocoders and GRPO rewards.

HiFi-GAN convention, so standard generator checkpoints with the same numbers
load: magnitude STFT (power 1) of the waveform reflect-padded by
``(n_fft - hop) / 2`` on both sides with ``center=False``, Slaney mel filters,
natural log of ``max(mel, log_floor)``. A waveform of ``n`` samples gives
``n // hop_length`` frames (for ``n >= n_fft``... reflect padding handles shorter
inputs down to ``hop_length`` samples). Output layout ``[batch, frames, n_mels]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio

from flowse.utils.config import check


@dataclass
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5

    def __post_init__(self):
        check(self.sample_rate == 16000, f"mel.sample_rate must be 16000 (the toolkit's rate), got {self.sample_rate}")
        check(0 < self.hop_length <= self.win_length <= self.n_fft, "mel: need 0 < hop_length <= win_length <= n_fft")
        check(0 <= self.fmin < self.fmax <= self.sample_rate / 2, "mel: need 0 <= fmin < fmax <= sample_rate/2")
        check(self.n_mels > 0 and self.log_floor > 0, "mel: n_mels and log_floor must be positive")

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length


class LogMel(torch.nn.Module):
    """``wav [B, n]`` (float, 16 kHz) -> log-mel ``[B, n // hop, n_mels]``."""

    def __init__(self, cfg: MelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MelConfig()
        fb = torchaudio.functional.melscale_fbanks(
            cfg.n_fft // 2 + 1, cfg.fmin, cfg.fmax, cfg.n_mels, cfg.sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("fbank", fb, persistent=False)  # [n_freq, n_mels]
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """Magnitude STFT ``[B, frames, n_freq]`` on the padded waveform (see module doc)."""
        c = self.cfg
        pad = (c.n_fft - c.hop_length) // 2
        x = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            x.float(), c.n_fft, c.hop_length, c.win_length, self.window, center=False, return_complex=True
        )
        return spec.abs().transpose(1, 2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        squeeze = wav.dim() == 1
        if squeeze:
            wav = wav.unsqueeze(0)
        mel = self.magnitude(wav) @ self.fbank
        out = torch.log(torch.clamp(mel, min=self.cfg.log_floor))
        out = out[:, : wav.shape[-1] // self.cfg.hop_length]
        return out[0] if squeeze else out
