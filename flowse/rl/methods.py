"""The post-training methods stage 5 can run (``method:`` in the yaml), one registry entry each.

A method is a config dataclass (with ``method: Literal["<name>"]`` and the sections ``lora``,
``rollout``, ``train``, ``reward``, ``eval``, ``export``, ``threads``) and a
``flowse.rl.posttrain.PostTrainTask`` subclass; both are named here as ``"module:attribute"`` and
imported only when chosen. ``run_posttrain`` builds the trainer of any of them, trains, and
writes the guarded export.
"""
from __future__ import annotations

import importlib
import os

from flowse.utils.config import ConfigError, load_config, parse_overrides, read_yaml
from flowse.utils.distributed import barrier
from flowse.utils.fileio import write_json
from flowse.utils.log import get_logger

logger = get_logger(__name__)

METHODS: dict[str, tuple[str, str]] = {
    "grpo": ("flowse.rl.config:GRPOConfig", "flowse.rl.task:GRPOTask"),
    "nft": ("flowse.rl.nft:NFTConfig", "flowse.rl.nft:NFTTask"),
    "dpo": ("flowse.rl.dpo:DPOConfig", "flowse.rl.dpo:DPOTask"),
}


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def method_name(path: str | None, overrides: list[str] | None = None) -> str:
    """The ``method`` of a post-training yaml (``--method`` in ``overrides`` wins; default ``grpo``)."""
    name = parse_overrides(overrides).get("method") or (read_yaml(path).get("method") if path else None) or "grpo"
    if name not in METHODS:
        raise ConfigError(f"{path}: unknown method {name!r}; choose one of {sorted(METHODS)}")
    return name


def config_class(method: str) -> type:
    return _resolve(METHODS[method][0])


def task_class(method: str) -> type:
    return _resolve(METHODS[method][1])


def load_posttrain_config(path: str | None, overrides: list[str] | None = None):
    """The config object of the method the yaml names."""
    return load_config(config_class(method_name(path, overrides)), path, overrides)


def run_posttrain(cfg, init_dir: str, data_dir: str, dump_dir: str, exp_dir: str, dist, resume: bool = True,
                  train_set: str = "train", valid_set: str = "valid") -> dict:
    """Build model, reward and prompts, train with ``cfg.method``, export the guarded merged model;
    returns the summary (also written to ``<exp_dir>/summary.json``)."""
    from flowse.rl.build import build_trainer
    from flowse.rl.export import choose_step, export_models, exported_config

    trainer, model_cfg, vocoder_dir = build_trainer(cfg, init_dir, data_dir, dump_dir, dist, exp_dir, train_set,
                                                    valid_set)
    trainer.fit(resume=resume)
    task = trainer.task
    summary = {"method": cfg.method, "steps": trainer.step, "iterations": task.progress.iteration,
               "train_seconds": task.progress.seconds, "init_dir": init_dir, "vocoder_dir": vocoder_dir}
    if trainer.eval_history:
        summary["base"], summary["final"] = ({k: v for k, v in row.items() if not k.startswith("utt_")}
                                             for row in (trainer.eval_history[0], trainer.eval_history[-1]))
    if dist.is_main:
        choice = choose_step(trainer.eval_history, task.reward_fn, cfg.export) \
            if any(r["step"] == 0 for r in trainer.eval_history) else None
        summary["exported_step"] = export_models(task.model, exported_config(model_cfg, cfg), exp_dir, vocoder_dir,
                                                 trainer.step, choice)
        write_json(os.path.join(exp_dir, "summary.json"), summary)
        logger.info("merged model written to %s (enhance with --model_dir %s)", exp_dir, exp_dir)
    barrier()
    return summary
