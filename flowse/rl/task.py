"""GRPO post-training (paper Sec. 2.2-3.2) as a post-training task (``flowse.rl.posttrain``): one
unit of work is one iteration, a collection (``flowse.rl.collect``: mixed ODE-SDE rollouts) then
``updates_per_iter`` LoRA updates (``flowse.rl.update``); the base task holds LoRA, the optimizer,
the held-out evaluation at step 0 / every ``train.eval_interval`` steps / the end, the guarded
export's bookkeeping and the frozen reward stds.

Counting: ``train.max_steps`` counts optimizer steps; an iteration takes ``updates_per_iter`` of
them (fewer when too few transitions were kept; none when every group had zero reward std).
"""
from __future__ import annotations

import time

import torch

from flowse.rl.config import GRPOConfig
from flowse.rl.posttrain import PostTrainTask, collection_stats
from flowse.rl.prompts import PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.rl.update import PolicyUpdate
from flowse.train.task import StepOutput
from flowse.train.trainer import Trainer
from flowse.utils.distributed import DistInfo
from flowse.utils.log import get_logger

logger = get_logger(__name__)

MAX_EMPTY_ITERATIONS = 20


class GRPOTask(PostTrainTask):
    """GRPO (Eq. 9) of a ``FlowSE``-like model; see ``PostTrainTask`` for the shared parts."""

    name = "grpo"
    postfix_keys = ("reward_mean", "kl")

    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo | None = None, eval_prompts: PromptSet | None = None, hop: int = 256,
                 sample_rate: int = 16000):
        super().__init__(model, cfg, reward_fn, prompts, dist, eval_prompts, hop, sample_rate)
        self.update = PolicyUpdate(self.collector, self.params, self.optimizer, self.scheduler)

    def policy_gradient(self, iteration: int) -> torch.Tensor:
        """The policy gradient of ``iteration``'s collection at the current parameters (``PolicyUpdate``)."""
        return self.update.policy_gradient(self.collector.collect(iteration))

    def train_step(self, trainer: Trainer) -> StepOutput:
        """Collect, score, update; the stats are the iteration's ``metrics.jsonl`` row."""
        it = self.progress.iteration
        ro = self.cfg.rollout
        t_start = self.start_clock()
        col = self.collect(trainer, it)
        t_up = time.perf_counter()
        taken, upd = self.update.run(col, self.cfg.train.max_steps - trainer.step)
        total = self.timed(t_start)
        t_end = t_start + total
        if upd["updates"] == 0:
            self.progress.empty += 1
            logger.warning("iteration %d: every group had zero reward std; no update (%d in a row)", it,
                           self.progress.empty)
            if self.progress.empty >= MAX_EMPTY_ITERATIONS:
                raise RuntimeError(f"{MAX_EMPTY_ITERATIONS} iterations without a usable group: the reward does "
                                   "not vary across candidates")
        else:
            self.progress.empty = 0
        schedule = [self.collector.round_schedule(it, r) for r in range(ro.rounds_per_iter)]
        rec = {
            "iteration": it, "step": trainer.step + taken, "lr": self.scheduler.get_last_lr()[0],
            **collection_stats(col),
            "nfe": [nfe for nfe, _ in schedule],
            "window": [window[0] + 1 for _, window in schedule],
            **upd,
            "time_update": t_end - t_up, "time_total": t_end - t_start,
            "samples_per_s": len(col.rewards) / max(t_end - t_start, 1e-9),
            **self.clock(),
        }
        self.progress.iteration += 1
        return StepOutput(taken, rec)

    def log_rows(self, trainer: Trainer, stats: list[dict], elapsed: float) -> list[dict]:
        for rec in stats:
            metric_txt = " ".join(f"{k[6:]}={v:.4f}" for k, v in rec.items() if k.startswith("train/"))
            spread_txt = " ".join(f"{k[4:]} {v:.4g} ({100 * rec.get('within/' + k[4:], float('nan')):.0f}% within)"
                                  for k, v in rec.items() if k.startswith("std/"))
            logger.info(
                "iter %d step %d: reward %.4f +- %.4f | %s | std %s | kl %.3e ratio %.6f [%.6f, %.6f] clip %.3f "
                "onpolicy|r-1| %.1e zero-std groups %d/%d | time rollout %.1fs vocoder %.1fs reward %.1fs "
                "update %.1fs (%.2f samples/s)",
                rec["iteration"], rec["step"], rec["reward_mean"], rec["reward_std"], metric_txt, spread_txt,
                rec.get("kl", float("nan")), rec.get("ratio_mean", float("nan")), rec.get("ratio_min", float("nan")),
                rec.get("ratio_max", float("nan")), rec.get("clip_frac", float("nan")),
                rec.get("onpolicy_ratio_dev", float("nan")), rec["zero_std_groups"], rec["groups"],
                rec["time_rollout"], rec["time_vocoder"], rec["time_reward"], rec["time_update"], rec["samples_per_s"])
        return stats
