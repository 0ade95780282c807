"""GRPO policy update (paper Eq. 9): transition list, micro-batch accumulation, all-reduce, optimizer steps.

The SDE transitions ``(round, candidate, window step)`` of the kept candidates are shuffled
(seeded) and split into exactly ``updates_per_iter`` optimizer steps. Eq. 9 weighs each
candidate by ``1 / |S|``, its own number of window steps: a candidate's loss is the mean over
its window steps, then candidates are averaged (a candidate of a round with 9 window steps
weighs as much as one with 6). So a transition of round r has weight ``1 / |S_r|``, and each
optimizer step normalises the weights of its transitions (over all ranks) to sum to 1; with
equal windows this is the plain mean over the step's transitions. Transitions are evaluated
in micro-batches of ``train_batch_size``. So the gradient accumulation is derived from the counts: one optimizer step per
``ceil(kept transitions / updates_per_iter / train_batch_size)`` micro-batches (paper:
720 candidates x 2 window steps / 4 updates / 12 = 30 micro-batches per step).

Distributed: gradients of the LoRA parameters are summed across ranks by one manual
``all_reduce`` per optimizer step (not DDP): every rank performs exactly ``updates_per_iter``
collectives per iteration whatever the number of micro-batches it got, so ranks that kept
fewer transitions (dropped groups) cannot deadlock, and the result is the single-process
gradient (tested within 1e-6 against one process). Before the first update the recomputed
log-probs equal the stored ones (``onpolicy_ratio_dev`` logs max |r - 1| of an iteration's
first optimizer step; it should be ~1e-6).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from flowse.rl.collect import Collection, Collector, Round, stream_seed
from flowse.rl.lora import reference_policy
from flowse.rl.loss import grpo_loss
from flowse.rl.posttrain import all_reduce_grads
from flowse.rl.rollout import Transitions, transition_log_prob
from flowse.sampling.sde import gaussian_kl_equal_std
from flowse.utils.distributed import all_gather_object

Transition = tuple[int, int, int]  # (round, candidate, window step)


def _loss_sums() -> dict:
    """Running sums of the per-transition loss terms of an iteration's updates."""
    return {"ratio": 0.0, "clip": 0.0, "kl": 0.0, "policy": 0.0, "n": 0}


