"""Stage 4: flow-matching pretraining.

    python -m flowse.bin.pretrain --config conf/mini/pretrain.yaml --dump_dir dump \\
        --exp_dir exp/pretrain_mini --vocoder_dir exp/vocoder_mini [--device auto|cpu|cuda] \\
        [--resume true] [--force false] [--threads N] [--train.max_steps 2000 --model.depth 4 ...]
    torchrun --nproc_per_node 4 -m flowse.bin.pretrain ... --device cuda     # DDP

Extra ``--section.key value`` options override the yaml. Writes ``train.log``,
``metrics.jsonl``, ``eval.jsonl``, ``train_curves.png``, ``checkpoint_<step>.pt`` and the model dir
(``model.pt``, ``config.yaml``, ``vocoder_dir``) into the exp dir, then the completion
marker; a rerun with the marker is skipped unless ``--force true``. Training resumes
from the newest checkpoint unless ``--resume false`` (``--force true --resume false``
retrains from scratch).
"""
from __future__ import annotations

import argparse
import os

# Idle OpenMP threads sleep instead of spinning: with spinning, 2 threads on 2 cores shared with
# other jobs ran elementwise ops ~10x slower than 1 thread. Set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flowse.train.pretrain import PretrainConfig, run_pretrain  # noqa: E402
from flowse.train.stage import run_training_stage  # noqa: E402
from flowse.utils.cli import add_force_option, run  # noqa: E402
from flowse.utils.config import load_config  # noqa: E402
from flowse.utils.log import get_logger  # noqa: E402

logger = get_logger(__name__)
MARKER = "pretrain"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="pretrain yaml (conf/<c>/pretrain.yaml)")
    p.add_argument("--dump_dir", required=True, help="stage-2 dump dir holding train/ and valid/")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--vocoder_dir", default=None, help="vocoder exp dir recorded in the model dir")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", default="true", choices=["true", "false"])
    add_force_option(p)
    args, overrides = p.parse_known_args(argv)
    cfg = load_config(PretrainConfig, args.config, overrides)
    if args.vocoder_dir and not os.path.isdir(args.vocoder_dir):
        logger.warning("vocoder dir %s does not exist (yet); it is recorded in the model dir anyway", args.vocoder_dir)
    feats = [os.path.join(args.dump_dir, s, "feats.scp") for s in ("train", "valid")]  # redumped: retrain
    return run_training_stage(
        MARKER, args.exp_dir, cfg, cfg.threads, args.device, args.force,
        lambda dist, resume: run_pretrain(cfg, args.dump_dir, args.exp_dir, args.vocoder_dir,
                                          resume=resume and args.resume == "true", dist=dist), files=feats)


if __name__ == "__main__":
    run(main)
