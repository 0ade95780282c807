"""F5-TTS-style diffusion transformer (DiT) predicting the flow velocity on log-mel frames.

Layout: every tensor is ``[batch, frames, channels]``; ``mask [B, T]`` is True on valid
frames. The network sees ``concat(x_t, cond)`` on the channel axis, adds a
convolutional position embedding, and runs ``depth`` adaLN-zero transformer blocks
with rotary position embedding inside attention; the time embedding of ``t`` (flow
time, 0 = noise, 1 = clean) modulates every block.

Padding never leaks into valid frames: padded frames are zeroed before each
convolution, attention ignores padded keys, and the output is zero on padded
frames, so a batch of mixed lengths gives each utterance the output it gets alone.

The paper configuration (hidden 512, depth 12, 8 heads x 64, FFN 1024, 80 mels)
has exactly 46,179,920 parameters:
12 blocks x 3,676,672 (adaLN 1,575,936 + attention 1,050,624 + FFN 1,050,112)
+ time embedding 394,240 + input projection 82,432 + conv position embedding
1,016,832 + final adaLN 525,312 + output projection 41,040.

Module names are part of the API: the GRPO LoRA targets ``blocks.{i}.attn.to_q``,
``to_k``, ``to_v`` and ``to_out`` (plain ``nn.Linear`` layers with bias).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flowse.utils.config import check


@dataclass
class DiTConfig:
    """Backbone size. Defaults are the paper's (Sec. 3.2); ``dropout`` follows F5-TTS (0.1).

    Dropout acts on the attention output and inside the FFN; ``model.eval()`` turns it
    off (GRPO rollouts and log-prob evaluations must run in eval mode).
    """

    n_mels: int = 80
    hidden: int = 512
    depth: int = 12
    heads: int = 8
    head_dim: int = 64
    ffn: int = 1024
    conv_kernel: int = 31
    conv_groups: int = 16
    time_freq_dim: int = 256
    dropout: float = 0.1
    rope_base: float = 10000.0

    def __post_init__(self):
        check(self.n_mels > 0 and self.hidden > 0 and self.depth > 0 and self.ffn > 0, "model: sizes must be positive")
        check(self.heads > 0 and self.head_dim > 0 and self.head_dim % 2 == 0,
              "model: heads > 0 and an even head_dim are required (rotary embedding)")
        check(self.conv_kernel % 2 == 1, f"model.conv_kernel must be odd, got {self.conv_kernel}")
        check(self.hidden % self.conv_groups == 0, "model.hidden must be divisible by model.conv_groups")
        check(self.time_freq_dim % 2 == 0 and self.time_freq_dim >= 4, "model.time_freq_dim must be even and >= 4")
        check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")


class TimestepEmbedding(nn.Module):
    """``t [B]`` in [0, 1] -> ``[B, hidden]``: sinusoids of ``1000 t`` (F5-TTS scale), MLP with SiLU."""

    def __init__(self, freq_dim: int, hidden: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def sinusoids(self, t: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        arg = scale * t.float()[:, None] * freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoids(t).to(self.mlp[0].weight.dtype))


class ConvPositionEmbedding(nn.Module):
    """Two grouped Conv1d + Mish; padded frames are zeroed before each conv and on the output."""

    def __init__(self, hidden: int, kernel: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv1d(hidden, hidden, kernel, groups=groups, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel, groups=groups, padding=kernel // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :]
        y = x.transpose(1, 2).masked_fill(~m, 0.0)
        y = F.mish(self.conv1(y)).masked_fill(~m, 0.0)
        y = F.mish(self.conv2(y)).masked_fill(~m, 0.0)
        return y.transpose(1, 2)


def rotary_cos_sin(n: int, dim: int, base: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[n, dim]`` for positions 0..n-1 (half-split layout)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, D]`` by position: pairs are (d, d + D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Multi-head self-attention with rotary embedding and a key padding mask (SDPA)."""

    def __init__(self, hidden: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(hidden, inner)
        self.to_k = nn.Linear(hidden, inner)
        self.to_v = nn.Linear(hidden, inner)
        self.to_out = nn.Linear(inner, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        cos, sin = rope
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        y = y.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.dropout(self.to_out(y))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, ffn: int, dropout: float):
        super().__init__()
        self.proj_in = nn.Linear(hidden, ffn)
        self.proj_out = nn.Linear(ffn, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.dropout(F.gelu(self.proj_in(x), approximate="tanh")))


class AdaLayerNormZero(nn.Module):
    """SiLU + Linear(hidden -> n * hidden) of the time embedding; LayerNorm without affine."""

    def __init__(self, hidden: int, n: int):
        super().__init__()
        self.n = n
        self.linear = nn.Linear(hidden, n * hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(F.silu(emb)).chunk(self.n, dim=-1)


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.attn_norm = AdaLayerNormZero(cfg.hidden, 6)
        self.attn = Attention(cfg.hidden, cfg.heads, cfg.head_dim, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.hidden, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(cfg.hidden, cfg.ffn, cfg.dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, mask: torch.Tensor, rope) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm(emb)
        h = self.attn_norm.norm(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        x = x + gate_msa[:, None] * self.attn(h, mask, rope)
        h = self.ff_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return x + gate_mlp[:, None] * self.ff(h)


class DiT(nn.Module):
    """Velocity network ``v_theta(x_t, cond, t)`` on ``[B, T, n_mels]`` features."""

    def __init__(self, cfg: DiTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DiTConfig()
        self.time_embed = TimestepEmbedding(cfg.time_freq_dim, cfg.hidden)
        self.input_proj = nn.Linear(2 * cfg.n_mels, cfg.hidden)
        self.conv_pos = ConvPositionEmbedding(cfg.hidden, cfg.conv_kernel, cfg.conv_groups)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = AdaLayerNormZero(cfg.hidden, 2)
        self.proj_out = nn.Linear(cfg.hidden, cfg.n_mels)
        self.reset_adaln_zero()

    def reset_adaln_zero(self) -> None:
        """adaLN-zero init (DiT, F5-TTS): modulations and the output projection start at 0."""
        for block in self.blocks:
            nn.init.zeros_(block.attn_norm.linear.weight)
            nn.init.zeros_(block.attn_norm.linear.bias)
        for lin in (self.norm_out.linear, self.proj_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x, cond [B, T, F]``, ``t [B]`` (or scalar) in [0, 1], ``mask [B, T]`` bool (True = valid),
        ``drop_cond [B]`` bool (True: the condition of that utterance is replaced by zeros).
        Returns ``v [B, T, F]``, zero on padded frames."""
        b, n, _ = x.shape
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if drop_cond is not None:
            cond = cond.masked_fill(drop_cond.to(torch.bool)[:, None, None], 0.0)
        emb = self.time_embed(t)
        h = self.input_proj(torch.cat([x, cond], dim=-1))
        h = h + self.conv_pos(h, mask)
        rope = rotary_cos_sin(n, self.cfg.head_dim, self.cfg.rope_base, x.device, h.dtype)
        for block in self.blocks:
            h = block(h, emb, mask, rope)
        shift, scale = self.norm_out(emb)
        h = self.norm_out.norm(h) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out(h).masked_fill(~mask[..., None], 0.0)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
