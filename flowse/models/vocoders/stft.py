"""STFT / inverse STFT with exactly the framing of ``flowse.features.mel.LogMel``.

Framing (HiFi-GAN convention): reflect-pad ``(n_fft - hop) / 2`` on both sides, ``center=False``,
Hann window of ``win_length`` centred in ``n_fft``. ``n`` samples give ``T = n // hop`` frames,
and the inverse of ``T`` frames gives ``T * hop`` samples aligned with the input (weighted
overlap-add divided by the squared-window envelope, so ``istft(stft(x)) == x[:T*hop]``).
Spectra are complex ``[B, n_freq, T]``. Signals too short to reflect-pad (``n <= pad``, where
``LogMel`` itself fails) are zero-padded instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio

from flowse.features.mel import MelConfig


class MelFraming(torch.nn.Module):
    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        self.pad = (cfg.n_fft - cfg.hop_length) // 2
        self.n_freq = cfg.n_fft // 2 + 1
        win = torch.hann_window(cfg.win_length)
        left = (cfg.n_fft - cfg.win_length) // 2
        full = F.pad(win, (left, cfg.n_fft - cfg.win_length - left))
        self.register_buffer("window", win, persistent=False)
        self.register_buffer("window_full", full, persistent=False)
        fb = torchaudio.functional.melscale_fbanks(
            self.n_freq, cfg.fmin, cfg.fmax, cfg.n_mels, cfg.sample_rate, norm="slaney", mel_scale="slaney"
        )
        self.register_buffer("fbank", fb, persistent=False)  # [n_freq, n_mels], as LogMel

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, n]`` -> complex ``[B, n_freq, n // hop]``."""
        c = self.cfg
        mode = "reflect" if wav.shape[-1] > self.pad else "constant"  # reflect needs n > pad (LogMel too)
        x = F.pad(wav.float().unsqueeze(1), (self.pad, self.pad), mode=mode).squeeze(1)
        spec = torch.stft(x, c.n_fft, c.hop_length, c.win_length, self.window, center=False, return_complex=True)
        return spec[..., : wav.shape[-1] // c.hop_length]

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex ``[B, n_freq, T]`` -> ``wav [B, T * hop]`` (weighted overlap-add)."""
        c = self.cfg
        b, _, t = spec.shape
        frames = torch.fft.irfft(spec.transpose(1, 2).contiguous(), n=c.n_fft, dim=-1) * self.window_full
        frames = frames.transpose(1, 2)  # [B, n_fft, T]
        total = (t - 1) * c.hop_length + c.n_fft
        fold = dict(output_size=(1, total), kernel_size=(1, c.n_fft), stride=(1, c.hop_length))
        y = F.fold(frames, **fold).reshape(b, total)
        env = F.fold((self.window_full ** 2)[None, :, None].expand(1, c.n_fft, t), **fold).reshape(total)
        seg = slice(self.pad, self.pad + t * c.hop_length)
        return y[:, seg] / env[seg].clamp(min=1e-8)

    def mel_magnitude(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex ``[B, n_freq, T]`` -> linear mel ``[B, T, n_mels]`` (LogMel before the log)."""
        return spec.abs().transpose(1, 2) @ self.fbank

    def log_mel(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex ``[B, n_freq, T]`` -> log-mel ``[B, T, n_mels]`` equal to ``LogMel`` of the signal."""
        return torch.log(torch.clamp(self.mel_magnitude(spec), min=self.cfg.log_floor))
