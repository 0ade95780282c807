"""Mel-gain "vocoder" (no weights): the enhanced mel becomes a time-frequency gain on the noisy STFT.

gain[t, m] = clamp(exp(enhanced_log_mel - noisy_log_mel), min_gain, max_gain) per frame t and
mel band m, where the noisy log-mel is computed here from ``noisy`` exactly as the dumped
features are. Band gains map to the linear-frequency bins through the filterbank transposed
and normalised per bin (a bin's gain is the weighted mean of the gains of the bands that
cover it; a bin no band covers takes the gain of the band with the nearest centre). The gain
multiplies the noisy STFT (same framing as flowse.features.mel) and the inverse STFT keeps the
noisy phase. With the noisy mel as "enhanced" mel the gain is 1 and the output is the noisy
input (the first ``T * hop`` samples).

Limits: the phase, and every fine structure inside a mel band, are the noisy signal's; it
can attenuate noise but cannot restore speech the noise masked (a gain cannot create what
is not in the noisy STFT), and in low-SNR bands the residual noise follows the speech
envelope. It is not the paper's vocoder (the paper uses a neural HiFi-GAN): every result
names the vocoder that produced it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import Vocoder
from flowse.models.vocoders.config import MelGainConfig
from flowse.models.vocoders.stft import MelFraming


def band_to_bin_matrix(fbank: torch.Tensor) -> torch.Tensor:
    """``fbank [n_freq, n_mels]`` -> ``[n_mels, n_freq]`` whose columns sum to 1 (see module doc)."""
    w = fbank.clamp(min=0).double()
    total = w.sum(dim=1, keepdim=True)
    out = torch.where(total > 0, w / total.clamp(min=1e-30), torch.zeros_like(w))
    empty = (total[:, 0] <= 0).nonzero().flatten()
    if len(empty):
        bins = torch.arange(w.shape[0], dtype=torch.float64)
        centres = (w * bins[:, None]).sum(0) / w.sum(0).clamp(min=1e-30)
        nearest = (bins[empty, None] - centres[None, :]).abs().argmin(dim=1)
        out[empty, nearest] = 1.0
    return out.T.float()


class MelGainVocoder(Vocoder):
    name = "melgain"
    needs_noisy = True

    def __init__(self, mel_cfg: MelConfig, cfg: MelGainConfig | None = None):
        super().__init__(mel_cfg)
        self.cfg = cfg or MelGainConfig()
        self.framing = MelFraming(mel_cfg)
        self.register_buffer("band_to_bin", band_to_bin_matrix(self.framing.fbank), persistent=False)

    def mel_gain(self, mel: torch.Tensor, noisy_spec: torch.Tensor) -> torch.Tensor:
        """Per-band gain ``[B, T, n_mels]`` of the enhanced log-mel against the noisy spectrum."""
        noisy_mel = self.framing.log_mel(noisy_spec)
        log_gain = mel - noisy_mel[:, : mel.shape[1]]
        k = self.cfg.smooth_frames
        if k > 1:
            log_gain = F.avg_pool1d(log_gain.transpose(1, 2), k, 1, k // 2, count_include_pad=False).transpose(1, 2)
        return torch.exp(log_gain).clamp(self.cfg.min_gain, self.cfg.max_gain)

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
        assert noisy is not None
        t = mel.shape[1]
        spec = self.framing.stft(noisy)[..., :t]
        gain = self.mel_gain(mel, spec) @ self.band_to_bin  # [B, T, n_freq]
        return self.framing.istft(spec * gain.transpose(1, 2))
