"""Stage 5: online GRPO post-training of a pretrained FlowSE model with LoRA.

    python -m flowse.bin.grpo --config conf/mini/grpo.yaml --init_dir exp/pretrain_mini \\
        --data_dir data --dump_dir dump --exp_dir exp/grpo_mini [--device auto|cpu|cuda] \\
        [--resume true] [--force false] [--train.max_steps 20 --rollout.group_size 6 ...]
    torchrun --nproc_per_node 4 -m flowse.bin.grpo ... --device cuda     # several ranks

Prompts: ``<dump_dir>/<train_set>/feats.scp`` with ``<data_dir>/<train_set>/{wav,spk1}.scp``;
held-out evaluation (ODE sampler, every metric, step 0 = the base model) on the valid set.
The reward uses the vocoder recorded in the init model dir. Writes into the exp dir:
``config.yaml`` (resolved GRPO config), ``train.log``, ``metrics.jsonl`` (per iteration),
``eval.jsonl`` (with per-utterance values), ``train_curves.png``, ``eval_curves.png``,
``checkpoint_<step>.pt`` (adapter + optimizer + scheduler + RNG), ``lora/step_<n>.pt`` (the
adapter of each evaluated step), ``reward_std.json`` (``reward.std_normalize: frozen``),
``summary.json`` (base vs final evaluation), and at the end the guarded export
(``flowse.rl.export``): the merged model dir of the chosen step (``model.pt``,
``model_config.yaml``, ``vocoder_dir``) so that ``flowse.bin.enhance --model_dir <exp_dir>``
uses it, the last step's in ``last/``, and ``export.json`` (which step and why). The exported
``flow.cfg_strength`` is ``rollout.cfg_strength`` when set: inference uses the w that GRPO
optimised. The completion marker last.
"""
from __future__ import annotations

import argparse
import os

# Idle OpenMP threads sleep instead of spinning (as the pretrain bin): spinning threads on cores
# shared with other jobs slowed elementwise ops ~10x. Set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flowse.rl.config import GRPOConfig  # noqa: E402
from flowse.train.stage import run_training_stage  # noqa: E402
from flowse.utils.config import load_config  # noqa: E402
from flowse.utils.distributed import barrier  # noqa: E402
from flowse.utils.fileio import write_json  # noqa: E402
from flowse.utils.log import get_logger  # noqa: E402

logger = get_logger(__name__)
MARKER = "grpo"


def exported_config(model_cfg, cfg: GRPOConfig):
    """The model config written with the GRPO model: ``flow.cfg_strength`` = ``rollout.cfg_strength`` when set."""
    from dataclasses import replace

    if cfg.rollout.cfg_strength is None:
        return model_cfg
    return replace(model_cfg, flow=replace(model_cfg.flow, cfg_strength=cfg.rollout.cfg_strength))


def run_grpo(cfg: GRPOConfig, init_dir: str, data_dir: str, dump_dir: str, exp_dir: str, dist, resume: bool = True,
             train_set: str = "train", valid_set: str = "valid") -> dict:
    """Build model, reward and prompts, train, export the guarded merged model; returns the summary."""
    from flowse.rl.build import build_grpo_trainer
    from flowse.rl.export import choose_step, export_models

    trainer, model_cfg, vocoder_dir = build_grpo_trainer(cfg, init_dir, data_dir, dump_dir, dist, exp_dir, train_set,
                                                         valid_set)
    trainer.fit(resume=resume)
    summary = {"steps": trainer.step, "iterations": trainer.task.progress.iteration, "init_dir": init_dir,
               "vocoder_dir": vocoder_dir}
    if trainer.eval_history:
        summary["base"], summary["final"] = ({k: v for k, v in row.items() if not k.startswith("utt_")}
                                             for row in (trainer.eval_history[0], trainer.eval_history[-1]))
    if dist.is_main:
        choice = choose_step(trainer.eval_history, trainer.task.collector.reward_fn, cfg.export) \
            if any(r["step"] == 0 for r in trainer.eval_history) else None
        summary["exported_step"] = export_models(trainer.task.model, exported_config(model_cfg, cfg), exp_dir,
                                                 vocoder_dir, trainer.step, choice)
        write_json(os.path.join(exp_dir, "summary.json"), summary)
        logger.info("merged model written to %s (enhance with --model_dir %s)", exp_dir, exp_dir)
    barrier()
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="GRPO yaml (conf/<c>/grpo*.yaml)")
    p.add_argument("--init_dir", required=True, help="pretrained model dir (stage 4 exp dir)")
    p.add_argument("--data_dir", required=True, help="Kaldi data dirs (wav.scp, spk1.scp per set)")
    p.add_argument("--dump_dir", required=True, help="stage-2 dump dir (feats.scp per set)")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--train_set", default="train", help="prompt set (GRPO data set)")
    p.add_argument("--valid_set", default="valid", help="held-out evaluation set")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", default="true", choices=["true", "false"])
    p.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = p.parse_known_args(argv)
    cfg = load_config(GRPOConfig, args.config, overrides)
    return run_training_stage(
        MARKER, args.exp_dir, cfg, cfg.threads, args.device, args.force == "true",
        lambda dist: run_grpo(cfg, args.init_dir, args.data_dir, args.dump_dir, args.exp_dir, dist,
                              args.resume == "true", args.train_set, args.valid_set))


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
