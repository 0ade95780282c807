"""The one training frame: a resumable, DDP-aware loop around a ``TrainTask`` (``flowse.train.task``).

Pretraining (``flowse.train.pretrain``), HiFi-GAN (``flowse.train.hifigan``) and GRPO
(``flowse.rl.task``) are tasks; the frame gives them all:

- the step count (optimizer steps; a task's unit may take several) and the cadence: a log row
  every ``log_interval`` steps, an evaluation every ``eval_interval`` steps, a checkpoint every
  ``ckpt_interval`` steps (each when the step count crosses a multiple) and all three at the end;
- checkpoints ``checkpoint_<step>.pt`` written atomically by rank 0 (``flowse.utils.checkpoint``),
  holding the task's ``state_items`` (model / adapter, optimizers, schedulers, EMA, data position),
  the frame's counters and the RNG states (python, numpy, torch, cuda) of every rank; the newest
  ``keep_checkpoints`` are kept. ``fit(resume=True)`` continues from the newest one and gives the
  same weights as an uninterrupted run; ``fit(resume=False)`` first deletes the exp dir's
  checkpoints and logs of a previous run;
- logs (rank 0): ``<exp_dir>/metrics.jsonl`` (training rows) and ``<exp_dir>/eval.jsonl``
  (evaluation rows), cut back to the checkpoint's step on resume, kept in ``history`` /
  ``eval_history``; curves (the task's ``plot``) at checkpoints, at most every 5 minutes, and
  at the end; a tqdm progress bar on stderr;
- seeding: python / numpy / torch RNGs seeded with ``seed + 1000 * rank`` when built;
- non-finite steps: ``check_finite`` skips a step whose loss or gradient norm is NaN/Inf on any
  rank and stops after more than ``max_bad_steps`` in a row;
- ``autocast()`` per ``amp`` (bf16 on CUDA) for tasks that use it.

``exp_dir`` None keeps everything in memory (no files, no checkpoints).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as torch_dist

from flowse.train.config import TrainConfig
from flowse.train.plot import read_metrics
from flowse.train.task import TrainTask
from flowse.utils.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint,
                                     prune_checkpoints, save_checkpoint)
from flowse.utils.distributed import DistInfo, all_gather_object, barrier
from flowse.utils.fileio import atomic_open
from flowse.utils.log import get_logger

logger = get_logger(__name__)

LOGS = ("metrics.jsonl", "eval.jsonl")
PLOT_SECONDS = 300


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def wrap_ddp(module: torch.nn.Module, dist: DistInfo) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` when the job is distributed (gradients averaged), else itself."""
    if not dist.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)


def _crossed(before: int, after: int, interval: int) -> bool:
    return interval > 0 and after // interval > before // interval


