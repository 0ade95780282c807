"""DiffusionNFT (Zheng et al. 2025, arXiv 2509.16117; NVlabs/DiffusionNFT) adapted to flow-matching SE.

Online RL on the forward process: no SDE, no likelihoods. Per iteration:

1. **Collect** with the *sampling* policy (the "old" LoRA weights): per prompt ``K = group_size``
   candidates from the plain ODE sampler (``flowse.rl.collect.ODECollector``), their metrics and
   rewards, per-prompt advantages ``A`` (``train.adv_std: global`` divides by the std of all
   rewards, as NVlabs' ``global_std``), clamped to ``[-c, c]`` with ``c = train.adv_clip``, and
   the optimality ``r = clamp(A / c / 2 + 1/2, 0, 1)``. Groups with zero reward spread are dropped.
2. **Train** on the collected samples as clean targets with the flow-matching objective: per
   sample ``train.timesteps_per_sample`` times t from the sampler's grid (a seeded permutation of
   ``{0, 1/nfe, ..., (nfe-1)/nfe}``: the times the sampler visits), fresh noise ``eps``,
   ``x_t = (1 - t) eps + t x1``, target ``v* = x1 - eps``, and the implicit policies

       v+ = beta v_theta + (1 - beta) v_old,    v- = (1 + beta) v_old - beta v_theta
       L  = r l(v+) + (1 - r) l(v-)    (+ kl_weight * mean (v_theta - v_ref)^2, v_ref: adapter off)

   with ``l`` per sample: ``train.weighting: adaptive`` (NVlabs) is the clean-estimate error
   ``x1_hat - x1 = (1 - t)(v - v*)`` squared, divided by its detached mean absolute value (floor
   1e-5); ``none`` is the plain velocity MSE ``mean (v - v*)^2`` (the pretraining loss). Means run
   over the valid frames and all bins. ``train.loss_scale: nvlabs`` multiplies L by ``c / beta``
   as NVlabs' code does (the gradient then tends to ``2 c (2r - 1)(v_old - v*) dv_theta`` as
   beta -> 0: beta sets how far v_theta moves per unit of the implicit policies' move, not the
   step size); ``one`` leaves L as written above, whose gradient vanishes linearly with beta.
3. **Update the sampling policy** after the iteration's optimizer steps (NVlabs' soft update):
   ``old <- d old + (1 - d) theta`` with ``d = min(old_decay_rate * max(step - old_decay_flat, 0),
   old_decay_max)`` (0 before ``old_decay_flat``): on-policy at first, lagging later.

Time convention: NVlabs' t runs from data (0) to noise (1) with ``x_t = (1 - t) x0 + t eps`` and
velocity target ``eps - x0``; here (the SE convention of ``flowse.models.flowse_model``) t runs
from noise (0) to clean (1), so ``t_SE = 1 - t_NV``, ``v_SE = -v_NV``, and NVlabs' clean-estimate
``x0_hat = x_t - t_NV v_NV`` is ``x1_hat = x_t + (1 - t_SE) v_SE``. The condition (normalised noisy
mel) and the CFG weight ``rollout.cfg_strength`` enter v_theta, v_old and v_ref exactly as in
sampling: the guided velocity field is the policy (NVlabs trains its CFG-free image model with
guidance 1; an SE base trained with condition dropout keeps its inference CFG).

Distributed: rounds (and their samples) belong to ranks as in GRPO; training items are a global
list split into ``updates_per_iter`` optimizer steps, each item weighing ``1 / items of the step``
over all ranks, gradients summed by one all-reduce per step: the update equals one process's.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from flowse.rl.collect import Collection, ODECollector, stream_seed
from flowse.rl.config import PostTrainConfig
from flowse.rl.lora import reference_policy
from flowse.rl.posttrain import PostTrainTask, all_reduce_grads, collection_stats, masked_mean
from flowse.train.config import TrainConfig
from flowse.train.task import StepOutput
from flowse.utils.config import check
from flowse.utils.distributed import all_gather_object
from flowse.utils.log import get_logger

logger = get_logger(__name__)


@dataclass
class NFTTrainConfig(TrainConfig):
    """DiffusionNFT training (defaults: NVlabs' SD3.5-M configs where they carry over).
    ``beta``: the guidance strength of the implicit policies (NVlabs 1.0; 0.1 for OCR / multi-reward);
    ``kl_weight``: weight of the velocity MSE to the reference (adapter off; NVlabs ``train.beta`` 1e-4);
    ``timesteps_per_sample``: training times per sample and iteration (NVlabs: 9 of 10 sampler times);
    ``train_batch_size``: items (sample, time) per forward/backward; ``updates_per_iter``: optimizer steps
    per iteration (NVlabs 1-2); ``adv_clip`` c, ``adv_eps``, ``adv_std``: advantages and the optimality r;
    ``old_decay_*``: the sampling policy's soft update (NVlabs ``decay_type`` 1: flat 0, rate 0.001, max 0.5)."""

    max_steps: int = 300
    lr: float = 3e-4
    weight_decay: float = 1e-4
    log_interval: int = 1
    eval_interval: int = 50
    ckpt_interval: int = 10
    seed: int = 0
    train_batch_size: int = 8
    updates_per_iter: int = 1
    timesteps_per_sample: int = 2
    beta: float = 1.0
    kl_weight: float = 1e-4
    weighting: Literal["adaptive", "none"] = "adaptive"
    loss_scale: Literal["nvlabs", "one"] = "nvlabs"
    adv_clip: float = 5.0
    adv_eps: float = 1e-4
    adv_std: Literal["group", "global"] = "global"
    old_decay_flat: int = 0
    old_decay_rate: float = 0.001
    old_decay_max: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check(self.train_batch_size >= 1 and self.updates_per_iter >= 1 and self.timesteps_per_sample >= 1,
              "train: train_batch_size, updates_per_iter and timesteps_per_sample must be >= 1")
        check(self.beta > 0, f"train.beta must be > 0, got {self.beta}")
        check(self.kl_weight >= 0 and self.adv_clip > 0 and self.adv_eps >= 0,
              "train: kl_weight >= 0, adv_clip > 0, adv_eps >= 0")
        check(self.old_decay_flat >= 0 and self.old_decay_rate >= 0 and 0 <= self.old_decay_max < 1,
              "train: old_decay_flat >= 0, old_decay_rate >= 0, 0 <= old_decay_max < 1")


@dataclass
class NFTConfig(PostTrainConfig):
    """Stage 5 with ``method: nft``: the shared sections with the ODE collection (``rollout``, a
    ``SampleConfig``) and DiffusionNFT's training settings."""

    method: Literal["nft"] = "nft"
    train: NFTTrainConfig = field(default_factory=NFTTrainConfig)


def optimality(adv: torch.Tensor, clip: float) -> torch.Tensor:
    """``r = clamp(clamp(A, -c, c) / c / 2 + 1/2, 0, 1)``: 1 for the best, 0 for the worst, 1/2 for average."""
    return torch.clamp(torch.clamp(adv, -clip, clip) / clip / 2.0 + 0.5, 0.0, 1.0)


def old_decay(step: int, flat: int, rate: float, cap: float) -> float:
    """The soft-update weight of the old (sampling) policy after ``step`` optimizer steps."""
    return 0.0 if step < flat else min((step - flat) * rate, cap)


def nft_loss(v_theta: torch.Tensor, v_old: torch.Tensor, v_star: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
             r: torch.Tensor, beta: float, weighting: str = "adaptive", scale: float = 1.0,
             v_ref: torch.Tensor | None = None, kl_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample DiffusionNFT loss ``[B]`` (see the module doc) and detached terms.

    ``v_* [B, T, F]`` fp32 velocities (``v_old`` detached), ``t [B]`` SE time, ``mask [B, T]``, ``r [B]``."""
    m = mask[..., None].to(v_theta.dtype)
    v_old = v_old.detach()
    pos = beta * v_theta + (1.0 - beta) * v_old
    neg = (1.0 + beta) * v_old - beta * v_theta

    def term(v: torch.Tensor) -> torch.Tensor:
        if weighting == "none":
            return masked_mean((v - v_star) ** 2, m)
        err = (1.0 - t)[:, None, None] * (v - v_star)  # x1_hat - x1
        with torch.no_grad():
            w = masked_mean(err.abs(), m).clamp(min=1e-5)
        return masked_mean(err**2, m) / w

    l_pos, l_neg = term(pos), term(neg)
    loss = scale * (r * l_pos + (1.0 - r) * l_neg)
    kl = masked_mean((v_theta - v_ref.detach()) ** 2, m) if v_ref is not None else torch.zeros_like(loss)
    if kl_weight:
        loss = loss + kl_weight * kl
    stats = {"pos": l_pos.detach(), "neg": l_neg.detach(), "kl": kl.detach(),
             "old_dev": masked_mean((v_theta.detach() - v_old) ** 2, m)}
    return loss, stats


class _OldPolicy:
    """The sampling policy's LoRA weights (a list aligned with the task's parameters) as a checkpoint item."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.weights = [p.detach().clone() for p in params]

    def state_dict(self) -> dict:
        return {"weights": [w.cpu() for w in self.weights]}

    def load_state_dict(self, state: dict) -> None:
        self.weights = [w.to(p) for w, p in zip(state["weights"], self.params)]

    @contextlib.contextmanager
    def active(self):
        """Inside: the model's LoRA parameters hold the old weights (restored on exit)."""
        current = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, w in zip(self.params, self.weights):
                p.copy_(w)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, c in zip(self.params, current):
                    p.copy_(c)

    @torch.no_grad()
    def soft_update(self, decay: float) -> None:
        for w, p in zip(self.weights, self.params):
            w.mul_(decay).add_(p.detach(), alpha=1.0 - decay)


Item = tuple[int, int, int]  # (round, candidate, time index)


class NFTTask(PostTrainTask):
    """DiffusionNFT on LoRA; one unit of work is one iteration (collection + ``updates_per_iter`` steps)."""

    name = "nft"
    postfix_keys = ("reward_mean", "kl")
    collector_cls = ODECollector

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.old = _OldPolicy(self.params)
        self.last_loss = float("nan")

    def state_items(self) -> dict:
        return {**super().state_items(), "old_lora": self.old}

    def items(self, col: Collection) -> list[Item]:
        """The training items of a collection (kept candidates x their times), the same on every rank."""
        ro, tc = self.cfg.rollout, self.cfg.train
        n_cand = ro.prompts_per_round * ro.group_size
        out: list[Item] = []
        for r in range(ro.rounds_per_iter):
            for c in range(n_cand):
                if col.adv.keep[r * n_cand + c]:
                    out += [(r, c, j) for j in range(min(tc.timesteps_per_sample, ro.nfe))]
        return out

    def _time_and_noise(self, it: int, gc: int, j: int, shape) -> tuple[float, torch.Tensor]:
        """The ``j``-th training time of global candidate ``gc`` (a seeded permutation of the grid) and its noise."""
        nfe = self.cfg.rollout.nfe
        perm = np.random.default_rng(stream_seed(self.cfg.train.seed, 6, it, gc)).permutation(nfe)
        gen = torch.Generator().manual_seed(stream_seed(self.cfg.train.seed, 7, it, gc, j))
        return float(perm[j]) / nfe, torch.randn(shape, generator=gen)

    def accumulate(self, col: Collection, own: list[Item], weight: float, sums: dict) -> None:
        """Backward of ``weight * loss`` summed over this rank's items ``own`` (micro-batched)."""
        ro, tc = self.cfg.rollout, self.cfg.train
        n_cand = ro.prompts_per_round * ro.group_size
        mine = {rd.index: rd for rd in col.rounds}
        velocity = self.collector.velocity
        scale = tc.adv_clip / tc.beta if tc.loss_scale == "nvlabs" else 1.0
        for s in range(0, len(own), tc.train_batch_size):
            batch = own[s : s + tc.train_batch_size]
            x1 = torch.stack([mine[r].x1[c] for r, c, _ in batch])
            cond = torch.stack([mine[r].cond[c] for r, c, _ in batch])
            mask = torch.stack([mine[r].mask[c] for r, c, _ in batch])
            tn = [self._time_and_noise(col.iteration, r * n_cand + c, j, x1.shape[1:]) for r, c, j in batch]
            t = torch.tensor([v[0] for v in tn], dtype=torch.float32, device=self.dist.device)
            eps = torch.stack([v[1] for v in tn]).to(self.dist.device)
            x_t, v_star = self.model.path(eps, x1, t)
            x_t = x_t * mask[..., None].float()
            adv = torch.tensor([col.adv.values[r * n_cand + c] for r, c, _ in batch], dtype=torch.float32,
                               device=self.dist.device)
            r_opt = optimality(adv, tc.adv_clip)
            with torch.no_grad():
                with self.old.active():
                    v_old = velocity(x_t, cond, t, mask)
                v_ref = None
                if tc.kl_weight > 0:
                    with reference_policy(self.model):
                        v_ref = velocity(x_t, cond, t, mask)
            v_theta = velocity(x_t, cond, t, mask)
            loss, st = nft_loss(v_theta, v_old, v_star, t, mask, r_opt, tc.beta, tc.weighting, scale, v_ref,
                                tc.kl_weight)
            (loss.sum() * weight).backward()
            sums["n"] += len(batch)
            sums["loss"] += float(loss.detach().sum())
            sums["r"] += float(r_opt.sum())
            for k, v in st.items():
                sums[k] += float(v.sum())

    def train_step(self, trainer) -> StepOutput:
        """Collect with the old policy, ``updates_per_iter`` optimizer steps, soft-update the old policy."""
        it = self.progress.iteration
        tc = self.cfg.train
        t_start = self.start_clock()
        with self.old.active():
            col = self.collect(trainer, it)
        t_up = time.perf_counter()
        items = self.items(col)
        n_updates = min(tc.updates_per_iter, len(items), tc.max_steps - trainer.step)
        sums = {k: 0.0 for k in ("n", "loss", "r", "pos", "neg", "kl", "old_dev")}
        taken, gnorm = 0, float("nan")
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        if n_updates:
            perm = np.random.default_rng(stream_seed(tc.seed, 5, it)).permutation(len(items))
            mine = {rd.index for rd in col.rounds}
            for chunk in np.array_split(perm, n_updates):
                self.optimizer.zero_grad(set_to_none=True)
                own = [items[i] for i in chunk if items[i][0] in mine]
                self.accumulate(col, own, 1.0 / len(chunk), sums)
                all_reduce_grads(self.params, self.dist)
                gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
                self.optimizer.step()
                self.scheduler.step()
                taken += 1
            decay = old_decay(trainer.step + taken, tc.old_decay_flat, tc.old_decay_rate, tc.old_decay_max)
            self.old.soft_update(decay)
        else:
            decay = float("nan")
            logger.warning("iteration %d: every group had zero reward spread; no update", it)
        parts = all_gather_object(sums)
        total = {k: sum(p[k] for p in parts) for k in sums}
        n = max(total["n"], 1.0)
        self.last_loss = total["loss"] / n
        t_end = t_start + self.timed(t_start)
        rec = {
            "iteration": it, "step": trainer.step + taken, "lr": self.scheduler.get_last_lr()[0],
            **collection_stats(col), "items": len(items), "updates": taken, "grad_norm": gnorm,
            "loss": total["loss"] / n, "r_mean": total["r"] / n, "loss_pos": total["pos"] / n,
            "loss_neg": total["neg"] / n, "kl": total["kl"] / n, "old_deviation": total["old_dev"] / n,
            "old_decay": decay, "time_update": t_end - t_up, "time_total": t_end - t_start,
            "samples_per_s": len(col.rewards) / max(t_end - t_start, 1e-9),
            **self.clock(),
        }
        self.progress.iteration += 1
        return StepOutput(taken, rec)

    def log_rows(self, trainer, stats: list[dict], elapsed: float) -> list[dict]:
        for rec in stats:
            metric_txt = " ".join(f"{k[6:]}={v:.4f}" for k, v in rec.items() if k.startswith("train/"))
            logger.info("iter %d step %d: reward %.4f +- %.4f | %s | loss %.4g (+ %.4g, - %.4g) r %.3f kl %.3e "
                        "|v-v_old|^2 %.2e decay %.3f zero-std groups %d/%d | time rollout %.1fs vocoder %.1fs "
                        "reward %.1fs update %.1fs", rec["iteration"], rec["step"], rec["reward_mean"],
                        rec["reward_std"], metric_txt, rec["loss"], rec["loss_pos"], rec["loss_neg"], rec["r_mean"],
                        rec["kl"], rec["old_deviation"], rec["old_decay"], rec["zero_std_groups"], rec["groups"],
                        rec["time_rollout"], rec["time_vocoder"], rec["time_reward"], rec["time_update"])
        return stats
