"""Stage 5: post-training of a pretrained FlowSE model with LoRA by the method the yaml names
(``method: grpo | nft | dpo``; ``flowse.rl.methods``).

    python -m flowse.bin.posttrain --config conf/mini/nft.yaml --init_dir exp/pretrain_mini \\
        --data_dir data --dump_dir dump --exp_dir exp/nft_mini [--device auto|cpu|cuda] \\
        [--resume true] [--force false] [--train.max_steps 20 --rollout.group_size 6 ...]
    torchrun --nproc_per_node 4 -m flowse.bin.posttrain ... --device cuda     # several ranks

Prompts: ``<dump_dir>/<train_set>/feats.scp`` with ``<data_dir>/<train_set>/{wav,spk1}.scp``;
held-out evaluation (ODE sampler, every metric, step 0 = the base model) on the valid set.
The reward uses the vocoder recorded in the init model dir. Writes into the exp dir:
``config.yaml`` (resolved config), ``train.log``, ``metrics.jsonl`` (per unit of work),
``eval.jsonl`` (with per-utterance values and ``train_seconds``), ``train_curves.png``,
``eval_curves.png``, ``checkpoint_<step>.pt``, ``lora/step_<n>.pt`` (the adapter of each
evaluated step), ``reward_std.json`` (``reward.std_normalize: frozen``), ``pairs/`` (DPO's pair
data dir), ``summary.json``, and at the end the guarded export (``flowse.rl.export``): the merged
model dir of the chosen step (``model.pt``, ``model_config.yaml``, ``vocoder_dir``) that
``flowse.bin.enhance --model_dir <exp_dir>`` uses, the last step's in ``last/``, and
``export.json`` (which step and why). The exported ``flow.cfg_strength`` is
``rollout.cfg_strength`` when set. The completion marker (named after the method) last.
"""
from __future__ import annotations

import argparse
import os

# Idle OpenMP threads sleep instead of spinning (as the pretrain bin): spinning threads on cores
# shared with other jobs slowed elementwise ops ~10x. Set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flowse.models.io import read_vocoder_dir  # noqa: E402
from flowse.rl.build import run_posttrain  # noqa: E402
from flowse.rl.methods import METHODS, load_posttrain_config  # noqa: E402
from flowse.train.stage import run_training_stage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help=f"post-training yaml naming its method ({' | '.join(METHODS)})")
    p.add_argument("--init_dir", required=True, help="pretrained model dir (stage 4 exp dir)")
    p.add_argument("--data_dir", required=True, help="Kaldi data dirs (wav.scp, spk1.scp per set)")
    p.add_argument("--dump_dir", required=True, help="stage-2 dump dir (feats.scp per set)")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--train_set", default="train", help="prompt set")
    p.add_argument("--valid_set", default="valid", help="held-out evaluation set")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", default="true", choices=["true", "false"])
    p.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = p.parse_known_args(argv)
    cfg = load_posttrain_config(args.config, overrides)
    # a retrained base model or a redone vocoder (the rewards hear it) is a new post-training run
    vocoder_dir = read_vocoder_dir(args.init_dir)
    inputs = [os.path.join(args.init_dir, "model.pt")]
    if vocoder_dir:
        inputs.append(os.path.join(vocoder_dir, "vocoder.yaml"))
    return run_training_stage(
        cfg.method, args.exp_dir, cfg, cfg.threads, args.device, args.force == "true",
        lambda dist, resume: run_posttrain(cfg, args.init_dir, args.data_dir, args.dump_dir, args.exp_dir, dist,
                                           resume and args.resume == "true", args.train_set, args.valid_set),
        files=inputs)


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
