"""What every post-training method shares, as a base ``TrainTask`` of the training frame.

A method (GRPO ``flowse.rl.task``, DiffusionNFT ``flowse.rl.nft``, DPO ``flowse.rl.dpo``) is one
module with a ``PostTrainTask`` subclass: it names its config class and its collector, and
implements ``train_step`` (and ``log_rows``). The base holds the rest: LoRA on the pretrained
model (``flowse.rl.lora``), the AdamW optimizer and LR schedule of the LoRA parameters, the
collector (prompts -> samples -> rewards -> advantages, ``flowse.rl.collect``), the frozen reward
stds (``reward.std_normalize: frozen``, stored in ``<exp_dir>/reward_std.json`` and read back by a
resumed run), the held-out evaluation (ODE sampler, every metric and judge, step 0 = the base
model; ``flowse.rl.evaluate``) whose rows carry ``train_seconds`` and ``train_cpu_seconds`` (the
wall-clock seconds of training so far and the CPU seconds of all ranks, held-out evaluations
excluded: the x axes of equal-compute comparisons), the
LoRA weights of each evaluated step and the guarded step so far (``flowse.rl.export``), the
checkpoint items and the curves.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.distributed as torch_dist

from flowse.rl.collect import Collection, Collector
from flowse.rl.config import PostTrainConfig
from flowse.rl.evaluate import HeldOutEval
from flowse.rl.export import choose_step, save_step_lora
from flowse.rl.lora import apply_lora, has_lora, load_lora_state_dict, lora_parameters, lora_state_dict
from flowse.rl.prompts import PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.train.schedule import make_optimizer, make_scheduler
from flowse.train.task import TrainTask
from flowse.train.trainer import Trainer
from flowse.utils.distributed import DistInfo, all_gather_object
from flowse.utils.fileio import write_json
from flowse.utils.log import get_logger

logger = get_logger(__name__)

FROZEN_STD_FILE = "reward_std.json"


def masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over valid frames and all bins: ``x [B, T, F]``, ``m [B, T, 1]`` float -> ``[B]``."""
    return (x * m).sum((1, 2)) / (m.sum((1, 2)) * x.shape[-1]).clamp(min=1)


def all_reduce_grads(params: list[torch.nn.Parameter], dist: DistInfo) -> None:
    """Sum the gradients of ``params`` over ranks in one collective (a missing grad counts as zero).

    Not DDP: every rank calls it exactly once per optimizer step whatever number of micro-batches it
    ran, so ranks with fewer items (dropped groups) cannot deadlock."""
    if dist.world_size == 1 or not torch_dist.is_initialized():
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    torch_dist.all_reduce(flat)
    off = 0
    for p, g in zip(params, grads):
        p.grad = flat[off : off + g.numel()].view_as(p).clone()
        off += g.numel()


def collection_stats(col: Collection) -> dict:
    """The ``metrics.jsonl`` fields of a collection: reward, every metric's mean over the candidates
    (rewarded or not), each rewarded metric's std and within-group share, dropped groups, and the
    collection's rollout / vocoder / reward / exchange seconds (the slowest rank's)."""
    times_all = all_gather_object(col.times)
    return {
        "reward_mean": float(col.rewards.mean()), "reward_std": float(col.rewards.std()),
        **{f"train/{k}": float(np.nanmean(v)) for k, v in col.metrics.items()},
        **{f"std/{m}": sd for m, (sd, _) in col.spread.items()},
        **{f"within/{m}": share for m, (_, share) in col.spread.items()},
        "zero_std_frac": col.adv.zero_std_fraction, "zero_std_groups": col.adv.num_zero_std,
        "groups": col.adv.num_groups, "group_reward_std": col.adv.group_std_mean,
        "candidates": int(len(col.rewards)),
        **{f"time_{k}": max(t[k] for t in times_all) for k in ("rollout", "vocoder", "reward")},
        "time_exchange": col.times["exchange"],
    }


