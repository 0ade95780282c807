"""Log-mel features, the one definition shared by dumping, vocoders and GRPO rewards.

HiFi-GAN convention, so standard generator checkpoints with the same numbers
load: magnitude STFT (power 1) of the waveform reflect-padded by
``(n_fft - hop) / 2`` on both sides with ``center=False``, Slaney mel filters,
natural log of ``max(mel, log_floor)``. Any sample rate works (the numbers come with
the config: 16 kHz n_fft 1024 / hop 256 by default, CosyVoice2's 24 kHz n_fft 1920 /
hop 480); the waveform must be at ``sample_rate``. A waveform of ``n`` samples gives
``n // hop_length`` frames (for ``n >= n_fft``... reflect padding handles shorter
inputs down to ``hop_length`` samples). Output layout ``[batch, frames, n_mels]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torchaudio

from flowse.utils.config import check, load_config


@dataclass
class MelConfig:
    """The log-mel front end; ``sample_rate`` is the rate of the audio it reads and of the
    vocoder output, carried by every stage (dump, vocoders, enhancement, GRPO prompts)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5
    # Floor added to re^2 + im^2 before the square root: 0 is plain |STFT| (HiFi-GAN);
    # 1e-9 is CosyVoice2's front end (Matcha-TTS mel_spectrogram), whose HiFT expects it.
    magnitude_eps: float = 0.0

    def __post_init__(self):
        check(self.sample_rate > 0, f"mel: sample_rate must be positive, got {self.sample_rate}")
        check(0 < self.hop_length <= self.win_length <= self.n_fft, "mel: need 0 < hop_length <= win_length <= n_fft")
        check(0 <= self.fmin < self.fmax <= self.sample_rate / 2, "mel: need 0 <= fmin < fmax <= sample_rate/2")
        check(self.n_mels > 0 and self.log_floor > 0, "mel: n_mels and log_floor must be positive")

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length

    @property
    def hop_seconds(self) -> float:
        """Seconds of audio per frame (``hop_length / sample_rate``)."""
        return self.hop_length / self.sample_rate


def read_dump_mel(dump_dir: str) -> MelConfig:
    """The mel config stage 2 used (``<dump_dir>/mel.yaml``: MelConfig keys, top level or under ``mel:``)."""
    import yaml

    path = os.path.join(dump_dir, "mel.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run stage 2 (mel dumping) first")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if isinstance(data.get("mel"), dict):
        data = data["mel"]
    keys = MelConfig.__dataclass_fields__
    return load_config(MelConfig, overrides={k: v for k, v in data.items() if k in keys})


class LogMel(torch.nn.Module):
    """``wav [B, n]`` (float, at ``cfg.sample_rate``) -> log-mel ``[B, n // hop, n_mels]``."""

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
        if c.magnitude_eps == 0.0:
            return spec.abs().transpose(1, 2)
        return torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + c.magnitude_eps).transpose(1, 2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        squeeze = wav.dim() == 1
        if squeeze:
            wav = wav.unsqueeze(0)
        mel = self.magnitude(wav) @ self.fbank
        out = torch.log(torch.clamp(mel, min=self.cfg.log_floor))
        out = out[:, : wav.shape[-1] // self.cfg.hop_length]
        return out[0] if squeeze else out
