"""HiFT (CosyVoice2's vocoder): HiFi-GAN with a neural-source-filter excitation and an iSTFT head.

Mel ``[B, n_mels, T]`` -> F0 per frame (``F0Predictor``) -> sine/noise excitation at the
sample rate (``SineSource``) -> its STFT (``istft_n_fft``, ``istft_hop_length``) is
downsampled and added at every upsampling stage of a HiFi-GAN body (Snake activations)
-> ``conv_post`` gives a log-magnitude and a phase per STFT bin -> iSTFT -> waveform
``[B, T * hop]`` clamped to ``audio_limit``. ``hop = prod(upsample_rates) * istft_hop_length``
(480 at 24 kHz: 20 ms frames).

The defaults are CosyVoice2-0.5B's (20,821,295 parameters in 328 tensors, 82 weight-normed
convolutions); its released ``hift.pt`` loads with ``HiFTVocoder.load_weights`` (or
``HiFTConfig.checkpoint``). The input is CosyVoice2's mel: ``conf/paper/mel.yaml``
(24 kHz, n_fft 1920, hop 480, fmax 8000, ``magnitude_eps`` 1e-9).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import Vocoder, WeightNormFolding
from flowse.models.vocoders.hift_source import F0Predictor, SineSource
from flowse.utils.config import ConfigError, check


@dataclass
class HiFTConfig:
    """HiFT generator numbers, named after CosyVoice's ``HiFTGenerator`` arguments (defaults: CosyVoice2)."""

    # Path of the pretrained generator (CosyVoice2-0.5B ``hift.pt``); empty: random weights.
    checkpoint: str = ""
    # Seed of the excitation noise: the same seed gives the same waveform.
    seed: int = 0
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    # Sine amplitude; unvoiced noise std is nsf_alpha / 3.
    nsf_alpha: float = 0.1
    # Noise std on voiced samples.
    nsf_sigma: float = 0.003
    # F0 (Hz) above which a frame counts as voiced.
    nsf_voiced_threshold: float = 10.0
    upsample_rates: list[int] = field(default_factory=lambda: [8, 5, 3])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 11, 7])
    istft_n_fft: int = 16
    istft_hop_length: int = 4
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    source_resblock_kernel_sizes: list[int] = field(default_factory=lambda: [7, 7, 11])
    source_resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    def __post_init__(self):
        n_up = len(self.upsample_rates)
        check(n_up >= 1 and len(self.upsample_kernel_sizes) == n_up,
              "hift: upsample_rates and upsample_kernel_sizes must have the same length (>= 1)")
        check(len(self.source_resblock_kernel_sizes) == n_up == len(self.source_resblock_dilation_sizes),
              "hift: one source_resblock kernel size and dilation list per upsampling stage")
        check(len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes) >= 1,
              "hift: resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        check(self.base_channels >= 2**n_up, "hift: base_channels too small for the number of upsampling layers")
        check(self.sampling_rate != 22050,
              "hift: only CosyVoice2's 24 kHz sine source (SineGen2) is implemented, not CosyVoice 1's 22.05 kHz one")
        check(self.istft_n_fft > 0 and 0 < self.istft_hop_length <= self.istft_n_fft,
              "hift: need 0 < istft_hop_length <= istft_n_fft")

    @property
    def hop_length(self) -> int:
        """Output samples per mel frame."""
        return math.prod(self.upsample_rates) * self.istft_hop_length


class Snake(nn.Module):
    """``x + sin(alpha x)^2 / alpha``, one trainable ``alpha`` per channel, on ``[B, C, n]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class SnakeResBlock(nn.Module):
    """HiFi-GAN residual block (dilated conv, then undilated conv, per dilation) with Snake activations."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()

        def conv(d: int) -> nn.Module:
            return weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2))

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = x + c2(a2(c1(a1(x))))
        return x


