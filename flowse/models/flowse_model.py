"""FlowSE: the DiT velocity network plus feature normalisation, the flow-matching loss and CFG.

Conventions (paper Sec. 2.1, SE time direction):
- flow time t runs 0 (Gaussian noise x0) -> 1 (clean mel x1);
  ``x_t = (1 - t) x0 + t x1``, target velocity ``v = x1 - x0``;
- features are log-mels ``[B, T, n_mels]``; the network works on normalised features:
  ``x1 = (clean - clean_mean) / clean_std`` and ``cond = (noisy - noisy_mean) / noisy_std``,
  each stream with its own per-bin statistics from ``dump/train/stats.json`` (identity
  when ``normalize`` is false or no statistics were set);
- classifier-free guidance (CFG): training replaces the condition by zeros (the
  normalised-feature mean) with probability ``cfg_dropout`` per utterance; inference uses
  ``v = v_uncond + w (v_cond - v_uncond)``. ``w = 1`` is the plain conditional model (one
  forward), ``w = 0`` the unconditional one, ``w > 1`` extrapolates away from the
  unconditional velocity; otherwise both are computed in one forward of batch 2B.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from flowse.models.dit import DiT, DiTConfig
from flowse.utils.config import check


@dataclass
class FlowConfig:
    """Flow-matching settings.

    ``t_sampler``: ``uniform`` (t ~ U(0, 1), the paper's Eq. 1 expectation) or ``logit_normal``
    (t = sigmoid(N(logit_mean, logit_std)), SD3-style emphasis on mid times).
    ``cfg_strength`` is the default guidance weight w of inference and GRPO (see module doc); the
    paper uses CFG at inference without giving w; 1.5 scored the best DNSMOS OVRL of {1, 1.5, 2, 3}
    on both mini test sets, but the mini recipe uses 3.0, the better choice by DistillMOS, PESQ and
    ESTOI on its valid set (conf/mini/pretrain.yaml). ``nfe``: default Euler steps (paper: 10).
    """

    normalize: bool = True
    cfg_dropout: float = 0.2
    cfg_strength: float = 1.5
    nfe: int = 10
    t_sampler: Literal["uniform", "logit_normal"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self):
        check(0.0 <= self.cfg_dropout < 1.0, f"flow.cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        check(self.cfg_strength >= 0.0, f"flow.cfg_strength must be >= 0, got {self.cfg_strength}")
        check(self.nfe >= 1, f"flow.nfe must be >= 1, got {self.nfe}")
        check(self.logit_std > 0, "flow.logit_std must be positive")


@dataclass
class FlowSEConfig:
    """What builds a ``FlowSE``: the ``model`` (DiT size) and ``flow`` sections of a pretrain yaml."""

    model: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)


class FlowSE(nn.Module):
    """Flow-matching SE model. ``forward`` is the training loss (so DDP can wrap the module)."""

    def __init__(self, dit_cfg: DiTConfig | None = None, flow_cfg: FlowConfig | None = None, stats: dict | None = None):
        super().__init__()
        self.dit = DiT(dit_cfg or DiTConfig())
        self.flow_cfg = flow_cfg or FlowConfig()
        n = self.dit.cfg.n_mels
        for kind in ("clean", "noisy"):
            self.register_buffer(f"{kind}_mean", torch.zeros(n))
            self.register_buffer(f"{kind}_std", torch.ones(n))
        if stats is not None:
            self.set_stats(stats)

    @property
    def n_mels(self) -> int:
        return self.dit.cfg.n_mels

    def set_stats(self, stats: dict) -> None:
        """``stats = {"clean": {"mean", "std"}, "noisy": {"mean", "std"}}``, scalars or per-bin lists."""
        for kind in ("clean", "noisy"):
            for name in ("mean", "std"):
                value = torch.as_tensor(stats[kind][name], dtype=torch.float32).flatten()
                if value.numel() not in (1, self.n_mels):
                    raise ValueError(f"stats {kind}.{name}: expected 1 or {self.n_mels} values, got {value.numel()}")
                if name == "std" and not bool((value > 0).all()):
                    raise ValueError(f"stats {kind}.std must be positive")
                getattr(self, f"{kind}_{name}").copy_(value.expand(self.n_mels))

    def normalize(self, mel: torch.Tensor, kind: Literal["clean", "noisy"] = "clean") -> torch.Tensor:
        """Log-mel -> the network's normalised space (identity when ``normalize`` is off)."""
        if not self.flow_cfg.normalize:
            return mel
        if kind not in ("clean", "noisy"):
            raise ValueError(f"kind must be 'clean' or 'noisy', got {kind!r}")
        return (mel - getattr(self, f"{kind}_mean")) / getattr(self, f"{kind}_std")

    def denormalize(self, x: torch.Tensor, kind: Literal["clean", "noisy"] = "clean") -> torch.Tensor:
        """Normalised features (a clean estimate, or the noisy condition) -> log-mel."""
        if not self.flow_cfg.normalize:
            return x
        if kind not in ("clean", "noisy"):
            raise ValueError(f"kind must be 'clean' or 'noisy', got {kind!r}")
        return x * getattr(self, f"{kind}_std") + getattr(self, f"{kind}_mean")

    def sample_t(self, b: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        f = self.flow_cfg
        if f.t_sampler == "uniform":
            return torch.rand(b, device=device, generator=generator)
        z = torch.randn(b, device=device, generator=generator) * f.logit_std + f.logit_mean
        return torch.sigmoid(z)

    @staticmethod
    def path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The probability path of Eq. 1 at times ``t [B]`` (0: noise ``x0``, 1: clean ``x1``; ``[B, T, F]``):
        ``x_t = (1 - t) x0 + t x1`` and its velocity target ``x1 - x0`` (pretraining and every post-training loss)."""
        tt = t[:, None, None].to(x1.dtype)
        return (1 - tt) * x0 + tt * x1, x1 - x0

    def loss(
        self,
        clean_mel: torch.Tensor,
        noisy_mel: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Masked flow-matching MSE (Eq. 1) over valid frames and all bins.

        ``clean_mel, noisy_mel [B, T, F]`` log-mels, ``mask [B, T]`` True on valid frames.
        Returns the scalar loss and detached stats (``loss``, ``frames``).
        """
        b = clean_mel.shape[0]
        dev = clean_mel.device
        m = mask[..., None].to(clean_mel.dtype)
        x1 = self.normalize(clean_mel, "clean") * m
        cond = self.normalize(noisy_mel, "noisy") * m
        x0 = torch.randn(x1.shape, device=dev, generator=generator, dtype=x1.dtype) * m
        t = self.sample_t(b, dev, generator)
        drop = torch.rand(b, device=dev, generator=generator) < self.flow_cfg.cfg_dropout
        xt, target = self.path(x0, x1, t)
        v_pred = self.dit(xt, cond, t, mask, drop)
        frames = mask.sum()
        err = ((v_pred.float() - target.float()) ** 2).sum(dim=-1) * mask
        loss = err.sum() / (frames.clamp(min=1) * self.n_mels)
        return loss, {"loss": loss.detach(), "frames": frames.detach()}

    def forward(self, clean_mel, noisy_mel, mask, generator=None):
        return self.loss(clean_mel, noisy_mel, mask, generator)

    def velocity(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        t: torch.Tensor | float,
        mask: torch.Tensor | None = None,
        cfg_strength: float | None = None,
    ) -> torch.Tensor:
        """Guided velocity ``v_uncond + w (v_cond - v_uncond)`` on normalised features.

        ``x, cond [B, T, F]`` normalised, ``t`` float or ``[B]``, ``w = cfg_strength`` (default
        ``flow.cfg_strength``). ``w == 1``: one conditional forward; ``w == 0``: one
        unconditional forward; else one forward of batch 2B.
        """
        w = self.flow_cfg.cfg_strength if cfg_strength is None else float(cfg_strength)
        b = x.shape[0]
        if not torch.is_tensor(t):
            t = torch.tensor(float(t), device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if w == 1.0:
            return self.dit(x, cond, t, mask)
        if w == 0.0:
            return self.dit(x, cond, t, mask, torch.ones(b, dtype=torch.bool, device=x.device))
        drop = torch.cat([torch.zeros(b, dtype=torch.bool, device=x.device), torch.ones(b, dtype=torch.bool, device=x.device)])
        v = self.dit(torch.cat([x, x]), torch.cat([cond, cond]), torch.cat([t, t]), torch.cat([mask, mask]), drop)
        v_cond, v_uncond = v[:b], v[b:]
        return v_uncond + w * (v_cond - v_uncond)
