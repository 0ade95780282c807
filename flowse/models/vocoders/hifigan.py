"""HiFi-GAN (Kong et al. 2020): generator, MPD + MSD discriminators and losses, as jik876/hifi-gan.

Layer names follow jik876's ``models.py`` so that its generator checkpoints
(``{"generator": state_dict}`` with weight-norm ``weight_g`` / ``weight_v`` names) load.
Weight norm is a parametrization here (``parametrizations.weight.original0/1``); the
jik876 checkpoint and config.json IO is ``flowse.models.vocoders.hifigan_io``.
The generator input is the mel ``[B, n_mels, T]`` (channels first), its output
``[B, 1, T * prod(upsample_rates)]`` in [-1, 1].
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import WEIGHTS_FILE, Vocoder, WeightNormFolding
from flowse.models.vocoders.config import HiFiGANConfig
from flowse.models.vocoders.hifigan_io import find_pretrained, load_generator_state, read_standard_config

LRELU_SLOPE = 0.1


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def init_weights(m: nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        m.weight.data.normal_(mean, std)


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1, padding=get_padding(kernel_size)))
            for _ in dilation
        )
        self.convs1.apply(init_weights)
        self.convs2.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3)):
        super().__init__()
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d)))
            for d in dilation
        )
        self.convs.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class Generator(WeightNormFolding, nn.Module):
    """``mel [B, n_mels, T]`` -> ``wav [B, 1, T * prod(upsample_rates)]``."""

    def __init__(self, cfg: HiFiGANConfig, n_mels: int = 80):
        super().__init__()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        ch = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, ch, 7, 1, padding=3))
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList()
        for i in range(self.num_upsamples):
            c = ch // 2 ** (i + 1)
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(block(c, k, tuple(d)))
        self.conv_post = weight_norm(nn.Conv1d(ch // 2**self.num_upsamples, 1, 7, 1, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)

    @property
    def upsample_factor(self) -> int:
        return math.prod(self.cfg.upsample_rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)


class HiFiGANVocoder(Vocoder):
    """Inference wrapper; weight norm is removed after loading (faster, same output)."""

    name = "hifigan"

    def __init__(self, mel_cfg: MelConfig, cfg: HiFiGANConfig | None = None):
        super().__init__(mel_cfg)
        self.cfg = cfg or HiFiGANConfig()
        self.generator = Generator(self.cfg, mel_cfg.n_mels)
        if self.generator.upsample_factor != mel_cfg.hop_length:
            raise ValueError(f"hifigan: prod(upsample_rates)={self.generator.upsample_factor} must equal the mel "
                             f"hop length {mel_cfg.hop_length}")

    @classmethod
    def from_pretrained(cls, mel_cfg: MelConfig, checkpoint: str, config: str = "",
                        device: str | torch.device = "cpu") -> "HiFiGANVocoder":
        """A jik876 generator checkpoint as a vocoder, its sizes from its config.json (``hifigan_io.find_pretrained``).

        The config.json mel settings must equal ``mel_cfg`` (``ConfigError`` listing the differences);
        the state dict loads strictly.
        """
        ckpt, config = find_pretrained(checkpoint, config)
        voc = cls(mel_cfg, read_standard_config(config, mel_cfg))
        voc.load_weights(ckpt)
        return voc.to(device).eval()

    def load_files(self, vocoder_dir: str) -> None:
        weights = os.path.join(vocoder_dir, WEIGHTS_FILE)
        if not os.path.exists(weights):
            raise FileNotFoundError(f"{vocoder_dir}: hifigan vocoder without {WEIGHTS_FILE}")
        self.load_weights(weights)

    def load_weights(self, path: str) -> None:
        from flowse.utils.checkpoint import load_checkpoint

        load_generator_state(self.generator, load_checkpoint(path), path)
        if self.generator.has_weight_norm:
            self.generator.remove_weight_norm()
        self.eval()

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
        return self.generator(mel.transpose(1, 2)).squeeze(1)



def scaled_channels(n: int, width: float) -> int:
    """Channel count ``n`` scaled by ``width`` (multiples of 16, at least 16; ``width`` 1 keeps ``n``)."""
    return n if width == 1.0 else max(16, int(round(n * width / 16)) * 16)


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor,
                fmap: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The discriminators' shared tail: leaky-ReLU conv stack, post conv, every activation kept for feature matching."""
    for layer in convs:
        x = F.leaky_relu(layer(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


class DiscriminatorP(nn.Module):
    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False,
                 width: float = 1.0):
        super().__init__()
        self.period = period
        norm = spectral_norm if use_spectral_norm else weight_norm
        chans = [1] + [scaled_channels(c, width) for c in (32, 128, 512, 1024)]
        self.convs = nn.ModuleList(
            norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0)))
            for i in range(4)
        )
        self.convs.append(norm(nn.Conv2d(chans[4], chans[4], (kernel_size, 1), 1, padding=(2, 0))))
        self.conv_post = norm(nn.Conv2d(chans[4], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), "reflect")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self.convs, self.conv_post, x, fmap)


