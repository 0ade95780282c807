"""GRPO post-training (paper Sec. 2.2-3.2) as a task of the training frame: one unit of work is one
iteration, a collection (``flowse.rl.collect``) then ``updates_per_iter`` LoRA updates
(``flowse.rl.update``); the held-out evaluation (``flowse.rl.evaluate``) runs at step 0 (the base
model), every ``train.eval_interval`` steps and at the end; each evaluation keeps that step's LoRA
weights (``lora/step_<n>.pt``) and logs the step the guarded export (``flowse.rl.export``) would
choose so far. Checkpoints hold the adapter, the optimizer, the scheduler and the iteration count
(the frame adds the RNG states). ``reward.std_normalize: frozen``: the stds measured on the first
collection are written to ``<exp_dir>/reward_std.json`` (rank 0, atomically; every rank measured
the same values) and read back by a resumed run, which never measures them again.

Counting: ``train.max_steps`` counts optimizer steps; an iteration takes ``updates_per_iter`` of
them (fewer when too few transitions were kept; none when every group had zero reward std).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from flowse.rl.collect import Collector
from flowse.rl.config import GRPOConfig
from flowse.rl.evaluate import HeldOutEval
from flowse.rl.export import choose_step, save_step_lora
from flowse.rl.lora import apply_lora, has_lora, load_lora_state_dict, lora_parameters, lora_state_dict
from flowse.rl.prompts import PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.rl.update import PolicyUpdate
from flowse.train.schedule import make_optimizer, make_scheduler
from flowse.train.task import StepOutput, TrainTask
from flowse.train.trainer import Trainer
from flowse.utils.distributed import DistInfo, all_gather_object
from flowse.utils.fileio import write_json
from flowse.utils.log import get_logger

logger = get_logger(__name__)

MAX_EMPTY_ITERATIONS = 20
FROZEN_STD_FILE = "reward_std.json"


class _Adapter:
    """The LoRA weights of a model as a checkpoint item."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict:
        return lora_state_dict(self.model)

    def load_state_dict(self, state: dict) -> None:
        load_lora_state_dict(self.model, state)


class _Progress:
    """Iterations done, and the current run of iterations without an update."""

    def __init__(self):
        self.iteration = self.empty = 0

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "empty_iterations": self.empty}

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.empty = int(state["iteration"]), int(state["empty_iterations"])


