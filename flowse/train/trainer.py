"""A generic, resumable, DDP-aware training loop (AdamW, warmup + decay, clipping, EMA, bf16 on GPU).

What a user of ``Trainer`` supplies:
- ``model``: the ``nn.Module`` to train (wrapped in DDP here when the job is distributed;
  its ``forward`` must be what ``loss_fn`` calls, so DDP sees the gradients);
- ``loader``: an object with ``iter_from(epoch, index)`` yielding ``(epoch, index, batch)``
  endlessly, where a batch is a dict of tensors and ``(epoch, index)`` fully determines it
  (``flowse.data.dataset.BatchLoader``);
- ``loss_fn(module, batch, generator) -> (loss, stats)``: ``generator`` is a torch generator
  seeded from ``(seed, step, rank)``, so the random draws of a step do not depend on
  whether the run was resumed;
- optionally ``valid_fn(model) -> {name: float}`` (called on every rank, in eval mode, with
  the EMA weights when EMA is on; it must reduce across ranks itself) and
  ``batch_seconds(batch) -> float`` (audio seconds, for the throughput log).

What it guarantees:
- checkpoints ``checkpoint_<step>.pt`` every ``ckpt_interval`` steps and at the end, written
  atomically by rank 0, holding model, optimizer, scheduler, EMA, the RNG states (python,
  numpy, torch, cuda) of every rank and the data position; ``fit(resume=True)`` continues
  from the latest one and gives the same weights as an uninterrupted run; ``fit(resume=False)``
  deletes the exp dir's checkpoints and metrics first;
- a step whose loss or gradient norm is NaN/Inf (on any rank) is skipped and counted; more
  than ``max_bad_steps`` such steps in a row stop training with an error;
- logs (rank 0): loss, lr, grad norm, steps/s, audio-seconds/s, ETA, valid metrics, in the
  log and in ``<exp_dir>/metrics.jsonl``; a PNG of the curves in ``<exp_dir>/train_curves.png``;
  a tqdm progress bar on stderr.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from flowse.train.ema import EMA
from flowse.train.plot import plot_metrics, read_metrics
from flowse.train.schedule import make_scheduler
from flowse.utils.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint,
                                     prune_checkpoints, save_checkpoint)
from flowse.utils.config import check
from flowse.utils.distributed import DistInfo, all_gather_object, barrier
from flowse.utils.fileio import atomic_open
from flowse.utils.log import get_logger

logger = get_logger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings. Paper pretraining (Sec. 3.2): lr 1e-4, 10k warmup, linear decay, 100k steps.

    ``ema_decay`` 0 disables EMA; ``amp``: ``auto`` = bf16 autocast on CUDA, fp32 on CPU
    (``bf16`` on a CPU job falls back to fp32 with a warning). ``grad_clip`` 0 = no clipping.
    """

    max_steps: int = 100000
    lr: float = 1e-4
    warmup_steps: int = 10000
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    final_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    ema_start: int = 0
    amp: Literal["auto", "bf16", "fp32"] = "auto"
    log_interval: int = 100
    valid_interval: int = 2000
    ckpt_interval: int = 2000
    keep_checkpoints: int = 3
    max_bad_steps: int = 20
    seed: int = 1234
    progress: bool = True

    def __post_init__(self):
        check(self.max_steps > 0, f"train.max_steps must be positive, got {self.max_steps}")
        check(self.lr > 0, f"train.lr must be positive, got {self.lr}")
        check(self.warmup_steps >= 0 and self.ema_start >= 0, "train.warmup_steps and ema_start must be >= 0")
        check(0.0 <= self.final_lr_ratio <= 1.0, "train.final_lr_ratio must be in [0, 1]")
        check(self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0, "train.ema_decay must be 0 (off) or in (0, 1)")
        check(self.grad_clip >= 0 and self.weight_decay >= 0, "train.grad_clip and weight_decay must be >= 0")
        check(min(self.log_interval, self.valid_interval, self.ckpt_interval) > 0, "train.*_interval must be positive")
        check(self.max_bad_steps >= 0, "train.max_bad_steps must be >= 0")


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _default_to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _is_empty(batch: dict) -> bool:
    return any(torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 0 for v in batch.values())


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Trainer:
    """See the module doc. ``fit()`` trains to ``cfg.max_steps``; ``inference_state_dict()`` gives the
    weights to export (EMA when enabled)."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        exp_dir: str,
        dist: DistInfo,
        loader,
        loss_fn: Callable,
        valid_fn: Callable[[nn.Module], dict] | None = None,
        batch_seconds: Callable[[dict], float] | None = None,
        to_device: Callable[[dict, torch.device], dict] = _default_to_device,
        parameters: list[nn.Parameter] | None = None,
    ):
        self.model, self.cfg, self.exp_dir, self.dist = model, cfg, exp_dir, dist
        self.loader, self.loss_fn, self.valid_fn = loader, loss_fn, valid_fn
        self.batch_seconds, self.to_device = batch_seconds, to_device
        self.device = dist.device
        model.to(self.device)
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(model, device_ids=ids)
        else:
            self.wrapped = model
        self.params = [p for p in (parameters or model.parameters()) if p.requires_grad]
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
        )
        self.scheduler = make_scheduler(self.optimizer, cfg.max_steps, cfg.warmup_steps, cfg.schedule,
                                        cfg.final_lr_ratio)
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_start) if cfg.ema_decay > 0 else None
        self.amp = self._amp_dtype()
        self.step = 0
        self.epoch = 0
        self.index = 0
        self.bad_steps = 0
        self.bad_in_a_row = 0
        self.skipped_batches = 0
        self.metrics_path = os.path.join(exp_dir, "metrics.jsonl")
        self.plot_path = os.path.join(exp_dir, "train_curves.png")
        self._last_plot = time.time()
        seed = cfg.seed + 1000 * dist.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _amp_dtype(self) -> torch.dtype | None:
        if self.cfg.amp == "fp32":
            return None
        if self.device.type == "cuda":
            return torch.bfloat16
        if self.cfg.amp == "bf16":
            logger.warning("train.amp bf16 is used on GPU only; this CPU job runs in fp32")
        return None

    def _autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _step_generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.cfg.seed * 1_000_003 + self.step * 7919 + self.dist.rank * 104_729) % (2**63))
        return g

    def _any(self, flag: bool | torch.Tensor) -> bool:
        t = flag.to(torch.float32) if torch.is_tensor(flag) else torch.tensor(float(flag), device=self.device)
        if self.dist.distributed:
            t = t.to(self.device)
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "step": self.step,
            "epoch": self.epoch,
            "index": self.index,
            "bad_steps": self.bad_steps,
            "bad_in_a_row": self.bad_in_a_row,
            "skipped_batches": self.skipped_batches,
            "world_size": self.dist.world_size,
        }

    def save_checkpoint(self) -> str:
        """All ranks call this (their RNG states are gathered); rank 0 writes."""
        rng = all_gather_object(_rng_state())
        path = checkpoint_path(self.exp_dir, self.step)
        if self.dist.is_main:
            state = self.state_dict()
            state["rng"] = rng
            save_checkpoint(state, path)
            prune_checkpoints(self.exp_dir, self.cfg.keep_checkpoints)
            logger.info("saved checkpoint %s", path)
        return path

    def load_checkpoint(self, path: str) -> None:
        state = load_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:
                self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_start)
        for k in ("step", "epoch", "index", "bad_steps", "bad_in_a_row", "skipped_batches"):
            setattr(self, k, int(state[k]))
        rng = state.get("rng") or []
        if int(state.get("world_size", 1)) == self.dist.world_size and len(rng) > self.dist.rank:
            _set_rng_state(rng[self.dist.rank])
        else:
            logger.warning("checkpoint %s was written by %s ranks, this job has %s: RNG states reseeded",
                           path, state.get("world_size"), self.dist.world_size)
        if self.dist.is_main:
            rows = [r for r in read_metrics(self.metrics_path) if int(r.get("step", 0)) <= self.step]
            with atomic_open(self.metrics_path) as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", path, self.step, self.epoch, self.index)

    def _discard_previous_run(self) -> None:
        """A fresh start removes older checkpoints and metrics: they would otherwise be resumed from
        (or kept by pruning, being at higher steps) after an interruption of this run."""
        if self.dist.is_main:
            old = list_checkpoints(self.exp_dir)
            for _, p in old:
                os.unlink(p)
            if os.path.exists(self.metrics_path):
                os.unlink(self.metrics_path)
            if old:
                logger.info("fresh start: removed %d checkpoint(s) of a previous run in %s", len(old), self.exp_dir)
        barrier()

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights to export: the EMA weights when EMA is on, else the trained ones."""
        return self.ema.weights(self.model) if self.ema is not None else self.model.state_dict()

    # -- logging -------------------------------------------------------------------------------

    def _write_metrics(self, row: dict) -> None:
        if self.dist.is_main:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def validate(self) -> dict:
        if self.valid_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        ctx = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx, torch.no_grad(), self._autocast():
            out = {k: float(v) for k, v in self.valid_fn(self.model).items()}
        self.model.train(was_training)
        logger.info("step %d valid%s: %s", self.step, " (EMA weights)" if self.ema else "",
                    " ".join(f"{k} {v:.4f}" for k, v in out.items()))
        self._write_metrics({"step": self.step, **out})
        return out

    def plot(self) -> None:
        self._last_plot = time.time()
        if self.dist.is_main:
            try:
                plot_metrics(self.metrics_path, self.plot_path, title=os.path.basename(os.path.normpath(self.exp_dir)))
            except Exception as e:  # noqa: BLE001 - a plot must never fail a training run
                logger.warning("could not plot %s: %s", self.metrics_path, e)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self, resume: bool = True, stop_at: int | None = None) -> None:
        """Train to ``cfg.max_steps`` (resuming from the newest checkpoint when ``resume``).

        ``stop_at``: stop early after that step with a checkpoint (a time-limited job); the
        LR schedule still spans ``max_steps``, so a later ``fit()`` continues seamlessly.
        """
        cfg = self.cfg
        end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        os.makedirs(self.exp_dir, exist_ok=True)
        if not resume:
            self._discard_previous_run()
        last = latest_checkpoint(self.exp_dir) if resume else None
        if last:
            self.load_checkpoint(last)
        if self.step >= cfg.max_steps:
            logger.info("already at step %d >= max_steps %d: nothing to train", self.step, cfg.max_steps)
            return
        logger.info("training from step %d to %d on %s (%d rank(s), amp %s)", self.step, cfg.max_steps,
                    self.device, self.dist.world_size, self.amp or "fp32")
        self.model.train()
        it = self.loader.iter_from(self.epoch, self.index)
        acc = torch.zeros(4, dtype=torch.float64)  # loss sum, grad-norm sum, audio seconds, steps
        t0 = time.time()
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", file=sys.stderr, dynamic_ncols=True,
                       mininterval=5.0)
        try:
            while self.step < end:
                epoch, index, batch = next(it)
                self.epoch, self.index = epoch, index + 1
                if self._any(_is_empty(batch)):
                    self.skipped_batches += 1
                    logger.warning("epoch %d batch %d: no usable utterance on some rank; batch skipped", epoch, index)
                    continue
                seconds = float(self.batch_seconds(batch)) if self.batch_seconds else 0.0
                batch = self.to_device(batch, self.device)
                gen = self._step_generator()
                with self._autocast():
                    loss, _ = self.loss_fn(self.wrapped, batch, gen)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(gnorm))
                if self._any(bad):
                    self.bad_steps += 1
                    self.bad_in_a_row += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    logger.warning("step %d: non-finite loss %s / grad norm %s; step skipped (%d in a row, %d total)",
                                   self.step + 1, float(loss.detach()), float(gnorm), self.bad_in_a_row, self.bad_steps)
                    if self.bad_in_a_row > cfg.max_bad_steps:
                        raise RuntimeError(
                            f"{self.bad_in_a_row} consecutive steps with a non-finite loss or gradient "
                            f"(limit train.max_bad_steps={cfg.max_bad_steps}); check the features for NaN/Inf, "
                            f"lower train.lr or use train.amp fp32")
                    continue
                self.bad_in_a_row = 0
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.model, self.step)
                acc += torch.tensor([float(loss.detach()), float(gnorm), seconds, 1.0], dtype=torch.float64)
                if bar is not None:
                    bar.update(1)
                final = self.step == end
                if self.step % cfg.log_interval == 0 or final:
                    self._log_train(acc, time.time() - t0, bar)
                    acc.zero_()
                    t0 = time.time()
                if self.valid_fn is not None and (self.step % cfg.valid_interval == 0 or final):
                    self.validate()
                    t0 = time.time()
                if self.step % cfg.ckpt_interval == 0 or final:
                    self.save_checkpoint()
                    if final or time.time() - self._last_plot > 300:
                        self.plot()
                    t0 = time.time()
        finally:
            if bar is not None:
                bar.close()
        if self.bad_steps or self.skipped_batches:
            logger.warning("training done with %d skipped non-finite steps and %d skipped empty batches",
                           self.bad_steps, self.skipped_batches)

    def _log_train(self, acc: torch.Tensor, elapsed: float, bar) -> None:
        a = acc.clone()
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
            "step": self.step,
            "epoch": self.epoch,
            "loss": float(a[0]) / n,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(a[1]) / n,
            "steps_per_s": steps_per_s,
            "audio_s_per_s": float(a[2]) / max(elapsed, 1e-9),
            "eta_s": (self.cfg.max_steps - self.step) / steps_per_s,
            "skipped_steps": self.bad_steps,
        }
        logger.info("step %d/%d epoch %d loss %.4f lr %.2e grad-norm %.3f %.2f steps/s %.1f audio-s/s ETA %s",
                    self.step, self.cfg.max_steps, self.epoch, row["loss"], row["lr"], row["grad_norm"],
                    steps_per_s, row["audio_s_per_s"], _fmt_eta(row["eta_s"]))
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.1e}")
        self._write_metrics(row)
