"""Assemble a post-training trainer (the training frame around the task of ``cfg.method``,
``flowse.rl.methods``) from recipe directories (stage 5 and the GRPO diagnostics share it), and run
it: train, then the guarded export (``run_posttrain``, stage 5)."""
from __future__ import annotations

import os

from flowse.utils.distributed import barrier
from flowse.utils.fileio import write_json
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def judge_suite(cfg, computed: list[str], device: str):
    """The ``MetricSuite`` of the held-out judge metrics (``eval.metrics``) the reward does not compute
    already, or None; an unavailable one is left out with an info line."""
    from flowse.metrics.registry import unavailable_outputs
    from flowse.metrics.suite import MetricSuite

    extra = [m for m in cfg.eval.metrics if m not in computed]
    for m, hint in unavailable_outputs(extra, cfg.reward.models).items():
        logger.info("%s not computed in the held-out evaluation: %s", m, hint)
        extra.remove(m)
    return MetricSuite(extra, cfg.reward.models, device) if extra else None


def build_trainer(cfg, init_dir: str, data_dir: str, dump_dir: str, dist, exp_dir: str | None = None,
                  train_set: str = "train", valid_set: str = "valid"):
    """The pretrained model of ``init_dir`` with LoRA, its vocoder + reward models, the prompt sets.

    Prompts: ``<dump_dir>/<train_set>/feats.scp`` with ``<data_dir>/<train_set>/{wav,spk1}.scp``;
    held-out prompts from ``valid_set`` when it was dumped. Returns ``(trainer, model_cfg, vocoder_dir)``, the
    trainer a ``flowse.train.trainer.Trainer`` whose ``task`` is the ``GRPOTask``.
    """
    from flowse.rl.reward import RewardModel
    from flowse.models.io import load_model_dir, read_vocoder_dir
    from flowse.models.vocoders import load_vocoder
    from flowse.rl.lora import apply_lora, count_lora_parameters
    from flowse.rl.prompts import PromptSet
    from flowse.rl.reward_fn import AudioReward
    from flowse.rl.methods import task_class
    from flowse.train.trainer import Trainer

    model, model_cfg = load_model_dir(init_dir, dist.device)
    vocoder_dir = read_vocoder_dir(init_dir)
    if vocoder_dir is None:
        raise FileNotFoundError(f"{init_dir}: no vocoder_dir file; the reward needs the model's vocoder")
    vocoder = load_vocoder(vocoder_dir, dist.device)
    reward_model = RewardModel(cfg.reward, str(dist.device))
    judge = judge_suite(cfg, reward_model.metrics, str(dist.device))
    need_ref = reward_model.needs_ref
    hop = vocoder.hop_length
    min_frames = max(1, int(cfg.rollout.min_seconds * vocoder.sample_rate / hop))
    prompts = PromptSet.from_dirs(os.path.join(dump_dir, train_set), os.path.join(data_dir, train_set), need_ref,
                                  hop, min_frames, sample_rate=vocoder.sample_rate)
    eval_prompts = None
    if os.path.exists(os.path.join(dump_dir, valid_set, "feats.scp")):
        eval_prompts = PromptSet.from_dirs(os.path.join(dump_dir, valid_set), os.path.join(data_dir, valid_set),
                                           need_ref, hop, 1, sample_rate=vocoder.sample_rate)
    else:
        logger.warning("no %s set in %s: no held-out evaluation", valid_set, dump_dir)
    apply_lora(model, cfg.lora)
    logger.info("%s from %s (vocoder %s): %d LoRA parameters, %d prompts, %d held-out; reward %s, logged %s",
                cfg.method.upper(), init_dir, vocoder_dir, count_lora_parameters(model), len(prompts),
                len(eval_prompts) if eval_prompts else 0, cfg.reward.metrics, reward_model.metrics)
    task = task_class(cfg.method)(model, cfg, AudioReward(vocoder, reward_model, judge=judge), prompts, dist,
                                  eval_prompts, hop, vocoder.sample_rate)
    return Trainer(task, cfg.train, exp_dir, dist), model_cfg, vocoder_dir


def run_posttrain(cfg, init_dir: str, data_dir: str, dump_dir: str, exp_dir: str, dist, resume: bool = True,
                  train_set: str = "train", valid_set: str = "valid") -> dict:
    """Build model, reward and prompts, train with ``cfg.method``, export the guarded merged model;
    returns the summary (also written to ``<exp_dir>/summary.json``)."""
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
