"""DPO for flow-matching SE (Diffusion-DPO's objective on velocity errors, as Flow-SR / GenSR-Pref [18]).

Offline: the base model generates the preference pairs once (``flowse.rl.dpo_pairs``: N ODE
candidates per prompt, winner and loser by unanimous preference over the rewarded metrics,
stored as a Kaldi-style data dir ``<exp_dir>/pairs``); then LoRA trains on them against the frozen
base (the reference: the same network with the adapter off). Per pair, one shared time
``t ~ U[0, 1)`` and noise ``eps`` for winner and loser, ``x_t = (1 - t) eps + t x1`` (SE time:
0 noise, 1 clean; ``x1`` the normalised winner or loser mel), target ``v* = x1 - eps``, and the
squared velocity error ``e = mean (v(x_t) - v*)^2`` over the valid frames and bins, for the
policy (theta) and the reference:

    L = -log sigmoid(-beta / 2 [(e_w(theta) - e_w(ref)) - (e_l(theta) - e_l(ref))])

(Diffusion-DPO's ``-0.5 beta (model_diff - ref_diff)`` with errors averaged over elements; its
beta 5000 for SD1.5, 2500 for SDXL). The condition (normalised noisy mel) and the CFG weight
``rollout.cfg_strength`` enter both velocities as in sampling. ``implicit_acc`` logs the share of
pairs the policy already prefers (``diff < 0``).

One unit of work is one optimizer step on ``train_batch_size`` pairs from a seeded per-epoch
permutation; pair ``i`` of a batch is handled by rank ``i mod world`` and every pair weighs
``1 / batch`` over all ranks (one all-reduce per step), so the update equals one process's. The
pair generation's seconds count as training time (``train_seconds`` of the held-out rows).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from flowse.rl.collect import ODECollector, stream_seed
from flowse.rl.config import PostTrainConfig
from flowse.rl.dpo_pairs import PairSet, generate_pairs
from flowse.rl.lora import reference_policy
from flowse.rl.posttrain import PostTrainTask, all_reduce_grads, masked_mean
from flowse.train.config import TrainConfig
from flowse.train.task import StepOutput
from flowse.utils import stage
from flowse.utils.config import check, to_dict
from flowse.utils.distributed import all_gather_object
from flowse.utils.log import get_logger

logger = get_logger(__name__)

PAIR_DIR = "pairs"


@dataclass
class PairConfig:
    """The offline pair set: ``num_prompts`` prompts (0: one pass over the prompt set; rounded up to whole
    collections of ``rollout``), ``unanimous``: the winner must beat the loser on every rewarded metric."""

    num_prompts: int = 0
    unanimous: bool = True

    def __post_init__(self):
        check(self.num_prompts >= 0, f"pairs.num_prompts must be >= 0, got {self.num_prompts}")


@dataclass
class DPOTrainConfig(TrainConfig):
    """``beta``: the DPO temperature on element-mean squared velocity errors (Diffusion-DPO: 2500-5000);
    ``train_batch_size``: pairs per optimizer step; ``micro_batch_size``: pairs per forward/backward."""

    max_steps: int = 200
    lr: float = 1e-4
    weight_decay: float = 1e-4
    log_interval: int = 1
    eval_interval: int = 50
    ckpt_interval: int = 20
    seed: int = 0
    beta: float = 2500.0
    train_batch_size: int = 16
    micro_batch_size: int = 8

    def __post_init__(self):
        super().__post_init__()
        check(self.beta > 0, f"train.beta must be > 0, got {self.beta}")
        check(self.train_batch_size >= 1 and self.micro_batch_size >= 1,
              "train: train_batch_size and micro_batch_size must be >= 1")


@dataclass
class DPOConfig(PostTrainConfig):
    """Stage 5 with ``method: dpo``: pair generation (``rollout``: the base model's ODE candidates; ``pairs``),
    then DPO training; ``lora``, ``reward`` (the preference metrics), ``eval``, ``export`` shared."""

    method: Literal["dpo"] = "dpo"
    train: DPOTrainConfig = field(default_factory=DPOTrainConfig)
    pairs: PairConfig = field(default_factory=PairConfig)


def velocity_error(v: torch.Tensor, v_star: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid frames and bins: ``[B, T, F]`` x2, ``mask [B, T]`` -> ``[B]``."""
    return masked_mean((v - v_star) ** 2, mask[..., None].to(v.dtype))


def dpo_loss(e_w: torch.Tensor, e_l: torch.Tensor, e_w_ref: torch.Tensor, e_l_ref: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair loss ``-log sigmoid(-beta/2 [(e_w - e_w_ref) - (e_l - e_l_ref)])`` ``[B]`` and the bracket ``[B]``."""
    diff = (e_w - e_w_ref.detach()) - (e_l - e_l_ref.detach())
    return -F.logsigmoid(-0.5 * beta * diff), diff.detach()


class DPOTask(PostTrainTask):
    """DPO on LoRA; ``begin`` generates (or finishes, or reuses) the pair set, then each unit is one step."""

    name = "dpo"
    postfix_keys = ("loss", "implicit_acc")
    collector_cls = ODECollector

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pairs: PairSet | None = None
        self.pair_info: dict = {}

    def pair_key(self) -> dict:
        cfg = self.cfg
        return stage.step_key(config={"rollout": to_dict(cfg.rollout), "pairs": to_dict(cfg.pairs),
                                      "reward": to_dict(cfg.reward), "seed": cfg.train.seed},
                              prompts=len(self.collector.prompts))

    def begin(self, trainer) -> None:
        super().begin(trainer)
        if trainer.exp_dir is None:
            raise ValueError("DPO needs an exp dir for its pair set")
        pair_dir = os.path.join(trainer.exp_dir, PAIR_DIR)
        if trainer.step == 0:  # the base model generates the pairs (a resumed run only reads them)
            self.pair_info = generate_pairs(self.collector, pair_dir, self.cfg.pairs.num_prompts,
                                            self.cfg.pairs.unanimous, self.pair_key())
            self.progress.seconds = float(self.pair_info.get("seconds", 0.0))
            self.progress.cpu_seconds = float(self.pair_info.get("cpu_seconds", 0.0)) / self.dist.world_size
        self.pairs = PairSet.load(pair_dir)
        logger.info("DPO on %d pairs of %s", len(self.pairs), pair_dir)

    def batch_indices(self, step: int) -> list[int]:
        """Pair indices of optimizer step ``step``: consecutive slices of seeded per-epoch permutations."""
        n, b = len(self.pairs), self.cfg.train.train_batch_size
        out: list[int] = []
        pos = step * b
        while len(out) < b:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng(stream_seed(self.cfg.train.seed, 8, epoch)).permutation(n)
            take = perm[off : off + b - len(out)].tolist()
            out += take
            pos += len(take)
        return out

    def _tensors(self, idx: list[int], step: int):
        """Padded normalised (cond, winner, loser), mask, shared t and noise of pairs ``idx``."""
        model, dev = self.model, self.dist.device
        ids = [self.pairs.ids[i] for i in idx]
        mels = {s: [np.array(getattr(self.pairs, s)[k], dtype=np.float32) for k in ids]
                for s in ("noisy", "winner", "loser")}
        t_max = max(m.shape[0] for m in mels["winner"])
        f = mels["winner"][0].shape[1]
        pad = {s: torch.zeros(len(ids), t_max, f) for s in mels}
        mask = torch.zeros(len(ids), t_max, dtype=torch.bool)
        for j in range(len(ids)):
            n = mels["winner"][j].shape[0]
            mask[j, :n] = True
            for s in mels:
                pad[s][j, :n] = torch.from_numpy(mels[s][j][:n])
        gens = [torch.Generator().manual_seed(stream_seed(self.cfg.train.seed, 9, step, i)) for i in idx]
        t = torch.stack([torch.rand((), generator=g) for g in gens])
        eps = torch.stack([torch.randn(t_max, f, generator=g) for g in gens])
        mask = mask.to(dev)
        m = mask[..., None].float()
        cond = model.normalize(pad["noisy"].to(dev), "noisy") * m
        x_w = model.normalize(pad["winner"].to(dev), "clean") * m
        x_l = model.normalize(pad["loser"].to(dev), "clean") * m
        return cond, x_w, x_l, mask, t.to(dev), eps.to(dev) * m

    def train_step(self, trainer) -> StepOutput:
        tc = self.cfg.train
        t_start = self.start_clock()
        idx = self.batch_indices(trainer.step)
        own = [i for j, i in enumerate(idx) if j % self.dist.world_size == self.dist.rank]
        velocity = self.collector.velocity
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "acc": 0.0, "diff": 0.0, "gap": 0.0, "gap_ref": 0.0, "n": 0}
        for s in range(0, len(own), tc.micro_batch_size):
            cond, x_w, x_l, mask, t, eps = self._tensors(own[s : s + tc.micro_batch_size], trainer.step)
            b = cond.shape[0]
            x1 = torch.cat([x_w, x_l])
            tt = torch.cat([t, t])
            noise = torch.cat([eps, eps])
            cond2, mask2 = torch.cat([cond, cond]), torch.cat([mask, mask])
            x_t, v_star = self.model.path(noise, x1, tt)
            x_t = x_t * mask2[..., None]
            with torch.no_grad(), reference_policy(self.model):
                e_ref = velocity_error(velocity(x_t, cond2, tt, mask2), v_star, mask2)
            e = velocity_error(velocity(x_t, cond2, tt, mask2), v_star, mask2)
            loss, diff = dpo_loss(e[:b], e[b:], e_ref[:b], e_ref[b:], tc.beta)
            (loss.sum() / len(idx)).backward()
            sums["loss"] += float(loss.detach().sum())
            sums["acc"] += float((diff < 0).float().sum())
            sums["diff"] += float(diff.sum())
            sums["gap"] += float((e[:b] - e[b:]).detach().sum())
            sums["gap_ref"] += float((e_ref[:b] - e_ref[b:]).sum())
            sums["n"] += b
        all_reduce_grads(self.params, self.dist)
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        self.optimizer.step()
        self.scheduler.step()
        total = {k: sum(p[k] for p in all_gather_object(sums)) for k in sums}
        n = max(total["n"], 1)
        sec = self.timed(t_start)
        rec = {"step": trainer.step + 1, "lr": self.scheduler.get_last_lr()[0], "loss": total["loss"] / n,
               "implicit_acc": total["acc"] / n, "diff": total["diff"] / n, "err_gap": total["gap"] / n,
               "err_gap_ref": total["gap_ref"] / n, "grad_norm": gnorm, "pairs": int(total["n"]), "time_update": sec,
               **self.clock()}
        return StepOutput(1, rec)

    def log_rows(self, trainer, stats: list[dict], elapsed: float) -> list[dict]:
        for rec in stats:
            logger.info("step %d: loss %.4f implicit acc %.3f diff %.3e e_w-e_l %.4f (ref %.4f) grad %.3g | %.2fs",
                        rec["step"], rec["loss"], rec["implicit_acc"], rec["diff"], rec["err_gap"],
                        rec["err_gap_ref"], rec["grad_norm"], rec["time_update"])
        return stats