class MultiPeriodDiscriminator(nn.Module):
    """Periods 2, 3, 5, 7, 11; ``width`` scales the channels (1.0: the HiFi-GAN paper's 41.1M parameters)."""

    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11), width: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList(DiscriminatorP(p, width=width) for p in periods)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        return _run_discriminators(self.discriminators, [None] * len(self.discriminators), y, y_hat)


class DiscriminatorS(nn.Module):
    def __init__(self, use_spectral_norm: bool = False, width: float = 1.0):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        c128, c256, c512, c1024 = (scaled_channels(c, width) for c in (128, 256, 512, 1024))

        def conv(cin, cout, k, stride, groups, pad):
            return norm(nn.Conv1d(cin, cout, k, stride, groups=math.gcd(groups, math.gcd(cin, cout)), padding=pad))

        self.convs = nn.ModuleList([
            conv(1, c128, 15, 1, 1, 7),
            conv(c128, c128, 41, 2, 4, 20),
            conv(c128, c256, 41, 2, 16, 20),
            conv(c256, c512, 41, 4, 16, 20),
            conv(c512, c1024, 41, 4, 16, 20),
            conv(c1024, c1024, 41, 1, 16, 20),
            conv(c1024, c1024, 5, 1, 1, 2),
        ])
        self.conv_post = norm(nn.Conv1d(c1024, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        return _conv_stack(self.convs, self.conv_post, x, fmap)


class MultiScaleDiscriminator(nn.Module):
    """Raw, x2 and x4 average-pooled waveform; ``width`` as for the MPD (1.0: 29.6M parameters)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [DiscriminatorS(use_spectral_norm=True, width=width), DiscriminatorS(width=width),
             DiscriminatorS(width=width)]
        )
        self.meanpools = nn.ModuleList([nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        return _run_discriminators(self.discriminators, [None, *self.meanpools], y, y_hat)


def _run_discriminators(discs, pools, y, y_hat):
    """Scores and feature maps of real ``y`` and generated ``y_hat`` (``[B, 1, n]``)."""
    y_d_rs, y_d_gs, fmap_rs, fmap_gs = [], [], [], []
    for d, pool in zip(discs, pools):
        if pool is not None:
            y, y_hat = pool(y), pool(y_hat)
        y_d_r, fmap_r = d(y)
        y_d_g, fmap_g = d(y_hat)
        y_d_rs.append(y_d_r)
        fmap_rs.append(fmap_r)
        y_d_gs.append(y_d_g)
        fmap_gs.append(fmap_g)
    return y_d_rs, y_d_gs, fmap_rs, fmap_gs


# ---------------------------------------------------------------- losses (LSGAN, as the paper)


def feature_loss(fmap_r: list[list[torch.Tensor]], fmap_g: list[list[torch.Tensor]]) -> torch.Tensor:
    loss = 0.0
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(rl.detach() - gl))
    return loss * 2


def discriminator_loss(real: list[torch.Tensor], gen: list[torch.Tensor]) -> torch.Tensor:
    loss = 0.0
    for dr, dg in zip(real, gen):
        loss = loss + torch.mean((1 - dr) ** 2) + torch.mean(dg**2)
    return loss


def generator_loss(gen: list[torch.Tensor]) -> torch.Tensor:
    loss = 0.0
    for dg in gen:
        loss = loss + torch.mean((1 - dg) ** 2)
    return loss


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