class Trainer:
    """See the module doc. ``fit()`` trains ``task`` to ``cfg.max_steps``."""

    def __init__(self, task: TrainTask, cfg: TrainConfig, exp_dir: str | None, dist: DistInfo | None = None):
        self.task, self.cfg, self.exp_dir = task, cfg, exp_dir
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.step = 0
        self.bad_steps = 0
        self.bad_in_a_row = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self.amp = self._amp_dtype()
        self._last_plot = time.time()
        seed = cfg.seed + 1000 * self.dist.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # -- helpers for tasks -----------------------------------------------------------------------

    def _amp_dtype(self) -> torch.dtype | None:
        if self.cfg.amp == "fp32":
            return None
        if self.device.type == "cuda":
            return torch.bfloat16
        if self.cfg.amp == "bf16":
            logger.warning("train.amp bf16 is used on GPU only; this CPU job runs in fp32")
        return None

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def any_rank(self, flag: bool | torch.Tensor) -> bool:
        """True when ``flag`` holds on any rank (a collective: every rank calls it)."""
        t = flag.to(torch.float32) if torch.is_tensor(flag) else torch.tensor(float(flag), device=self.device)
        if self.dist.distributed:
            t = t.to(self.device)
            torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """False (the caller skips the step) when the loss or gradient norm is non-finite on any rank;
        raises after more than ``max_bad_steps`` such steps in a row."""
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm))
        if not self.any_rank(bad):
            self.bad_in_a_row = 0
            return True
        self.bad_steps += 1
        self.bad_in_a_row += 1
        logger.warning("step %d: non-finite loss %s / grad norm %s; step skipped (%d in a row, %d total)",
                       self.step + 1, float(loss.detach()), float(grad_norm), self.bad_in_a_row, self.bad_steps)
        if self.bad_in_a_row > self.cfg.max_bad_steps:
            raise RuntimeError(
                f"{self.bad_in_a_row} consecutive steps with a non-finite loss or gradient "
                f"(limit train.max_bad_steps={self.cfg.max_bad_steps}); check the features for NaN/Inf, "
                f"lower train.lr or use train.amp fp32")
        return False

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self) -> str | None:
        """All ranks call this (their RNG states are gathered); rank 0 writes."""
        if self.exp_dir is None:
            return None
        rng = all_gather_object(rng_state())
        path = checkpoint_path(self.exp_dir, self.step)
        if self.dist.is_main:
            state = {k: v.state_dict() for k, v in self.task.state_items().items()}
            state.update(step=self.step, bad_steps=self.bad_steps, bad_in_a_row=self.bad_in_a_row, rng=rng,
                         world_size=self.dist.world_size)
            save_checkpoint(state, path)
            prune_checkpoints(self.exp_dir, self.cfg.keep_checkpoints)
            logger.info("saved checkpoint %s", path)
        return path

    def load_checkpoint(self, path: str) -> None:
        state = load_checkpoint(path, map_location="cpu")
        for k, item in self.task.state_items().items():
            if k not in state:
                raise RuntimeError(f"{path} has no {k!r} (it holds {sorted(state)}): written by another kind of run")
            item.load_state_dict(state[k])
        self.step, self.bad_steps, self.bad_in_a_row = (int(state[k]) for k in ("step", "bad_steps", "bad_in_a_row"))
        rng = state.get("rng") or []
        if int(state.get("world_size", 1)) == self.dist.world_size and len(rng) > self.dist.rank:
            set_rng_state(rng[self.dist.rank])
        else:
            logger.warning("checkpoint %s was written by %s ranks, this job has %s: RNG states reseeded",
                           path, state.get("world_size"), self.dist.world_size)
        self.history, self.eval_history = (
            [r for r in read_metrics(os.path.join(self.exp_dir, name)) if int(r.get("step", 0)) <= self.step]
            for name in LOGS)
        if self.dist.is_main:
            for name, rows in zip(LOGS, (self.history, self.eval_history)):
                with atomic_open(os.path.join(self.exp_dir, name)) as f:
                    for r in rows:
                        f.write(json.dumps(r) + "\n")
        logger.info("resumed from %s (step %d)", path, self.step)

    def _discard_previous_run(self) -> None:
        """A fresh start removes older checkpoints and logs: they would otherwise be resumed from
        (or kept by pruning, being at higher steps) after an interruption of this run."""
        if self.dist.is_main:
            old = list_checkpoints(self.exp_dir)
            for _, p in old:
                os.unlink(p)
            for name in LOGS:
                if os.path.exists(os.path.join(self.exp_dir, name)):
                    os.unlink(os.path.join(self.exp_dir, name))
            if old:
                logger.info("fresh start: removed %d checkpoint(s) of a previous run in %s", len(old), self.exp_dir)
        barrier()

    # -- logs ------------------------------------------------------------------------------------

    def _write(self, name: str, row: dict) -> None:
        (self.history if name == LOGS[0] else self.eval_history).append(row)
        if self.exp_dir is not None and self.dist.is_main:
            with open(os.path.join(self.exp_dir, name), "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def evaluate(self) -> dict:
        row = self.task.evaluate(self)
        if row:
            row = {"step": self.step, **row}
            self._write(LOGS[1], row)
        return row

    def plot(self) -> None:
        self._last_plot = time.time()
        if self.exp_dir is not None and self.dist.is_main:
            try:
                self.task.plot(self.exp_dir, self.history, self.eval_history)
            except Exception as e:  # noqa: BLE001 - a plot must never fail a training run
                logger.warning("could not plot the curves of %s: %s", self.exp_dir, e)

    # -- the loop --------------------------------------------------------------------------------

    def run_unit(self):
        """One unit of the task (``StepOutput``), counted, without logs, evaluation or checkpoints
        (``fit`` calls it; benchmarks and tests call it alone)."""
        out = self.task.train_step(self)
        self.step += out.steps
        return out

    def fit(self, resume: bool = True, stop_at: int | None = None) -> None:
        """Train to ``cfg.max_steps`` (resuming from the newest checkpoint when ``resume``).

        ``stop_at``: stop early after the unit that reaches that step, with a checkpoint (a
        time-limited job); the LR schedule still spans ``max_steps``, so a later ``fit()`` continues
        seamlessly.
        """
        cfg = self.cfg
        end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
        if self.exp_dir is not None:
            os.makedirs(self.exp_dir, exist_ok=True)
            if not resume:
                self._discard_previous_run()
            last = latest_checkpoint(self.exp_dir) if resume else None
            if last:
                self.load_checkpoint(last)
        if self.step >= cfg.max_steps:
            logger.info("already at step %d >= max_steps %d: nothing to train", self.step, cfg.max_steps)
            return
        logger.info("%s from step %d to %d on %s (%d rank(s))", self.task.name, self.step, cfg.max_steps, self.device,
                    self.dist.world_size)
        self.task.begin(self)
        if self.task.eval_at_start and not any(r["step"] == self.step for r in self.eval_history):
            self.evaluate()
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.task.name, file=sys.stderr,
                       dynamic_ncols=True, mininterval=5.0)
        pending: list[dict] = []
        t0 = time.time()
        last_log = self.step
        try:
            while self.step < end:
                before = self.step
                out = self.run_unit()
                if out.stats is not None:
                    pending.append(out.stats)
                if bar is not None and out.steps:
                    bar.update(out.steps)
                final = self.step >= end
                if pending and (_crossed(last_log, self.step, cfg.log_interval) or final):
                    for row in self.task.log_rows(self, pending, time.time() - t0):
                        self._write(LOGS[0], row)
                    if bar is not None:
                        bar.set_postfix({k: f"{self.history[-1][k]:.4g}" for k in self.task.postfix_keys
                                         if isinstance(self.history[-1].get(k), (int, float))})
                    pending, t0, last_log = [], time.time(), self.step
                if out.steps == 0:
                    continue
                if _crossed(before, self.step, cfg.eval_interval) or final:
                    self.evaluate()
                    t0 = time.time()
                if _crossed(before, self.step, cfg.ckpt_interval) or final:
                    self.save_checkpoint()
                    if final or time.time() - self._last_plot > PLOT_SECONDS:
                        self.plot()
                    t0 = time.time()
        finally:
            if bar is not None:
                bar.close()
        self.task.end(self)
