"""A ``TrainTask`` for a loss on a stream of batches (flow-matching pretraining): AdamW, warmup + decay,
clipping, non-finite step skipping, EMA, bf16 autocast on GPU, DDP.

What it takes:
- ``model``: the ``nn.Module`` to train (wrapped in DDP when the job is distributed; its
  ``forward`` must be what ``loss_fn`` calls, so DDP sees the gradients);
- ``loader``: an object with ``iter_from(epoch, index)`` yielding ``(epoch, index, batch)``
  endlessly, where a batch is a dict of tensors and ``(epoch, index)`` fully determines it
  (``flowse.data.dataset.BatchLoader``); the position is checkpointed;
- ``loss_fn(module, batch, generator) -> (loss, stats)``: ``generator`` is a torch generator
  seeded from ``(seed, step, rank)``, so the random draws of a step do not depend on
  whether the run was resumed;
- optionally ``valid_fn(model) -> {name: float}`` (called on every rank, in eval mode, with
  the EMA weights when EMA is on; it must reduce across ranks itself) and
  ``batch_seconds(batch) -> float`` (audio seconds, for the throughput log).

Log rows: loss, lr, grad norm, steps/s, audio-seconds/s, ETA, skipped steps (means over the
log interval and the ranks). A batch empty on some rank is skipped on all.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.distributed as torch_dist
from torch import nn

from flowse.train.ema import EMA
from flowse.train.schedule import make_optimizer, make_scheduler
from flowse.train.task import StepOutput, TrainTask
from flowse.train.trainer import Trainer, wrap_ddp
from flowse.utils.distributed import DistInfo
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def _default_to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _is_empty(batch: dict) -> bool:
    return any(torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 0 for v in batch.values())


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class DataPosition:
    """Where the batch stream stands: the next batch is ``(epoch, index)``; ``skipped`` empty batches."""

    def __init__(self):
        self.epoch = self.index = self.skipped = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "skipped_batches": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.skipped = int(state["epoch"]), int(state["index"]), int(state["skipped_batches"])


class SupervisedTask(TrainTask):
    """See the module doc. ``cfg`` is a ``TrainConfig`` with ``ema_decay`` / ``ema_start``
    (``flowse.train.pretrain.PretrainTrainConfig``); ``inference_state_dict()`` gives the weights to
    export (EMA when enabled)."""

    name = "train"
    postfix_keys = ("loss", "lr")

    def __init__(self, model: nn.Module, cfg, dist: DistInfo, loader, loss_fn: Callable,
                 valid_fn: Callable[[nn.Module], dict] | None = None,
                 batch_seconds: Callable[[dict], float] | None = None,
                 to_device: Callable[[dict, torch.device], dict] = _default_to_device,
                 parameters: list[nn.Parameter] | None = None):
        self.model, self.cfg, self.dist = model, cfg, dist
        self.loader, self.loss_fn, self.valid_fn = loader, loss_fn, valid_fn
        self.batch_seconds, self.to_device = batch_seconds, to_device
        self.device = dist.device
        model.to(self.device)
        self.wrapped = wrap_ddp(model, dist)
        self.params = [p for p in (parameters or model.parameters()) if p.requires_grad]
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        self.optimizer = make_optimizer([{"params": decay, "weight_decay": cfg.weight_decay},
                                         {"params": no_decay, "weight_decay": 0.0}], cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_start) if cfg.ema_decay > 0 else None
        self.position = DataPosition()
        self._it = None

    def state_items(self) -> dict:
        items = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, "data": self.position}
        if self.ema is not None:
            items["ema"] = self.ema
        return items

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights to export: the EMA weights when EMA is on, else the trained ones."""
        return self.ema.weights(self.model) if self.ema is not None else self.model.state_dict()

    def begin(self, trainer: Trainer) -> None:
        self.model.train()
        self._it = self.loader.iter_from(self.position.epoch, self.position.index)

    def _step_generator(self, step: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.cfg.seed * 1_000_003 + step * 7919 + self.dist.rank * 104_729) % (2**63))
        return g

    def train_step(self, trainer: Trainer) -> StepOutput:
        pos = self.position
        epoch, index, batch = next(self._it)
        pos.epoch, pos.index = epoch, index + 1
        if trainer.any_rank(_is_empty(batch)):
            pos.skipped += 1
            logger.warning("epoch %d batch %d: no usable utterance on some rank; batch skipped", epoch, index)
            return StepOutput(0)
        seconds = float(self.batch_seconds(batch)) if self.batch_seconds else 0.0
        batch = self.to_device(batch, self.device)
        gen = self._step_generator(trainer.step)
        with trainer.autocast():
            loss, _ = self.loss_fn(self.wrapped, batch, gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if not trainer.check_finite(loss, gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            return StepOutput(0)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, trainer.step + 1)
        return StepOutput(1, {"loss": float(loss.detach()), "grad_norm": float(gnorm), "seconds": seconds})

    def log_rows(self, trainer: Trainer, stats: list[dict], elapsed: float) -> list[dict]:
        a = torch.zeros(4, dtype=torch.float64)  # loss sum, grad-norm sum, audio seconds, steps
        for s in stats:
            a += torch.tensor([s["loss"], s["grad_norm"], s["seconds"], 1.0], dtype=torch.float64)
        if self.dist.distributed:
            a = a.to(self.device)
            torch_dist.all_reduce(a)
            a = a.cpu()
            a[0] /= self.dist.world_size
            a[1] /= self.dist.world_size
            a[3] /= self.dist.world_size
        n = max(1.0, float(a[3]))
        steps_per_s = n / max(elapsed, 1e-9)
        row = {
            "step": trainer.step,
            "epoch": self.position.epoch,
            "loss": float(a[0]) / n,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(a[1]) / n,
            "steps_per_s": steps_per_s,
            "audio_s_per_s": float(a[2]) / max(elapsed, 1e-9),
            "eta_s": (self.cfg.max_steps - trainer.step) / steps_per_s,
            "skipped_steps": trainer.bad_steps,
        }
        logger.info("step %d/%d epoch %d loss %.4f lr %.2e grad-norm %.3f %.2f steps/s %.1f audio-s/s ETA %s",
                    trainer.step, self.cfg.max_steps, self.position.epoch, row["loss"], row["lr"], row["grad_norm"],
                    steps_per_s, row["audio_s_per_s"], _fmt_eta(row["eta_s"]))
        return [row]

    def evaluate(self, trainer: Trainer) -> dict:
        if self.valid_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        ctx = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx, torch.no_grad(), trainer.autocast():
            out = {k: float(v) for k, v in self.valid_fn(self.model).items()}
        self.model.train(was_training)
        logger.info("step %d valid%s: %s", trainer.step, " (EMA weights)" if self.ema else "",
                    " ".join(f"{k} {v:.4f}" for k, v in out.items()))
        return out

    def end(self, trainer: Trainer) -> None:
        if trainer.bad_steps or self.position.skipped:
            logger.warning("training done with %d skipped non-finite steps and %d skipped empty batches",
                           trainer.bad_steps, self.position.skipped)
