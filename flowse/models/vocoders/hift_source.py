"""HiFT's excitation: the F0 predictor and the neural-source-filter (NSF) sine source.

Same parameter names, shapes and arithmetic as CosyVoice2's ``ConvRNNF0Predictor`` and
``SourceModuleHnNSF`` with ``SineGen2`` (its 24 kHz sine generator), so that ``hift.pt``
loads and the same noise gives the same waveform.

Conventions: mel ``[B, n_mels, T]`` (channels first, natural log), F0 ``[B, T]`` in Hz per
frame (0 or below ``voiced_threshold``: unvoiced), excitation ``[B, T * upsample]`` at the
output sample rate, ``upsample`` output samples per mel frame.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class F0Predictor(nn.Module):
    """Mel -> F0: five weight-normed 3-tap convolutions with ELU, then a linear layer; ``|.|`` keeps F0 >= 0.

    Receptive field: 11 frames (5 on each side).
    """

    def __init__(self, in_channels: int = 80, cond_channels: int = 512):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(weight_norm(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)))
            layers.append(nn.ELU())
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_mels, T]`` -> F0 ``[B, T]`` (Hz)."""
        hidden = self.condnet(mel).transpose(1, 2)
        return self.classifier(hidden).squeeze(-1).abs()


class SineSource(nn.Module):
    """F0 per frame -> one excitation channel: ``tanh(linear(harmonic sines + noise))``.

    Harmonics ``k * F0`` for ``k = 1 .. nb_harmonics + 1``; their phase is integrated at
    frame rate and linearly interpolated to the sample rate (CosyVoice2's SineGen2), so a
    voiced frame's sines have amplitude ``alpha``. Voiced samples (F0 above
    ``voiced_threshold``) get Gaussian noise of std ``sigma``; unvoiced ones no sine and
    noise of std ``alpha / 3``.

    The noise is drawn per item from a CPU ``torch.Generator`` seeded with ``seed``, time
    major (``[n, nb_harmonics + 1]``): every item gets the same stream, so an item's
    excitation does not depend on the batch, and the first ``m`` frames of a longer item
    get the noise of an ``m``-frame item. CosyVoice draws from the global generator in
    another order (and random initial phases, which its decimation to frame rate never
    reads), so equal seeds do not give CosyVoice's samples; equal noise gives its output.
    """

    def __init__(self, sample_rate: int, upsample: int, nb_harmonics: int, alpha: float, sigma: float,
                 voiced_threshold: float):
        super().__init__()
        self.sample_rate = sample_rate
        self.upsample = upsample
        self.alpha = alpha
        self.sigma = sigma
        self.voiced_threshold = voiced_threshold
        self.register_buffer("harmonics", torch.arange(1, nb_harmonics + 2, dtype=torch.float32), persistent=False)
        self.l_linear = nn.Linear(nb_harmonics + 1, 1)

    def sines(self, f0: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` Hz -> ``alpha * sin(phase)`` of every harmonic ``[B, T * upsample, nb_harmonics + 1]``."""
        cycles = (f0[:, :, None] * self.harmonics / self.sample_rate) % 1
        phase = torch.cumsum(cycles, dim=1) * 2 * math.pi
        phase = F.interpolate(phase.transpose(1, 2) * self.upsample, scale_factor=self.upsample, mode="linear")
        return torch.sin(phase.transpose(1, 2)) * self.alpha

    def noise(self, batch: int, samples: int, seed: int) -> torch.Tensor:
        """Standard normal ``[batch, samples, nb_harmonics + 1]``, the same stream for every item (see class doc)."""
        gen = torch.Generator(device="cpu")
        out = torch.empty(batch, samples, self.harmonics.numel())
        for b in range(batch):
            gen.manual_seed(seed)
            torch.randn(out.shape[1:], generator=gen, out=out[b])
        return out.to(self.harmonics.device)

    def forward(self, f0: torch.Tensor, seed: int) -> torch.Tensor:
        """F0 ``[B, T]`` (Hz) -> excitation ``[B, T * upsample]`` in (-1, 1); float32 whatever autocast says."""
        with torch.autocast(f0.device.type, enabled=False):
            f0 = f0.float()
            sines = self.sines(f0)
            voiced = (f0 > self.voiced_threshold).float().repeat_interleave(self.upsample, dim=1)[:, :, None]
            noise_std = voiced * self.sigma + (1 - voiced) * self.alpha / 3
            noise = noise_std * self.noise(f0.shape[0], sines.shape[1], seed)
            return torch.tanh(self.l_linear(sines * voiced + noise)).squeeze(-1)