class HiFTGenerator(WeightNormFolding, nn.Module):
    """``mel [B, n_mels, T]`` -> ``(wav [B, T * hop], f0 [B, T])``; parameter names as CosyVoice's ``HiFTGenerator``."""

    def __init__(self, cfg: HiFTConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        n_bins = cfg.istft_n_fft // 2 + 1
        self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_cond_channels)
        self.m_source = SineSource(cfg.sampling_rate, cfg.hop_length, cfg.nb_harmonics, cfg.nsf_alpha, cfg.nsf_sigma,
                                   cfg.nsf_voiced_threshold)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, ch, 7, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        # The source STFT (one frame per istft hop) is strided down to each stage's rate.
        strides = [math.prod(cfg.upsample_rates[i + 1:]) for i in range(len(cfg.upsample_rates))]
        self.source_downs = nn.ModuleList(
            nn.Conv1d(2 * n_bins, ch // 2 ** (i + 1), 1) if s == 1
            else nn.Conv1d(2 * n_bins, ch // 2 ** (i + 1), 2 * s, s, padding=s // 2)
            for i, s in enumerate(strides)
        )
        self.source_resblocks = nn.ModuleList(
            SnakeResBlock(ch // 2 ** (i + 1), k, d)
            for i, (k, d) in enumerate(zip(cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes))
        )
        self.resblocks = nn.ModuleList(
            SnakeResBlock(ch // 2 ** (i + 1), k, d)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = weight_norm(nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 2 * n_bins, 7, padding=3))
        self.register_buffer("stft_window", torch.hann_window(cfg.istft_n_fft, dtype=torch.float64).float(),
                             persistent=False)

    def source_stft(self, source: torch.Tensor) -> torch.Tensor:
        """Excitation ``[B, n]`` -> real and imaginary STFT parts stacked ``[B, 2 * n_bins, n / istft_hop + 1]``."""
        c = self.cfg
        spec = torch.stft(source, c.istft_n_fft, c.istft_hop_length, c.istft_n_fft, window=self.stft_window,
                          return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)

    def istft(self, out: torch.Tensor) -> torch.Tensor:
        """``conv_post`` output ``[B, 2 * n_bins, frames]`` (log-magnitude, phase) -> float32 waveform."""
        c = self.cfg
        n_bins = c.istft_n_fft // 2 + 1
        out = out.float()
        magnitude = torch.exp(out[:, :n_bins]).clamp(max=1e2)
        phase = torch.sin(out[:, n_bins:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        return torch.istft(spec, c.istft_n_fft, c.istft_hop_length, c.istft_n_fft, window=self.stft_window)

    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Mel ``[B, n_mels, T]`` + excitation ``[B, T * hop]`` -> waveform ``[B, T * hop]``."""
        c = self.cfg
        with torch.autocast(mel.device.type, enabled=False):
            source_spec = self.source_stft(source.float())
        n_kernels = len(c.resblock_kernel_sizes)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, c.lrelu_slope))
            if i == len(self.ups) - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](source_spec))
            blocks = self.resblocks[i * n_kernels:(i + 1) * n_kernels]
            x = sum(block(x) for block in blocks) / n_kernels
        x = self.conv_post(F.leaky_relu(x))
        with torch.autocast(mel.device.type, enabled=False):
            return self.istft(x).clamp(-c.audio_limit, c.audio_limit)

    def forward(self, mel: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        f0 = self.f0_predictor(mel)
        return self.decode(mel, self.m_source(f0, seed)), f0


_WN_G = ".parametrizations.weight.original0"
_WN_V = ".parametrizations.weight.original1"


def _listed(names: list[str], limit: int = 12) -> str:
    more = f" ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def canonical_hift_state(state: dict) -> dict[str, torch.Tensor]:
    """A HiFT state dict in any released layout -> this module's parametrization names.

    Accepts an optional ``generator.`` prefix (CosyVoice's GAN wrapper), old-style weight
    norm (``weight_g`` / ``weight_v``) or parametrizations, Snake ``alpha`` as ``[C]`` or ``[C, 1]``.
    """
    out = {}
    for key, value in state.items():
        if key.startswith("generator."):
            key = key[len("generator."):]
        if key.endswith(".weight_g"):
            key = key[: -len(".weight_g")] + _WN_G
        elif key.endswith(".weight_v"):
            key = key[: -len(".weight_v")] + _WN_V
        elif key.endswith(".alpha") and value.dim() == 2 and value.shape[1] == 1:
            value = value[:, 0]
        out[key] = value
    return out


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``(g, v)`` pair by the plain weight ``g * v / ||v||`` (norm over all dims but 0)."""
    out = dict(state)
    for key in [k for k in state if k.endswith(_WN_G)]:
        base = key[: -len(_WN_G)]
        g, v = out.pop(key), out.pop(base + _WN_V)
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[base + ".weight"] = v * (g / norm)
    return out


def load_hift_state(gen: HiFTGenerator, state: dict, source: str) -> None:
    """Load a HiFT state dict (see ``canonical_hift_state``) strictly into ``gen``.

    Raises ``ValueError`` naming ``source`` and listing missing, unexpected and mis-shaped tensors.
    """
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: not a HiFT state dict (expected {{name: tensor}}, as CosyVoice's hift.pt)")
    sd = canonical_hift_state(state)
    if not any(k.endswith(_WN_G) for k in sd):
        gen.remove_weight_norm()
    elif not gen.has_weight_norm:
        sd = _fold_weight_norm(sd)
    own = gen.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(own) if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shape:
        raise ValueError(
            f"{source}: checkpoint does not match the configured HiFT generator (hift section): "
            f"missing [{_listed(missing)}]; unexpected [{_listed(unexpected)}]; shape mismatch [{_listed(shape)}]"
        )
    gen.load_state_dict(sd)


class HiFTVocoder(Vocoder):
    """CosyVoice2's HiFT as a flowse vocoder: ``synthesize(mel [B, T, n_mels]) -> [B, T * hop]``.

    Deterministic: the excitation noise comes from ``cfg.seed`` (see ``SineSource``), the same
    for every item, so an item decodes to the same waveform alone or in a padded batch,
    except within the network's reach of the padding at the end of a shorter item
    (``Vocoder.decode`` fills padded frames with silence): the F0 predictor sees 5 frames
    ahead, the phase interpolation 1, the convolutions of the body about 14 (through the
    source path about 20, i.e. 0.4 s). With random weights the difference stays below 1e-4
    up to 12 frames before the item's end (test_vocoder_hift).
    """

    name = "hift"

    def __init__(self, mel_cfg: MelConfig, cfg: HiFTConfig | None = None):
        super().__init__(mel_cfg)
        self.cfg = cfg = cfg or HiFTConfig()
        wrong = [f"{name}: mel {ours} vs hift {theirs}" for name, ours, theirs in (
            ("sample rate", mel_cfg.sample_rate, cfg.sampling_rate),
            ("hop length", mel_cfg.hop_length, cfg.hop_length),
            ("n_mels", mel_cfg.n_mels, cfg.in_channels),
        ) if ours != theirs]
        if wrong:
            raise ConfigError("hift: the mel config does not fit the HiFT generator (" + "; ".join(wrong) + "); "
                              "CosyVoice2's hift.pt needs conf/paper/mel.yaml")
        self.generator = HiFTGenerator(cfg)
        if cfg.checkpoint:
            self.load_weights(cfg.checkpoint)

    @classmethod
    def from_config(cls, mel_cfg: MelConfig, cfg: HiFTConfig, base_dir: str = ".",
                    device: str | torch.device = "cpu") -> "HiFTVocoder":
        """As ``Vocoder.from_config``; a relative ``cfg.checkpoint`` resolves against ``base_dir``."""
        if cfg.checkpoint and not os.path.isabs(os.path.expanduser(cfg.checkpoint)):
            cfg = replace(cfg, checkpoint=os.path.join(base_dir, cfg.checkpoint))
        return cls(mel_cfg, cfg).to(device).eval()

    def load_weights(self, path: str) -> None:
        """Load ``path`` (a HiFT state dict, e.g. CosyVoice2-0.5B's ``hift.pt``) and fold the weight norm."""
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"hift: no checkpoint file {path} (set hift.checkpoint to CosyVoice2's hift.pt)")
        load_hift_state(self.generator, torch.load(path, weights_only=True, map_location="cpu"), path)
        self.generator.remove_weight_norm()
        self.eval()

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None = None) -> torch.Tensor:
        wav, _ = self.generator(mel.transpose(1, 2), self.cfg.seed)
        return wav
