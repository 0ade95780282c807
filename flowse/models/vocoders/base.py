"""The vocoder interface every consumer (stage 3 ceiling, enhancement, GRPO rewards) calls.

``decode(mel, lengths, noisy)``:
- ``mel``: ``[B, T, n_mels]`` natural-log mel in the flowse.features.mel convention;
- ``lengths``: ``[B]`` valid frames per item (``None``: all ``T``);
- ``noisy``: ``[B, n]`` noisy waveform, required when ``needs_noisy`` (mel-gain), ignored otherwise;
- returns float32 ``[B, T * hop]``; samples at or beyond ``lengths * hop`` are zero.
Frames beyond ``lengths`` are replaced by silence (``log(log_floor)``) before synthesis, so
padding never leaks energy into the valid part through overlap-add or convolutions.
"""
from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from flowse.features.mel import MelConfig

WEIGHTS_FILE = "vocoder.pt"  # trained weights in a vocoder dir (hifigan)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B]`` lengths -> bool ``[B, frames]``, True on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class Vocoder(torch.nn.Module):
    """Base class: subclasses implement ``synthesize(mel, noisy) -> [B, >= T * hop]``."""

    name: str = "vocoder"
    needs_noisy: bool = False

    def __init__(self, mel_cfg: MelConfig):
        super().__init__()
        self.mel_cfg = mel_cfg

    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel_cfg.hop_length

    @property
    def device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    @classmethod
    def from_config(cls, mel_cfg: MelConfig, cfg, base_dir: str = ".", device: str | torch.device = "cpu") -> "Vocoder":
        """The vocoder of its config section on ``device`` (trainable ones with initial weights).

        ``base_dir``: where relative file names of the section resolve (the vocoder dir).
        """
        return cls(mel_cfg, cfg).to(device).eval()

    @classmethod
    def load(cls, vocoder_dir: str, mel_cfg: MelConfig, cfg, device: str | torch.device = "cpu") -> "Vocoder":
        """The prepared vocoder of ``vocoder_dir``: built on CPU, its files loaded (``load_files``), then moved."""
        voc = cls.from_config(mel_cfg, cfg, vocoder_dir, "cpu")
        voc.load_files(vocoder_dir)
        return voc.to(device).eval()

    def load_files(self, vocoder_dir: str) -> None:
        """Load what a prepared vocoder dir holds besides vocoder.yaml (e.g. trained weights); nothing here."""

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def decode(
        self, mel: torch.Tensor, lengths: torch.Tensor | None = None, noisy: torch.Tensor | None = None
    ) -> torch.Tensor:
        if mel.dim() != 3 or mel.shape[-1] != self.mel_cfg.n_mels:
            raise ValueError(f"{self.name}: mel must be [B, T, {self.mel_cfg.n_mels}], got {tuple(mel.shape)}")
        b, t, _ = mel.shape
        dev = self.device
        mel = mel.to(dev, torch.float32)
        lengths = torch.full((b,), t, device=dev) if lengths is None else lengths.to(dev)
        if lengths.shape != (b,) or int(lengths.max()) > t or int(lengths.min()) < 0:
            raise ValueError(f"{self.name}: lengths must be [B] in [0, {t}], got {lengths.tolist()}")
        if t == 0:
            return torch.zeros(b, 0, device=dev)
        mask = frame_mask(lengths, t)
        mel = mel.masked_fill(~mask[..., None], math.log(self.mel_cfg.log_floor))
        n = t * self.hop_length
        if self.needs_noisy:
            if noisy is None:
                raise ValueError(f"{self.name}: this vocoder needs the noisy waveform (noisy=None given)")
            if noisy.dim() != 2 or noisy.shape[0] != b:
                raise ValueError(f"{self.name}: noisy must be [B, n] with B={b}, got {tuple(noisy.shape)}")
            noisy = noisy.to(dev, torch.float32)
            if noisy.shape[1] < n:
                noisy = torch.nn.functional.pad(noisy, (0, n - noisy.shape[1]))
        wav = self.synthesize(mel, noisy if self.needs_noisy else None).float()
        if wav.shape[-1] < n:
            wav = torch.nn.functional.pad(wav, (0, n - wav.shape[-1]))
        wav = wav[:, :n]
        sample_mask = torch.arange(n, device=dev)[None, :] < (lengths * self.hop_length)[:, None]
        return wav * sample_mask


class WeightNormFolding:
    """Mixin of generators trained with weight norm (parametrizations) whose first conv is ``conv_pre``."""

    def remove_weight_norm(self) -> None:
        """Fold the weight-norm parametrizations into plain weights (same output, faster inference, ONNX export)."""
        for m in self.modules():
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)

    @property
    def has_weight_norm(self) -> bool:
        return parametrize.is_parametrized(self.conv_pre, "weight")
