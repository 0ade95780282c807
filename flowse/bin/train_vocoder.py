"""Stage 3: prepare / train / load the vocoder, then decode the vocoder ceiling of the test sets.

    python -m flowse.bin.train_vocoder --config conf/mini/vocoder.yaml --data_dir data --dump_dir dump \\
        --exp_dir exp/vocoder_mini [--sets "test_no_reverb test_with_reverb"] [--device auto] \\
        [--force false] [--griffinlim.n_iter 64 ...]

What each vocoder type does here: ``flowse.train.vocoder_stage``.
"""
from __future__ import annotations

import argparse
import os

from flowse.train.hifigan import VocoderStageConfig
from flowse.train.vocoder_stage import StageDirs, run_vocoder_stage
from flowse.utils.cli import add_force_option, run
from flowse.utils.config import load_config
from flowse.utils.distributed import cleanup, init_distributed
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="vocoder yaml (conf/<c>/vocoder.yaml)")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--dump_dir", default="dump")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--sets", default="", help="space-separated test sets for the vocoder ceiling")
    p.add_argument("--train_set", default="train")
    p.add_argument("--valid_set", default="valid")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_force_option(p)
    args, overrides = p.parse_known_args(argv)
    os.makedirs(args.exp_dir, exist_ok=True)
    dist = init_distributed(args.device)
    setup_logging(os.path.join(args.exp_dir, "train.log"), rank=dist.rank)
    cfg = load_config(VocoderStageConfig, args.config, overrides)
    ctx = StageDirs(args.exp_dir, args.data_dir, args.dump_dir, args.train_set, args.valid_set, args.force)
    try:
        run_vocoder_stage(cfg, ctx, args.sets.split(), dist)
    finally:
        cleanup()


if __name__ == "__main__":
    run(main)
