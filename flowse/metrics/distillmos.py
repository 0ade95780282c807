"""DistillMOS (DMOS): a held-out MOS judge, equal to the ``distillmos`` package's inference, batched.

DistillMOS (Microsoft, ``distillmos`` 0.9.1, MIT) is a small network distilled from
an XLS-R speech-quality model: 16 kHz in, MOS 1-5 out. Being another model than
DNSMOS, it serves as a held-out judge of systems optimised against DNSMOS.
Only its weights file ``distillmos/weights/distill_mos_v7.pt`` is used (found inside
the installed wheel without importing it); the network is rebuilt here with the
same state_dict layout. ``ConvTransformerSQAModel.forward`` is reproduced exactly:
- a clip shorter than ``SEGMENT`` (122880 samples, 7.68 s) is zero-padded at the end
  to one segment; a longer one is cut into ``ceil(over / 16000) + 1`` segments of
  ``SEGMENT`` samples, ``over = len - SEGMENT``, starting at
  ``int(c * over)`` for ``c`` in ``np.linspace(0, 1, n)`` (first and last segment
  flush with the clip's ends, hops of at most 16000 samples);
- every segment is divided by its own peak plus 1e-8 (so the level does not matter,
  and silence scores as a constant);
- features: reflect padding of 80 samples each side, STFT (n_fft = win = 320,
  periodic Hann, hop 160, ``center=False``: 768 frames x 161 bins), the complex
  values compressed to magnitude ** 0.3 with their phase; six 3x3 convolutions with
  LeakyReLU(0.1) (stride 2 in frequency from the second, in time in the last) ->
  384 frames x 1024 features;
- two BatchNorms, a linear projection to 200, a fixed sinusoidal position table
  (stored in the checkpoint), a 7-layer post-norm transformer encoder (8 heads,
  feed-forward 400, ReLU), BatchNorm, attention pooling, sigmoid -> ``q`` in [0, 1];
- a clip's MOS is ``1 + 4 * mean(q over its segments)``.

Batching: the segments of all clips in a ``score`` call are run together,
``batch_size`` segments per network call (eval mode: segments are independent).
Empty and all-zero clips are scored like the package scores them (a zero segment).
fp32 everywhere; on CUDA, torch's global TF32 switches apply (cuDNN convolutions
use TF32 by default: set ``torch.backends.cudnn.allow_tf32 = False`` for fp32
convolutions as on the CPU).
"""
from __future__ import annotations

import importlib.util
import os
import site
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowse.metrics.registry import Metric, Output
from flowse.utils.config import check

SR = 16000
SEGMENT = 122880
MAX_HOP = 16000
WIN = 320
HOP = 160
WEIGHTS_FILE = os.path.join("weights", "distill_mos_v7.pt")
DMOS_HINT = (
    "DMOS is n/a: DistillMOS weights not found; pip install distillmos==0.9.1 --no-deps "
    "(or set dmos.weights to a distill_mos_v7.pt)"
)


@dataclass
class DistillMOSConfig:
    """DistillMOS (DMOS) weights and batching.

    ``weights`` null: ``distillmos/weights/distill_mos_v7.pt`` of the installed
    ``distillmos`` wheel (found without importing it). ``batch_size``: 7.68 s segments
    per network call (about 60 MB of activations each, fp32).
    """

    weights: str | None = None
    batch_size: int = 8

    def __post_init__(self):
        check(self.batch_size >= 1, f"dmos.batch_size must be >= 1, got {self.batch_size}")


def distillmos_weights_path() -> str:
    """``distill_mos_v7.pt`` of the installed ``distillmos`` wheel, located without importing it."""
    candidates = []
    try:
        spec = importlib.util.find_spec("distillmos")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += list(spec.submodule_search_locations)
    for d in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidates.append(os.path.join(d, "distillmos"))
    for c in candidates:
        p = os.path.join(c, WEIGHTS_FILE)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(DMOS_HINT)