class GRPOTask(TrainTask):
    """GRPO of a ``FlowSE``-like model (``velocity``, ``normalize``, ``denormalize``, ``.dit``); LoRA is
    applied when the model has none. ``reward_fn`` follows ``flowse.rl.reward_fn.RewardFn``."""

    name = "grpo"
    postfix_keys = ("reward_mean", "kl")
    eval_at_start = True

    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo | None = None, eval_prompts: PromptSet | None = None, hop: int = 256,
                 sample_rate: int = 16000):
        self.cfg = cfg
        self.dist = dist or DistInfo()
        if not has_lora(model):
            apply_lora(model, cfg.lora)
        self.model = model.to(self.dist.device).eval()
        self.collector = Collector(self.model, cfg, reward_fn, prompts, self.dist, hop, sample_rate)
        self.params = lora_parameters(self.model)
        self.optimizer = make_optimizer(self.params, cfg.train)
        self.scheduler = make_scheduler(self.optimizer, cfg.train)
        self.update = PolicyUpdate(self.collector, self.params, self.optimizer, self.scheduler)
        self.held_out = HeldOutEval(self.model, cfg, reward_fn, eval_prompts, self.dist, hop, sample_rate) \
            if eval_prompts is not None else None
        self.progress = _Progress()
        self.last_collection = None

    def state_items(self) -> dict:
        return {"lora": _Adapter(self.model), "optimizer": self.optimizer, "scheduler": self.scheduler,
                "progress": self.progress}

    def begin(self, trainer: Trainer) -> None:
        """A resumed run with frozen normalisation reads the stds of its first collection back."""
        if self.cfg.reward.std_normalize != "frozen" or trainer.step == 0 or trainer.exp_dir is None:
            return
        path = os.path.join(trainer.exp_dir, FROZEN_STD_FILE)
        if not os.path.exists(path):
            raise RuntimeError(f"{path} not found: a run with reward.std_normalize frozen resumed at step "
                               f"{trainer.step} needs the stds measured on its first iteration (start afresh "
                               "with --resume false)")
        with open(path, encoding="utf-8") as f:
            stds = json.load(f)["stds"]
        self.collector.frozen_stds = {m: float(v) for m, v in stds.items()}

    def _store_frozen_stds(self, trainer: Trainer, iteration: int) -> None:
        if trainer.exp_dir is not None and self.dist.is_main:
            write_json(os.path.join(trainer.exp_dir, FROZEN_STD_FILE),
                       {"iteration": iteration, "stds": self.collector.frozen_stds})

    def policy_gradient(self, iteration: int) -> torch.Tensor:
        """The policy gradient of ``iteration``'s collection at the current parameters (``PolicyUpdate``)."""
        return self.update.policy_gradient(self.collector.collect(iteration))

    def train_step(self, trainer: Trainer) -> StepOutput:
        """Collect, score, update; the stats are the iteration's ``metrics.jsonl`` row."""
        it = self.progress.iteration
        ro = self.cfg.rollout
        t_start = time.perf_counter()
        unfrozen = self.collector.frozen_stds is None
        col = self.collector.collect(it)
        if unfrozen and self.collector.frozen_stds is not None:
            self._store_frozen_stds(trainer, it)
        self.last_collection = col
        t_up = time.perf_counter()
        taken, upd = self.update.run(col, self.cfg.train.max_steps - trainer.step)
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize()
        t_end = time.perf_counter()
        if upd["updates"] == 0:
            self.progress.empty += 1
            logger.warning("iteration %d: every group had zero reward std; no update (%d in a row)", it,
                           self.progress.empty)
            if self.progress.empty >= MAX_EMPTY_ITERATIONS:
                raise RuntimeError(f"{MAX_EMPTY_ITERATIONS} iterations without a usable group: the reward does "
                                   "not vary across candidates")
        else:
            self.progress.empty = 0
        times_all = all_gather_object(col.times)
        schedule = [self.collector.round_schedule(it, r) for r in range(ro.rounds_per_iter)]
        rec = {
            "iteration": it, "step": trainer.step + taken, "lr": self.scheduler.get_last_lr()[0],
            "reward_mean": float(col.rewards.mean()), "reward_std": float(col.rewards.std()),
            **{f"train/{k}": float(np.nanmean(v)) for k, v in col.metrics.items()},
            **{f"std/{m}": sd for m, (sd, _) in col.spread.items()},
            **{f"within/{m}": share for m, (_, share) in col.spread.items()},
            "zero_std_frac": col.adv.zero_std_fraction, "zero_std_groups": col.adv.num_zero_std,
            "groups": col.adv.num_groups, "group_reward_std": col.adv.group_std_mean,
            "candidates": int(len(col.rewards)),
            "nfe": [nfe for nfe, _ in schedule],
            "window": [window[0] + 1 for _, window in schedule],
            **upd,
            # per-rank wall times are maxed: the slowest rank sets the pace
            **{f"time_{k}": max(t[k] for t in times_all) for k in ("rollout", "vocoder", "reward")},
            "time_exchange": col.times["exchange"], "time_update": t_end - t_up, "time_total": t_end - t_start,
            "samples_per_s": len(col.rewards) / max(t_end - t_start, 1e-9),
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

    def evaluate(self, trainer: Trainer) -> dict:
        """The held-out row of this step (with per-utterance values), its LoRA kept for the export, and the
        step the guarded export would choose now (``guarded_step``)."""
        if self.held_out is None:
            return {}
        rec = self.held_out.evaluate(trainer.step)
        if trainer.exp_dir is not None and self.dist.is_main:
            save_step_lora(trainer.exp_dir, trainer.step, lora_state_dict(self.model))
        rows = [r for r in trainer.eval_history if r["step"] != trainer.step] + [{"step": trainer.step, **rec}]
        if any(r["step"] == 0 for r in rows):
            choice = choose_step(rows, self.collector.reward_fn, self.cfg.export)
            rec["guarded_step"] = choice["step"]
            logger.info("guarded export so far: step %d", choice["step"])
        return rec

    def plot(self, exp_dir: str, history: list[dict], eval_history: list[dict]) -> None:
        from flowse.rl.plot import plot_curves

        plot_curves(exp_dir, history, eval_history)
