"""Griffin-Lim vocoder (no weights): inverse mel, then fast Griffin-Lim phase retrieval.

Inverse mel: the minimum-norm least-squares magnitude ``mel @ pinv(fbank)`` clamped at 0,
optionally refined by multiplicative NNLS updates (Lee & Seung) that keep it non-negative.
Phase: fast Griffin-Lim (Perraudin et al. 2013; torchaudio's momentum form, 0.99 -> 0.99/1.99)
with the STFT framing of flowse.features.mel. Batched; deterministic for a given seed.
Quality is limited (phasiness, buzzy voiced speech): it is the always-available fallback.
"""
from __future__ import annotations

import torch

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import Vocoder
from flowse.models.vocoders.config import GriffinLimConfig
from flowse.models.vocoders.stft import MelFraming


class GriffinLimVocoder(Vocoder):
    name = "griffinlim"

    def __init__(self, mel_cfg: MelConfig, cfg: GriffinLimConfig | None = None):
        super().__init__(mel_cfg)
        self.cfg = cfg or GriffinLimConfig()
        self.framing = MelFraming(mel_cfg)
        self.register_buffer("fbank_pinv", torch.linalg.pinv(self.framing.fbank.double()).float(), persistent=False)

    def inverse_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, T, n_mels]`` -> linear magnitude ``[B, n_freq, T]`` (>= 0)."""
        target = torch.exp(mel)
        mag = torch.clamp(target @ self.fbank_pinv, min=0.0)
        if self.cfg.nnls_iter:
            fb = self.framing.fbank
            mag = mag + 1e-8
            num = target @ fb.T
            for _ in range(self.cfg.nnls_iter):
                mag = mag * num / ((mag @ fb) @ fb.T).clamp(min=1e-12)
        return mag.transpose(1, 2) ** self.cfg.power

    def phase_retrieval(self, mag: torch.Tensor) -> torch.Tensor:
        """Magnitude ``[B, n_freq, T]`` -> waveform ``[B, T * hop]``."""
        c = self.cfg
        if c.rand_init:
            g = torch.Generator(device="cpu").manual_seed(c.seed)
            phase = torch.rand(mag.shape, generator=g).to(mag.device) * (2 * torch.pi)
            angles = torch.polar(torch.ones_like(mag), phase)
        else:
            angles = torch.ones_like(mag, dtype=torch.complex64)
        momentum = c.momentum / (1.0 + c.momentum)
        tprev = torch.zeros_like(angles)
        for _ in range(c.n_iter):
            rebuilt = self.framing.stft(self.framing.istft(mag * angles))
            angles = rebuilt - momentum * tprev
            angles = angles / (angles.abs() + 1e-16)
            tprev = rebuilt
        return self.framing.istft(mag * angles)

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
        return self.phase_retrieval(self.inverse_mel(mel))