def weights_available(cfg: DistillMOSConfig) -> bool:
    """The registry's availability check: configured weights, or the installed wheel's."""
    if cfg.weights:
        return True
    try:
        distillmos_weights_path()
    except FileNotFoundError:
        return False
    return True


def segment_starts(n_samples: int) -> list[int]:
    """Start samples of the package's segments of a clip of ``n_samples`` (after padding to ``SEGMENT``)."""
    over = max(n_samples - SEGMENT, 0)
    n = int(np.ceil(over / MAX_HOP)) + 1
    return [int(c * over) for c in np.linspace(0, 1, n)]


def segments(wav: np.ndarray) -> np.ndarray:
    """One clip -> its ``[S, SEGMENT]`` float32 segments (zero-padded when shorter), before normalisation."""
    wav = np.asarray(wav, dtype=np.float32)
    if len(wav) < SEGMENT:
        wav = np.pad(wav, (0, SEGMENT - len(wav)))
    return np.stack([wav[s : s + SEGMENT] for s in segment_starts(len(wav))])


def compressed_spectrogram(x: torch.Tensor) -> torch.Tensor:
    """``[N, samples]`` -> ``[N, 2, 161, frames]``: real/imag STFT with magnitude ** 0.3."""
    pad = (WIN - HOP) // 2
    x = F.pad(x, (pad, pad), mode="reflect")
    spec = torch.stft(x, n_fft=WIN, hop_length=HOP, win_length=WIN, center=False, return_complex=True,
                      window=torch.hann_window(WIN, device=x.device))
    spec = torch.view_as_real(spec)
    mag = torch.sum(spec**2, dim=-1, keepdim=True) ** 0.5
    compressed = torch.clip(mag, 1e-12) ** 0.3 * spec / torch.clip(mag, 1e-12)
    return compressed.permute(0, 3, 1, 2)


class ComplexSpecCNN(nn.Module):
    """Compressed spectrogram -> ``[N, 1024, frames / 2]`` (256 channels x 4 bins); ``cnn`` as in the checkpoint."""

    def __init__(self, n_layers: int = 6, first_channels: int = 64, final_channels: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 2
        for i in range(n_layers):
            out_ch = min(first_channels * 2 ** max(i - 1, 0), final_channels)
            stride = (2 if i >= 1 else 1, 2 if i == n_layers - 1 else 1)  # (frequency, time)
            layers += [nn.Conv2d(in_ch, out_ch, (3, 3), stride=stride, padding=(0, 1)), nn.LeakyReLU(0.1)]
            in_ch = out_ch
        self.cnn = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.cnn(compressed_spectrogram(x)), 1, -2)