class LoRAState:
    """The LoRA weights of a model as a checkpoint item."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict:
        return lora_state_dict(self.model)

    def load_state_dict(self, state: dict) -> None:
        load_lora_state_dict(self.model, state)


class Progress:
    """Iterations done, the current run of iterations without an update, and the training time: wall-clock
    seconds and this rank's CPU seconds (process time: what an equal-compute comparison on a shared CPU
    machine should count, as other jobs stretch wall-clock time but not it)."""

    def __init__(self):
        self.iteration = self.empty = 0
        self.seconds = self.cpu_seconds = 0.0

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "empty_iterations": self.empty, "seconds": self.seconds,
                "cpu_seconds": self.cpu_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.empty = int(state["iteration"]), int(state["empty_iterations"])
        self.seconds = float(state.get("seconds", 0.0))
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))


class PostTrainTask(TrainTask):
    """LoRA post-training of a ``FlowSE``-like model (``velocity``, ``normalize``, ``denormalize``, ``.dit``);
    LoRA is applied when the model has none. ``reward_fn`` follows ``flowse.rl.reward_fn.RewardFn``;
    ``cfg`` a ``flowse.rl.config.PostTrainConfig`` (the method's subclass)."""

    eval_at_start = True
    collector_cls = Collector

    def __init__(self, model: torch.nn.Module, cfg: PostTrainConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo | None = None, eval_prompts: PromptSet | None = None, hop: int = 256,
                 sample_rate: int = 16000):
        self.cfg = cfg
        self.dist = dist or DistInfo()
        if not has_lora(model):
            apply_lora(model, cfg.lora)
        self.model = model.to(self.dist.device).eval()
        self.reward_fn = reward_fn
        self.collector = self.collector_cls(self.model, cfg, reward_fn, prompts, self.dist, hop, sample_rate)
        self.params = lora_parameters(self.model)
        self.optimizer = make_optimizer(self.params, cfg.train)
        self.scheduler = make_scheduler(self.optimizer, cfg.train)
        self.held_out = HeldOutEval(self.model, cfg, reward_fn, eval_prompts, self.dist, hop, sample_rate) \
            if eval_prompts is not None else None
        self.progress = Progress()
        self.last_collection: Collection | None = None

    def state_items(self) -> dict:
        return {"lora": LoRAState(self.model), "optimizer": self.optimizer, "scheduler": self.scheduler,
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

    def collect(self, trainer: Trainer, iteration: int) -> Collection:
        """The collection of ``iteration``; the first one with frozen normalisation stores its stds."""
        unfrozen = self.collector.frozen_stds is None
        col = self.collector.collect(iteration)
        if unfrozen and self.collector.frozen_stds is not None and trainer.exp_dir is not None and self.dist.is_main:
            write_json(os.path.join(trainer.exp_dir, FROZEN_STD_FILE),
                       {"iteration": iteration, "stds": self.collector.frozen_stds})
        self.last_collection = col
        return col

    def start_clock(self) -> float:
        """The start of a timed unit of training (``timed`` ends it); returns the wall-clock start."""
        self._cpu_start = time.process_time()
        return time.perf_counter()

    def timed(self, t_start: float) -> float:
        """Seconds since ``t_start`` (after the device finished), added to the training seconds (and this
        process's CPU seconds since ``start_clock``)."""
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t_start
        self.progress.seconds += sec
        self.progress.cpu_seconds += time.process_time() - getattr(self, "_cpu_start", time.process_time())
        return sec

    def clock(self) -> dict:
        """``train_seconds`` (wall-clock) and ``train_cpu_seconds`` (all ranks) so far; every rank calls it."""
        return {"train_seconds": self.progress.seconds,
                "train_cpu_seconds": sum(all_gather_object(self.progress.cpu_seconds))}

    def evaluate(self, trainer: Trainer) -> dict:
        """The held-out row of this step (with per-utterance values and ``train_seconds``), its LoRA kept for
        the export, and the step the guarded export would choose now (``guarded_step``)."""
        if self.held_out is None:
            return {}
        rec = self.held_out.evaluate(trainer.step)
        rec.update(self.clock())
        if trainer.exp_dir is not None and self.dist.is_main:
            save_step_lora(trainer.exp_dir, trainer.step, lora_state_dict(self.model))
        rows = [r for r in trainer.eval_history if r["step"] != trainer.step] + [{"step": trainer.step, **rec}]
        if any(r["step"] == 0 for r in rows):
            choice = choose_step(rows, self.reward_fn, self.cfg.export)
            rec["guarded_step"] = choice["step"]
            logger.info("guarded export so far: step %d", choice["step"])
        return rec

    def plot(self, exp_dir: str, history: list[dict], eval_history: list[dict]) -> None:
        from flowse.rl.plot import plot_curves

        plot_curves(exp_dir, history, eval_history)
