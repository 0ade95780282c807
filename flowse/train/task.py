"""What a training method plugs into the frame (``flowse.train.trainer.Trainer``).

A task owns the method: its models, optimizers and schedulers (built with
``flowse.train.schedule``), its data and what one unit of work is (a pretraining batch, a
HiFi-GAN D + G step, a GRPO iteration of collection + updates). The frame owns the rest:
the step count, checkpoints and resume, the logs, evaluation cadence, plots, the progress
bar, RNG states and non-finite step bookkeeping. A new method (DPO, DiffusionNFT, ...) is
one module with a ``TrainTask`` subclass: e.g. a collect phase and an update phase of
LoRA parameters inside ``train_step``, like ``flowse.rl.task.GRPOTask``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class StepOutput:
    """One unit of work: ``steps`` optimizer steps taken (0: nothing trained, e.g. a skipped batch)
    and ``stats`` for ``log_rows`` (None: nothing to log)."""

    steps: int
    stats: dict | None = None


class TrainTask:
    """Base class of the hooks; override ``state_items``, ``train_step``, ``log_rows`` and, when the
    method has a held-out measure, ``evaluate``.

    ``name`` labels the progress bar; ``postfix_keys`` are the logged values it shows;
    ``eval_at_start``: also evaluate before the first step (GRPO: the base model at step 0);
    ``plot_keys``: the metrics of the default plot (``train_curves.png``). Every hook gets the running
    ``flowse.train.trainer.Trainer`` (``trainer.step``, ``trainer.cfg``, ``trainer.autocast()``,
    ``trainer.check_finite()``, ``trainer.any_rank()``).
    """

    name = "train"
    postfix_keys: tuple[str, ...] = ()
    eval_at_start = False
    plot_keys: tuple[str, ...] = ("loss", "valid_loss", "lr", "grad_norm", "audio_s_per_s")

    def state_items(self) -> dict[str, Any]:
        """Everything resumable, by checkpoint key: objects with ``state_dict()`` / ``load_state_dict()``
        (modules, optimizers, schedulers, EMA, the task's own position such as the data index)."""
        raise NotImplementedError

    def begin(self, trainer) -> None:
        """Called once before the first unit (after a resume): set train mode, open the data stream."""

    def train_step(self, trainer) -> StepOutput:
        """One unit of work at ``trainer.step`` completed steps (the frame adds ``steps`` afterwards).
        Called on every rank; a unit must stop at ``trainer.cfg.max_steps``."""
        raise NotImplementedError

    def log_rows(self, trainer, stats: list[dict], elapsed: float) -> list[dict]:
        """The ``metrics.jsonl`` rows for the units' ``stats`` since the last log (``elapsed`` seconds);
        called on every rank (it may reduce across ranks); the task logs its own line."""
        return stats

    def evaluate(self, trainer) -> dict:
        """Held-out metrics at ``trainer.step`` (every rank; reduce across ranks inside); {} = none."""
        return {}

    def plot(self, exp_dir: str, history: list[dict], eval_history: list[dict]) -> None:
        """Curves of the run into ``exp_dir`` (rank 0)."""
        import os

        from flowse.train.plot import plot_metrics

        plot_metrics(history + eval_history, os.path.join(exp_dir, "train_curves.png"), self.plot_keys,
                     title=os.path.basename(os.path.normpath(exp_dir)))

    def end(self, trainer) -> None:
        """Called after the last unit of ``fit`` (warnings, summaries)."""
