"""Stage 4: flow-matching pretraining.

    python -m flowse.bin.pretrain --config conf/mini/pretrain.yaml --dump_dir dump \\
        --exp_dir exp/pretrain_mini --vocoder_dir exp/vocoder_mini [--device auto|cpu|cuda] \\
        [--resume true] [--force false] [--threads N] [--train.max_steps 2000 --model.depth 4 ...]
    torchrun --nproc_per_node 4 -m flowse.bin.pretrain ... --device cuda     # DDP

Extra ``--section.key value`` options override the yaml. Writes ``train.log``,
``metrics.jsonl``, ``train_curves.png``, ``checkpoint_<step>.pt`` and the model dir
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

import torch  # noqa: E402

from flowse.train.pretrain import PretrainConfig, run_pretrain
from flowse.utils import stage
from flowse.utils.config import load_config, save_config
from flowse.utils.distributed import cleanup, init_distributed
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)
MARKER = "pretrain"


def set_threads(threads: int, local_world_size: int = 1) -> int:
    """Torch intra-op threads: ``threads``, or all cores shared by the local ranks when 0."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(n)
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="pretrain yaml (conf/<c>/pretrain.yaml)")
    p.add_argument("--dump_dir", required=True, help="stage-2 dump dir holding train/ and valid/")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--vocoder_dir", default=None, help="vocoder exp dir recorded in the model dir")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", default="true", choices=["true", "false"])
    p.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = p.parse_known_args(argv)
    cfg = load_config(PretrainConfig, args.config, overrides)
    os.makedirs(args.exp_dir, exist_ok=True)
    setup_logging(os.path.join(args.exp_dir, "train.log"))
    if stage.is_done(args.exp_dir, MARKER) and args.force != "true":
        logger.info("%s: pretraining already done (marker %s); skipping (use --force true to redo)",
                    args.exp_dir, stage.marker_path(args.exp_dir, MARKER))
        return 0
    stage.clear(args.exp_dir, MARKER)
    dist = init_distributed(args.device)
    n = set_threads(cfg.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if dist.is_main:
        save_config(cfg, os.path.join(args.exp_dir, "config.yaml"))
    if args.vocoder_dir and not os.path.isdir(args.vocoder_dir):
        logger.warning("vocoder dir %s does not exist (yet); it is recorded in the model dir anyway", args.vocoder_dir)
    logger.info("pretraining %s -> %s on %s, %d thread(s)/rank", args.config, args.exp_dir, dist.device, n)
    try:
        run_pretrain(cfg, args.dump_dir, args.exp_dir, args.vocoder_dir, resume=args.resume == "true", dist=dist)
        if dist.is_main:
            stage.mark_done(args.exp_dir, MARKER)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
