"""Decode the clean mel of test sets with a prepared vocoder (the vocoder ceiling), alone.

    python -m flowse.bin.vocoder_ceiling --vocoder_dir exp/vocoder_vocoder --data_dir data --dump_dir dump \\
        --sets "test_no_reverb test_with_reverb" [--device auto] [--force false] [--batch_size 4]

Writes ``<vocoder_dir>/enhanced_<set>/<utt>.wav`` + ``wav.scp`` (stage 3 runs the same step);
a set is redone when the vocoder dir was prepared again (its stage-3 marker key changed).
"""
from __future__ import annotations

import argparse

from flowse.models.vocoders import load_vocoder
from flowse.utils import stage
from flowse.utils.cli import add_force_option, run
from flowse.utils.distributed import init_distributed
from flowse.utils.log import setup_logging
from flowse.vocode import vocoder_ceiling


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocoder_dir", required=True)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--dump_dir", default="dump")
    p.add_argument("--sets", required=True, help="space-separated test sets")
    p.add_argument("--out_dir", default=None, help="default: the vocoder dir")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_force_option(p)
    args = p.parse_args(argv)
    setup_logging()
    device = init_distributed(args.device).device
    vocoder = load_vocoder(args.vocoder_dir, device)
    vocoder_ceiling(vocoder, args.data_dir, args.dump_dir, args.out_dir or args.vocoder_dir, args.sets.split(),
                    args.force, args.batch_size, stage.read_key(args.vocoder_dir, "vocoder"))


if __name__ == "__main__":
    run(main)