class PolicyUpdate:
    """Eq. 9 on the collections of ``collector`` for the LoRA ``params`` with ``optimizer`` / ``scheduler``."""

    def __init__(self, collector: Collector, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler):
        self.collector, self.params, self.optimizer, self.scheduler = collector, params, optimizer, scheduler
        self.cfg, self.dist, self.device = collector.cfg, collector.dist, collector.device

    def transition_list(self, iteration: int, keep_all: np.ndarray) -> tuple[list[Transition], np.ndarray]:
        """The kept transitions of an iteration and their Eq. 9 weights ``1 / |S_r|`` (float64), the same on
        every rank."""
        ro = self.cfg.rollout
        n_cand = ro.prompts_per_round * ro.group_size
        gl: list[Transition] = []
        weights: list[float] = []
        for r in range(ro.rounds_per_iter):
            _, window = self.collector.round_schedule(iteration, r)
            for c in range(n_cand):
                if keep_all[r * n_cand + c]:
                    gl += [(r, c, j) for j in range(len(window))]
                    weights += [1.0 / len(window)] * len(window)
        return gl, np.asarray(weights, dtype=np.float64)

    def accumulate(self, own: list[Transition], own_w: list[float], mine: dict[int, Round], adv_all: np.ndarray,
                   sums: dict | None = None) -> tuple[float, float, float]:
        """Backward of Eq. 9 over this rank's transitions ``own`` with their weights ``own_w`` (the update's
        weights over all ranks sum to 1).

        Adds the gradient to ``.grad`` (summed over ranks) and, when given, the loss terms to ``sums``
        (unweighted, per transition); returns (min ratio, max ratio, max |ratio - 1|).
        """
        ro, tc = self.cfg.rollout, self.cfg.train
        velocity, model = self.collector.velocity, self.collector.model
        sums = sums if sums is not None else _loss_sums()
        n_cand = ro.prompts_per_round * ro.group_size
        rmin, rmax, dev = math.inf, -math.inf, 0.0
        for s in range(0, len(own), tc.train_batch_size):
            items = own[s : s + tc.train_batch_size]
            w = torch.tensor(own_w[s : s + tc.train_batch_size], dtype=torch.float32, device=self.device)
            # rollout transitions are stored step-major: row = j * candidates + c
            tr = Transitions.cat([mine[r].tr.index(torch.tensor([j * n_cand + c], device=self.device))
                                  for r, c, j in items])
            cond = torch.cat([mine[r].cond[c : c + 1] for r, c, _ in items])
            mask = torch.cat([mine[r].mask[c : c + 1] for r, c, _ in items])
            adv = torch.tensor([adv_all[r * n_cand + c] for r, c, _ in items], dtype=torch.float32,
                               device=self.device)
            logp, mean, std = transition_log_prob(velocity, tr, cond, mask, ro.noise_level)
            kl = None
            if tc.beta > 0:
                with torch.no_grad(), reference_policy(model):
                    _, mean_ref, _ = transition_log_prob(velocity, tr, cond, mask, ro.noise_level)
                kl = gaussian_kl_equal_std(mean, mean_ref, std, mask)
            terms = grpo_loss(logp, tr.log_prob, adv, tc.clip_range, kl, tc.beta)
            (terms.loss * w).sum().backward()
            sums["ratio"] += float(terms.ratio.sum())
            sums["clip"] += float(terms.clipped.float().sum())
            sums["kl"] += float(terms.kl.sum())
            sums["policy"] += float(terms.policy.sum())
            sums["n"] += len(items)
            rmin, rmax = min(rmin, float(terms.ratio.min())), max(rmax, float(terms.ratio.max()))
            dev = max(dev, float((terms.ratio - 1).abs().max()))
        all_reduce_grads(self.params, self.dist)
        return rmin, rmax, dev

    def run(self, col: Collection, steps_left: int) -> tuple[int, dict[str, float]]:
        """Exactly ``updates_per_iter`` optimizer steps on ``col`` (fewer when too few transitions were kept
        or only ``steps_left`` remain); returns (optimizer steps taken, logged stats)."""
        tc = self.cfg.train
        gl, weights = self.transition_list(col.iteration, col.adv.keep)
        n_updates = min(tc.updates_per_iter, len(gl))
        stats = {"transitions": len(gl), "updates": n_updates}
        if n_updates == 0:
            return 0, stats
        perm = np.random.default_rng(stream_seed(tc.seed, 5, col.iteration)).permutation(len(gl))
        chunks = np.array_split(perm, n_updates)
        mine = {rd.index: rd for rd in col.rounds}
        sums = _loss_sums()
        rmin, rmax, onpolicy_dev = math.inf, -math.inf, 0.0
        taken = 0
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        for u, chunk in enumerate(chunks):
            if taken >= steps_left:
                break
            own = [i for i in chunk if gl[i][0] in mine]
            total = float(weights[chunk].sum())
            self.optimizer.zero_grad(set_to_none=True)
            lo, hi, dev = self.accumulate([gl[i] for i in own], [weights[i] / total for i in own], mine,
                                          col.adv.values, sums)
            rmin, rmax = min(rmin, lo), max(rmax, hi)
            if u == 0:
                onpolicy_dev = dev
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.optimizer.step()
            self.scheduler.step()
            taken += 1
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
        return taken, stats

    def policy_gradient(self, col: Collection) -> torch.Tensor:
        """The gradient of Eq. 9 over ALL kept transitions of ``col`` at the current parameters, flattened
        over the LoRA parameters ``[P]`` (summed over ranks); no optimizer step.

        On-policy the ratio is 1 and the KL to the reference is 0 at the reference, so this is the
        plain policy-gradient estimate ``-mean(A grad log p)`` that one update of a whole iteration
        would follow. ``flowse.rl.snr`` compares such estimates of independent iterations.
        """
        gl, weights = self.transition_list(col.iteration, col.adv.keep)
        for p in self.params:
            p.grad = None
        if not gl:
            return torch.zeros(sum(p.numel() for p in self.params))
        mine = {rd.index: rd for rd in col.rounds}
        own = [i for i, t in enumerate(gl) if t[0] in mine]
        total = float(weights.sum())
        self.accumulate([gl[i] for i in own], [weights[i] / total for i in own], mine, col.adv.values)
        grad = torch.cat([p.grad.detach().flatten() for p in self.params]).float().cpu()
        for p in self.params:
            p.grad = None
        return grad
