"""Stage 2: dump log-mel features of data dirs.

    python -m flowse.bin.dump_mel --config conf/mini/mel.yaml --data_dir data --dump_dir dump \\
        --sets "train valid test_no_reverb test_with_reverb" --nj 2 [--cmd local] [--force false] \\
        [--stats_sets train] [--hop_length 256 ...]

The yaml holds ``flowse.features.mel.MelConfig`` keys. Writes ``<dump_dir>/<set>/``
(feats.scp, spk1_feats.scp when the set has spk1.scp, utt2num_frames, stats.json
for --stats_sets) and the resolved mel config to ``<dump_dir>/mel.yaml``, which
later stages read. A set already dumped with the same mel config and data is
skipped unless --force true; a killed run redoes only its unfinished jobs.
"""
from __future__ import annotations

import argparse
import os

from flowse.data.stages import run_dump_mel
from flowse.features.mel import MelConfig
from flowse.utils.cli import add_job_options, run
from flowse.utils.config import load_config
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="mel.yaml (MelConfig keys)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--dump_dir", required=True)
    parser.add_argument("--sets", required=True, help='space-separated set names, e.g. "train valid test_no_reverb"')
    parser.add_argument("--stats_sets", default="train", help="sets that get stats.json (space-separated)")
    add_job_options(parser)
    args, overrides = parser.parse_known_args(argv)
    setup_logging(os.path.join(args.dump_dir, "log", "dump_mel.log"))
    cfg = load_config(MelConfig, args.config, overrides)
    run_dump_mel(cfg, args.data_dir, args.dump_dir, args.sets.split(), args.stats_sets.split(), args.nj, args.cmd,
                 args.force)


if __name__ == "__main__":
    run(main)