class PositionTable(nn.Module):
    """Fixed additive position table ``pe [1, 384, 200]``, loaded from the checkpoint."""

    def __init__(self, frames: int, dim: int):
        super().__init__()
        self.register_buffer("pe", torch.zeros(1, frames, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe.expand(x.shape)


class FrameTransformer(nn.Module):
    """BatchNorm -> Linear(1024, 200) -> position table -> 7-layer transformer encoder; ``[N, T, C]``."""

    def __init__(self, dim_in: int, dim: int, frames: int, heads: int, layers: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim_in)
        self.position_encoding = PositionTable(frames, dim)
        self.linear_proj = nn.Linear(dim_in, dim)
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.transpose(-1, -2)).transpose(-1, -2)
        return self.transformer_encoder(self.position_encoding(self.linear_proj(x)))


class AttentionPool(nn.Module):
    """Attention pooling over frames then a linear score: ``[N, T, C]`` -> ``[N, 1]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, 2 * dim)
        self.linear2 = nn.Linear(2 * dim, 1)
        self.linear3 = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = F.softmax(self.linear2(F.relu(self.linear1(x))).transpose(2, 1), dim=2)
        return self.linear3(torch.bmm(att, x).squeeze(1))


class QualityHead(nn.Module):
    """CNN features ``[N, T, 1024]`` -> normalised quality ``q [N]`` in [0, 1]."""

    def __init__(self, dim_in: int = 1024, dim: int = 200, frames: int = 384, heads: int = 8, layers: int = 7):
        super().__init__()
        self.norm_input = nn.BatchNorm1d(dim_in)
        self.transformer = FrameTransformer(dim_in, dim, frames, heads, layers)
        self.norm_trans = nn.BatchNorm1d(dim)
        self.pool = AttentionPool(dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.norm_input(feats.transpose(-1, -2)).transpose(-1, -2)
        x = self.norm_trans(self.transformer(x).transpose(-1, -2)).transpose(-1, -2)
        return torch.sigmoid(self.pool(x).squeeze(-1))


class DistillMOSNet(nn.Module):
    """Segments ``[N, 122880]`` (16 kHz, any level) -> normalised quality ``q [N]``; MOS = 1 + 4 q."""

    def __init__(self):
        super().__init__()
        self.cnn = ComplexSpecCNN()
        self.transformer_pool_attn = QualityHead()

    def forward(self, segs: torch.Tensor) -> torch.Tensor:
        segs = segs / (torch.max(torch.abs(segs), dim=1, keepdim=True).values + 1e-8)
        return self.transformer_pool_attn(self.cnn(segs).permute(0, 2, 1))

    @classmethod
    def from_checkpoint(cls, path: str) -> "DistillMOSNet":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(ckpt.get("model", ckpt))
        return model.eval()


class DistillMOS:
    """Batched DistillMOS: ``score(wavs)`` -> MOS ``float64 [B]`` (1-5) of 16 kHz mono clips."""

    def __init__(self, cfg: DistillMOSConfig | None = None, device: str = "cpu"):
        self.cfg = cfg or DistillMOSConfig()
        self.device = torch.device(device)
        self.weights = self.cfg.weights or distillmos_weights_path()
        if not os.path.isfile(self.weights):
            raise FileNotFoundError(f"dmos.weights: no such file {self.weights!r}")
        self.net = DistillMOSNet.from_checkpoint(self.weights).to(self.device)

    @torch.no_grad()
    def segment_quality(self, segs: np.ndarray) -> np.ndarray:
        """``[N, SEGMENT]`` segments -> ``q float32 [N]``, ``batch_size`` segments per call."""
        out = []
        for a in range(0, len(segs), self.cfg.batch_size):
            x = torch.from_numpy(segs[a : a + self.cfg.batch_size]).to(self.device)
            out.append(self.net(x).cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def score(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """16 kHz mono clips (any length, any level) -> MOS ``float64 [B]``; a non-1-D item raises, naming it."""
        per_clip = []
        for i, w in enumerate(wavs):
            w = np.asarray(w, dtype=np.float32)
            if w.ndim != 1:
                raise ValueError(f"DistillMOS needs 1-D 16 kHz waveforms; item {i} has shape {w.shape}")
            per_clip.append(segments(w))
        if not per_clip:
            return np.zeros(0, dtype=np.float64)
        q = torch.from_numpy(self.segment_quality(np.concatenate(per_clip)))
        bounds = np.cumsum([0] + [len(s) for s in per_clip])
        mos = [1 + 4 * torch.mean(q[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.array([m.item() for m in mos], dtype=np.float64)

    def __call__(self, est: Sequence[np.ndarray], ref=None, outputs: Sequence[str] = ("DMOS",)
                 ) -> dict[str, np.ndarray]:
        """The registry's scorer call: ``{"DMOS": [B]}`` (no reference)."""
        return {"DMOS": self.score(est)}


METRIC = Metric(
    key="dmos",
    outputs=(Output("DMOS", 0.25, "DMOS", ".3f"),),
    needs_ref=False,
    build=DistillMOS,
    config_key="dmos",
    config=DistillMOSConfig,
    available=weights_available,
    hint=DMOS_HINT,
)
