"""The online GRPO loop (paper Sec. 2.2-3.2): collect rollouts, score them, update LoRA.

One iteration:
1. prompts: ``rounds_per_iter x prompts_per_round`` training utterances, drawn from a
   per-epoch permutation of the prompt set (seeded: the same on every rank), each
   randomly cropped to ``crop_seconds`` and padded to it;
2. rollouts: per round one batched call of the mixed ODE-SDE sampler for all its
   prompts' G candidates (prompt-major order), nfe and window start drawn per round;
   the initial and SDE noise of a prompt's candidates come from a per-prompt seed
   ``(seed, iteration, global prompt index)``;
3. rewards: every candidate's metrics (vocoder + metric models), then the rewards from
   the metrics of all candidates (gathered across ranks), advantages per prompt (Eq. 8),
   zero-std groups dropped;
4. update: the SDE transitions of the kept candidates are shuffled (seeded) and split into
   exactly ``updates_per_iter`` optimizer steps; each step averages Eq. 9 over its
   transitions, evaluated in micro-batches of ``train_batch_size`` transitions whose
   per-transition losses are summed with weight 1 / (transitions of the step over all ranks).
   So the gradient accumulation is derived from the counts: one optimizer step per
   ``ceil(kept transitions / updates_per_iter / train_batch_size)`` micro-batches (paper:
   720 candidates x 2 window steps / 4 updates / 12 = 30 micro-batches per step).

Distributed (torchrun): rounds are assigned to ranks round-robin (round r -> rank r mod
world), so a prompt's G candidates and their advantage live on one rank and are the same
whatever the number of ranks. Gradients of the LoRA parameters are summed across ranks by
one manual ``all_reduce`` per optimizer step (not DDP): every rank performs exactly
``updates_per_iter`` collectives per iteration whatever the number of micro-batches it got,
so ranks that kept fewer transitions (dropped groups) cannot deadlock, and the result is
the single-process gradient (tested within 1e-6 against one process).

The network runs in eval mode (dropout off) for rollouts and log-probs alike, with the
same CFG weight, so that before the first update the recomputed log-probs equal the
stored ones (the ratio stat ``onpolicy_ratio_dev`` logs max |r - 1| of each iteration's
first optimizer step; it should be ~1e-6).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist

from flowse.rl.advantages import group_advantages
from flowse.rl.config import GRPOConfig
from flowse.rl.lora import (
    apply_lora, has_lora, load_lora_state_dict, lora_parameters, lora_state_dict, reference_policy,
)
from flowse.rl.loss import grpo_loss
from flowse.rl.prompts import PromptBatch, PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.rl.rollout import Transitions, mixed_rollout, transition_log_prob, window_steps
from flowse.sampling.ode import ode_sample
from flowse.sampling.sde import gaussian_kl_equal_std
from flowse.utils.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from flowse.utils.distributed import DistInfo, all_gather_object
from flowse.utils.fileio import atomic_open, read_jsonl
from flowse.utils.log import get_logger

logger = get_logger(__name__)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (independent streams per (seed, iteration, item))."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def linear_schedule(max_steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup))

    return f


@dataclass
class _Round:
    """One rollout round held by this rank."""

    index: int
    nfe: int
    window: list[int]
    cond: torch.Tensor  # [N, T, F] normalised noisy mel per candidate
    mask: torch.Tensor  # [N, T]
    tr: Transitions
    metrics: dict[str, np.ndarray]
    x1: torch.Tensor  # [N, T, F] normalised final estimates


def _loss_sums() -> dict:
    """Running sums of the per-transition loss terms of an iteration's updates."""
    return {"ratio": 0.0, "clip": 0.0, "kl": 0.0, "policy": 0.0, "n": 0}


class GRPOTrainer:
    """GRPO post-training of a ``FlowSE``-like model (``velocity``, ``normalize``, ``denormalize``, ``.dit``).

    ``reward_fn`` follows ``flowse.rl.reward_fn.RewardFn``; ``exp_dir`` None keeps
    everything in memory (tests). Call ``train()`` or ``run_iteration()``.
    """

    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo | None = None, exp_dir: str | None = None, eval_prompts: PromptSet | None = None,
                 hop: int = 256, sample_rate: int = 16000):
        self.cfg = cfg
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        if not has_lora(model):
            apply_lora(model, cfg.lora)
        self.model = model.to(self.device).eval()
        self.reward_fn = reward_fn
        self.prompts = prompts
        self.eval_prompts = eval_prompts
        self.exp_dir = exp_dir
        self.hop = hop
        self.crop_frames = max(1, int(round(cfg.rollout.crop_seconds * sample_rate / hop)))
        self.eval_crop = int(round(cfg.eval.max_seconds * sample_rate / hop)) if cfg.eval.max_seconds else 0
        self.params = lora_parameters(self.model)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps,
                                           weight_decay=t.weight_decay)
        sched = linear_schedule(cfg.max_steps, t.warmup_steps) if t.lr_schedule == "linear" else (lambda s: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, sched)
        self.step = 0
        self.iteration = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self._empty_iters = 0
        self._bad_eval: set[int] = set()
        self._bad_prompts: set[int] = set()
        self._good_prompts: set[int] = set()

    # ------------------------------------------------------------------ network
    def velocity(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The policy's guided velocity (same CFG form in rollouts and training), fp32 out."""
        dtype = _DTYPES[self.cfg.rollout.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.model.velocity(x, cond, t, mask, self.cfg.rollout.cfg_strength).float()

    # ------------------------------------------------------------------ schedule
    @property
    def prompts_per_iter(self) -> int:
        return self.cfg.rollout.rounds_per_iter * self.cfg.rollout.prompts_per_round

    def prompt_indices(self, iteration: int) -> list[int]:
        """Global prompt indices of an iteration: consecutive slices of seeded per-epoch permutations."""
        n = len(self.prompts)
        start = iteration * self.prompts_per_iter
        out: list[int] = []
        pos = start
        while len(out) < self.prompts_per_iter:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng(_seed(self.cfg.seed, 1, epoch)).permutation(n)
            take = perm[off : off + self.prompts_per_iter - len(out)]
            out += take.tolist()
            pos += len(take)
        return out

    def round_schedule(self, iteration: int, r: int) -> tuple[int, list[int]]:
        """(nfe, 0-based window steps) of round ``r``: nfe and S_min drawn uniformly (inclusive ranges)."""
        ro = self.cfg.rollout
        rng = np.random.default_rng(_seed(self.cfg.seed, 2, iteration, r))
        nfe = int(rng.integers(ro.nfe_range[0], ro.nfe_range[1] + 1))
        start = int(rng.integers(ro.window_start_range[0], min(ro.window_start_range[1], nfe) + 1))
        return nfe, window_steps(nfe, start, ro.window_size)

    def my_rounds(self) -> list[int]:
        return [r for r in range(self.cfg.rollout.rounds_per_iter) if r % self.dist.world_size == self.dist.rank]

    # ------------------------------------------------------------------ rollouts
    def _load_prompts(self, iteration: int, gidx: list[int]) -> PromptBatch:
        """The prompts of global indices ``gidx``; a bad utterance is logged and replaced by the next good one."""
        all_idx = self.prompt_indices(iteration)
        indices = [all_idx[g] for g in gidx]
        rngs = [np.random.default_rng(_seed(self.cfg.seed, 3, iteration, g)) for g in gidx]
        for j, i in enumerate(indices):
            for _ in range(len(self.prompts)):
                if i in self._good_prompts:
                    break
                if i not in self._bad_prompts:
                    try:
                        self.prompts.get(i, 0)
                        self._good_prompts.add(i)
                        break
                    except ValueError as e:
                        logger.warning("skipping prompt %s: %s", self.prompts.keys[i], e)
                        self._bad_prompts.add(i)
                i = (i + 1) % len(self.prompts)
            else:
                raise RuntimeError(f"{self.prompts.name}: no usable prompt")
            indices[j] = i
        return self.prompts.batch(indices, self.crop_frames, rngs, pad_to=self.crop_frames)

    @torch.no_grad()
    def rollout_round(self, iteration: int, r: int) -> tuple[_Round, PromptBatch, dict[str, float]]:
        ro = self.cfg.rollout
        p, g = ro.prompts_per_round, ro.group_size
        gidx = list(range(r * p, (r + 1) * p))
        nfe, window = self.round_schedule(iteration, r)
        batch = self._load_prompts(iteration, gidx)
        t0 = time.perf_counter()
        mask = batch.mask.to(self.device)
        cond = self.model.normalize(batch.mel.to(self.device), "noisy") * mask[..., None]
        _, t, f = cond.shape
        x0, eps = [], []
        for gi in gidx:
            gen = torch.Generator().manual_seed(_seed(self.cfg.seed, 4, iteration, gi))
            x0.append(torch.randn(1, t, f, generator=gen).expand(g, t, f) if ro.same_init_noise
                      else torch.randn(g, t, f, generator=gen))
            eps.append(torch.randn(len(window), g, t, f, generator=gen))
        x0 = torch.cat(x0).to(self.device)
        eps = torch.cat(eps, dim=1).to(self.device)
        cond_g = cond.repeat_interleave(g, 0)
        mask_g = mask.repeat_interleave(g, 0)
        ro_out = mixed_rollout(self.velocity, cond_g, mask_g, nfe, window, ro.noise_level, x0, eps)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        rep = batch.repeat(g)
        mel = self.model.denormalize(ro_out.x1) * mask_g[..., None]
        metrics = self.reward_fn.metrics(mel, rep)
        t2 = time.perf_counter()
        times = {"rollout": t1 - t0, "score": t2 - t1, **getattr(self.reward_fn, "last_times", {})}
        return _Round(r, nfe, window, cond_g, mask_g, ro_out.transitions, metrics, ro_out.x1), rep, times

    # ------------------------------------------------------------------ update
    def _all_reduce_grads(self) -> None:
        if self.dist.world_size == 1 or not torch_dist.is_initialized():
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g_.flatten() for g_ in grads])
        torch_dist.all_reduce(flat)
        off = 0
        for p, g_ in zip(self.params, grads):
            n = g_.numel()
            p.grad = flat[off : off + n].view_as(p).clone()
            off += n

    def _transition_list(self, iteration: int, keep_all: np.ndarray) -> list[tuple[int, int, int]]:
        """The kept transitions ``(round, candidate, window step)`` of an iteration, the same on every rank."""
        ro = self.cfg.rollout
        n_cand = ro.prompts_per_round * ro.group_size
        gl: list[tuple[int, int, int]] = []
        for r in range(ro.rounds_per_iter):
            _, window = self.round_schedule(iteration, r)
            for c in range(n_cand):
                if keep_all[r * n_cand + c]:
                    gl += [(r, c, j) for j in range(len(window))]
        return gl

    def _accumulate(self, own: list[tuple[int, int, int]], mine: dict[int, _Round], adv_all: np.ndarray, n_u: int,
                    sums: dict | None = None) -> tuple[float, float, float]:
        """Backward of Eq. 9 over this rank's transitions ``own`` of an update of ``n_u`` (all ranks) transitions.

        Adds the gradient (weight ``1 / n_u`` per transition) to ``.grad`` (summed over ranks) and, when
        given, the loss terms to ``sums``; returns (min ratio, max ratio, max |ratio - 1|).
        """
        ro, tc = self.cfg.rollout, self.cfg.train
        sums = sums if sums is not None else _loss_sums()
        n_cand = ro.prompts_per_round * ro.group_size
        rmin, rmax, dev = math.inf, -math.inf, 0.0
        for s in range(0, len(own), tc.train_batch_size):
            items = own[s : s + tc.train_batch_size]
            # rollout transitions are stored step-major: row = j * candidates + c
            tr = Transitions.cat([mine[r].tr.index(torch.tensor([j * n_cand + c], device=self.device))
                                  for r, c, j in items])
            cond = torch.cat([mine[r].cond[c : c + 1] for r, c, _ in items])
            mask = torch.cat([mine[r].mask[c : c + 1] for r, c, _ in items])
            adv = torch.tensor([adv_all[r * n_cand + c] for r, c, _ in items], dtype=torch.float32,
                               device=self.device)
            logp, mean, std = transition_log_prob(self.velocity, tr, cond, mask, ro.noise_level)
            kl = None
            if tc.beta > 0:
                with torch.no_grad(), reference_policy(self.model):
                    _, mean_ref, _ = transition_log_prob(self.velocity, tr, cond, mask, ro.noise_level)
                kl = gaussian_kl_equal_std(mean, mean_ref, std, mask)
            terms = grpo_loss(logp, tr.log_prob, adv, tc.clip_range, kl, tc.beta)
            (terms.loss.sum() / n_u).backward()
            sums["ratio"] += float(terms.ratio.sum())
            sums["clip"] += float(terms.clipped.float().sum())
            sums["kl"] += float(terms.kl.sum())
            sums["policy"] += float(terms.policy.sum())
            sums["n"] += len(items)
            rmin, rmax = min(rmin, float(terms.ratio.min())), max(rmax, float(terms.ratio.max()))
            dev = max(dev, float((terms.ratio - 1).abs().max()))
        self._all_reduce_grads()
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return rmin, rmax, dev

    def _policy_update(self, rounds: list[_Round], adv_all: np.ndarray, keep_all: np.ndarray,
                       iteration: int) -> dict[str, float]:
        """Exactly ``updates_per_iter`` optimizer steps (fewer only when too few transitions were kept)."""
        tc = self.cfg.train
        gl = self._transition_list(iteration, keep_all)
        n_updates = min(tc.updates_per_iter, len(gl))
        stats = {"transitions": len(gl), "updates": n_updates}
        if n_updates == 0:
            return stats
        perm = np.random.default_rng(_seed(self.cfg.seed, 5, iteration)).permutation(len(gl))
        chunks = np.array_split(perm, n_updates)
        mine = {rd.index: rd for rd in rounds}
        sums = _loss_sums()
        rmin, rmax, onpolicy_dev = math.inf, -math.inf, 0.0
        for u, chunk in enumerate(chunks):
            if self.step >= self.cfg.max_steps:
                break
            own = [gl[i] for i in chunk if gl[i][0] in mine]
            self.optimizer.zero_grad(set_to_none=True)
            lo, hi, dev = self._accumulate(own, mine, adv_all, len(chunk), sums)
            rmin, rmax = min(rmin, lo), max(rmax, hi)
            if u == 0:
                onpolicy_dev = dev
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, tc.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            stats["grad_norm"] = float(gnorm)
        parts = all_gather_object((sums, rmin, rmax, onpolicy_dev))
        n = sum(p_[0]["n"] for p_ in parts)
        if n:
            stats.update({
                "ratio_mean": sum(p_[0]["ratio"] for p_ in parts) / n,
                "ratio_min": min(p_[1] for p_ in parts), "ratio_max": max(p_[2] for p_ in parts),
                "clip_frac": sum(p_[0]["clip"] for p_ in parts) / n, "kl": sum(p_[0]["kl"] for p_ in parts) / n,
                "policy_loss": sum(p_[0]["policy"] for p_ in parts) / n,
                "onpolicy_ratio_dev": max(p_[3] for p_ in parts),
            })
        return stats

    def policy_gradient(self, iteration: int) -> torch.Tensor:
        """The gradient of Eq. 9 over ALL kept transitions of ``iteration``'s collection, at the current
        parameters, flattened over the LoRA parameters ``[P]`` (summed over ranks); no optimizer step.

        On-policy the ratio is 1 and the KL to the reference is 0 at the reference, so this is the
        plain policy-gradient estimate ``-mean(A grad log p)`` that one update of a whole iteration
        would follow. ``flowse.rl.snr`` compares such estimates of independent iterations.
        """
        rounds, _, _, adv, _ = self._collect(iteration)
        gl = self._transition_list(iteration, adv.keep)
        for p in self.params:
            p.grad = None
        if not gl:
            return torch.zeros(sum(p.numel() for p in self.params))
        mine = {rd.index: rd for rd in rounds}
        self._accumulate([t for t in gl if t[0] in mine], mine, adv.values, len(gl))
        grad = torch.cat([p.grad.detach().flatten() for p in self.params]).float().cpu()
        for p in self.params:
            p.grad = None
        return grad

    # ------------------------------------------------------------------ iteration
    def _collect(self, it: int):
        """Rollouts + metrics of this rank's rounds, rewards and advantages over all ranks' candidates.

        Returns ``(rounds, metrics [all candidates], rewards, Advantages, times)``; ``times`` holds this
        rank's rollout / vocoder / reward / score seconds and the exchange (gather + advantages).
        """
        ro = self.cfg.rollout
        rounds: list[_Round] = []
        times = {"rollout": 0.0, "vocoder": 0.0, "reward": 0.0, "score": 0.0}
        for r in self.my_rounds():
            rd, _, tm = self.rollout_round(it, r)
            rounds.append(rd)
            for k, v in tm.items():
                times[k] = times.get(k, 0.0) + v
        t0 = time.perf_counter()
        gathered = {}
        for part in all_gather_object([(rd.index, rd.metrics) for rd in rounds]):
            gathered.update(dict(part))
        names = list(gathered[0].keys())
        metrics = {k: np.concatenate([gathered[r][k] for r in range(ro.rounds_per_iter)]) for k in names}
        rewards = self.reward_fn.reward(metrics)
        groups = np.repeat(np.arange(ro.rounds_per_iter * ro.prompts_per_round), ro.group_size)
        adv = group_advantages(rewards, groups, self.cfg.train.adv_clip, self.cfg.train.adv_eps)
        times["exchange"] = time.perf_counter() - t0
        return rounds, metrics, rewards, adv, times

    def run_iteration(self) -> dict:
        """Collect, score, update; returns (and records) the iteration's logged values."""
        it = self.iteration
        ro = self.cfg.rollout
        t_start = time.perf_counter()
        rounds, metrics, rewards, adv, times = self._collect(it)
        self.last_advantages = adv
        self.last_rewards = rewards
        t_up = time.perf_counter()
        upd = self._policy_update(rounds, adv.values, adv.keep, it)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        if upd["updates"] == 0:
            self._empty_iters += 1
            logger.warning("iteration %d: every group had zero reward std; no update (%d in a row)", it,
                           self._empty_iters)
            if self._empty_iters >= 20:
                raise RuntimeError("20 iterations without a usable group: the reward does not vary across candidates")
        else:
            self._empty_iters = 0
        times_all = all_gather_object(times)
        rec = {
            "iteration": it, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            **{f"train/{k}": float(np.nanmean(v)) for k, v in metrics.items()},
            "zero_std_frac": adv.zero_std_fraction, "zero_std_groups": adv.num_zero_std, "groups": adv.num_groups,
            "group_reward_std": adv.group_std_mean,
            "candidates": int(len(rewards)),
            "nfe": [self.round_schedule(it, r)[0] for r in range(ro.rounds_per_iter)],
            "window": [self.round_schedule(it, r)[1][0] + 1 for r in range(ro.rounds_per_iter)],
            **upd,
            # per-rank wall times are maxed: the slowest rank sets the pace
            **{f"time_{k}": max(t[k] for t in times_all) for k in ("rollout", "vocoder", "reward")},
            "time_exchange": times["exchange"], "time_update": t_end - t_up, "time_total": t_end - t_start,
            "samples_per_s": len(rewards) / max(t_end - t_start, 1e-9),
        }
        self.iteration += 1
        self.history.append(rec)
        return rec

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """ODE sampling (``eval.nfe`` steps, fixed noise per utterance) of the held-out prompts; metric means."""
        if self.eval_prompts is None:
            return {}
        ec = self.cfg.eval
        n = len(self.eval_prompts) if not ec.max_utts else min(ec.max_utts, len(self.eval_prompts))
        mine = [i for i in range(n) if i % self.dist.world_size == self.dist.rank]
        # length-sorted batches (less padding); the result per utterance does not depend on batching
        lengths = {i: self._eval_len(i) for i in mine}
        mine.sort(key=lambda i: lengths[i])
        per_utt: dict[int, dict[str, float]] = {}
        t0 = time.perf_counter()
        for s in range(0, len(mine), ec.batch_size):
            idx = [i for i in mine[s : s + ec.batch_size] if i not in self._bad_eval]
            try:
                batch = self.eval_prompts.batch(idx, self.eval_crop)
            except ValueError:  # a bad held-out utterance: logged once and left out of every evaluation
                for i in idx:
                    try:
                        self.eval_prompts.get(i, self.eval_crop)
                    except ValueError as e:
                        logger.warning("evaluation: skipping %s: %s", self.eval_prompts.keys[i], e)
                        self._bad_eval.add(i)
                idx = [i for i in idx if i not in self._bad_eval]
                if not idx:
                    continue
                batch = self.eval_prompts.batch(idx, self.eval_crop)
            mask = batch.mask.to(self.device)
            cond = self.model.normalize(batch.mel.to(self.device), "noisy") * mask[..., None]
            x0 = torch.stack([torch.randn(cond.shape[1:], generator=torch.Generator().manual_seed(_seed(ec.seed, i)))
                              for i in idx]).to(self.device)
            x1 = ode_sample(self.model, cond, mask, ec.nfe, self.cfg.rollout.cfg_strength, x0=x0)
            mel = self.model.denormalize(x1) * mask[..., None]
            m = self.reward_fn.metrics(mel, batch)
            for j, i in enumerate(idx):
                per_utt[i] = {k: float(v[j]) for k, v in m.items()}
        allm: dict[int, dict[str, float]] = {}
        for part in all_gather_object(per_utt):
            allm.update(part)
        order = sorted(allm)
        names = list(allm[order[0]].keys()) if order else []
        metrics = {k: np.array([allm[i][k] for i in order]) for k in names}
        rec = {"step": self.step, "utts": len(order), **{f"eval/{k}": float(np.nanmean(v)) for k, v in metrics.items()}}
        rec["time_eval"] = time.perf_counter() - t0
        self.eval_history.append(rec)
        return rec

    def _eval_len(self, i: int) -> int:
        mel = self.eval_prompts.mels[self.eval_prompts.keys[i]]
        n = int(np.asarray(mel).shape[0])
        return min(n, self.eval_crop) if self.eval_crop else n

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"step": self.step, "iteration": self.iteration, "lora": lora_state_dict(self.model),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        load_lora_state_dict(self.model, state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.iteration = int(state["step"]), int(state["iteration"])

    def save(self) -> None:
        if self.exp_dir is None or not self.dist.is_main:
            return
        save_checkpoint(self.state_dict(), checkpoint_path(self.exp_dir, self.step))
        prune_checkpoints(self.exp_dir, self.cfg.keep_checkpoints)

    def resume(self) -> bool:
        """Load the newest checkpoint of ``exp_dir`` (if any) and the logs up to it."""
        if self.exp_dir is None:
            return False
        path = latest_checkpoint(self.exp_dir)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path, self.device))
        self.history = [r for r in read_jsonl(os.path.join(self.exp_dir, "metrics.jsonl")) if r["iteration"] < self.iteration]
        self.eval_history = [r for r in read_jsonl(os.path.join(self.exp_dir, "eval.jsonl")) if r["step"] <= self.step]
        self._write_logs()
        logger.info("resumed from %s (step %d, iteration %d)", path, self.step, self.iteration)
        return True

    def _write_logs(self) -> None:
        if self.exp_dir is None or not self.dist.is_main:
            return
        for name, rows in (("metrics.jsonl", self.history), ("eval.jsonl", self.eval_history)):
            with atomic_open(os.path.join(self.exp_dir, name)) as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")

    # ------------------------------------------------------------------ loop
    def train(self, progress: bool = True) -> None:
        """Iterate until ``max_steps`` optimizer steps; evaluate, log, checkpoint, plot along the way."""
        from flowse.rl.plot import plot_curves

        cfg = self.cfg
        bar = None
        if progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="grpo", unit="step", dynamic_ncols=True)
        self._write_logs()  # a fresh run truncates old logs; a resumed one keeps those up to its checkpoint
        if self.eval_prompts is not None and not any(r["step"] == self.step for r in self.eval_history):
            self._log_eval(self.evaluate())
        while self.step < cfg.max_steps:
            before = self.step
            rec = self.run_iteration()
            self._log_iteration(rec)
            if bar is not None:
                bar.update(self.step - before)
                bar.set_postfix(reward=f"{rec['reward_mean']:.4f}", kl=f"{rec.get('kl', 0.0):.2e}")
            done = self.step >= cfg.max_steps
            if self.eval_prompts is not None and cfg.eval.every and (self.step // cfg.eval.every > before // cfg.eval.every) and not done:
                self._log_eval(self.evaluate())
            if done or self.step // cfg.save_every > before // cfg.save_every:
                self.save()
            if self.exp_dir and self.dist.is_main and (done or self.iteration % cfg.plot_every == 0):
                self._write_logs()
                plot_curves(self.exp_dir, self.history, self.eval_history)
        if self.eval_prompts is not None and not any(r["step"] == self.step for r in self.eval_history):
            self._log_eval(self.evaluate())
        if bar is not None:
            bar.close()
        self._write_logs()
        if self.exp_dir and self.dist.is_main:
            plot_curves(self.exp_dir, self.history, self.eval_history)

    def _log_iteration(self, rec: dict) -> None:
        metric_txt = " ".join(f"{k[6:]}={v:.4f}" for k, v in rec.items() if k.startswith("train/"))
        logger.info(
            "iter %d step %d: reward %.4f +- %.4f | %s | kl %.3e ratio %.6f [%.6f, %.6f] clip %.3f onpolicy|r-1| %.1e "
            "zero-std groups %d/%d | time rollout %.1fs vocoder %.1fs reward %.1fs update %.1fs (%.2f samples/s)",
            rec["iteration"], rec["step"], rec["reward_mean"], rec["reward_std"], metric_txt, rec.get("kl", float("nan")),
            rec.get("ratio_mean", float("nan")), rec.get("ratio_min", float("nan")), rec.get("ratio_max", float("nan")),
            rec.get("clip_frac", float("nan")), rec.get("onpolicy_ratio_dev", float("nan")), rec["zero_std_groups"],
            rec["groups"], rec["time_rollout"], rec["time_vocoder"], rec["time_reward"], rec["time_update"],
            rec["samples_per_s"],
        )
        if self.exp_dir and self.dist.is_main:
            with open(os.path.join(self.exp_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def _log_eval(self, rec: dict) -> None:
        if not rec:
            return
        logger.info("eval at step %d (%d utts, ODE %d steps): %s", rec["step"], rec["utts"], self.cfg.eval.nfe,
                    " ".join(f"{k[5:]}={v:.4f}" for k, v in rec.items() if k.startswith("eval/")))
        if self.exp_dir and self.dist.is_main:
            with open(os.path.join(self.exp_dir, "eval.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

