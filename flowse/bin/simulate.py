"""Stage 1: simulate noisy (and reverberant) mixtures into Kaldi data dirs.

    python -m flowse.bin.simulate --config conf/mini/simulate.yaml --local_dir data/local \\
        --data_dir data --nj 2 [--cmd local] [--force false] [--sets.train.snr_range [0,20] ...]

For each set of the yaml writes ``<data_dir>/<set>/`` (wav.scp, spk1.scp,
noise1.scp, utt2spk, spk2utt, utt2dur, utt2info, simulate.yaml) with audio in
ark files. Sets already done with the same config and stage-0 lists are skipped
unless --force true; a killed run redoes only its unfinished jobs. Logs the
throughput (utterances/s and audio-hours per hour).
"""
from __future__ import annotations

import argparse
import os

from flowse.data.simulate import SimulateConfig
from flowse.data.stages import run_simulate
from flowse.utils.cli import add_job_options, run
from flowse.utils.config import load_config
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="simulate.yaml")
    parser.add_argument("--local_dir", required=True, help="stage-0 lists, e.g. data/local")
    parser.add_argument("--data_dir", required=True, help="where the set dirs go, e.g. data")
    add_job_options(parser)
    args, overrides = parser.parse_known_args(argv)
    setup_logging(os.path.join(args.data_dir, "log", "simulate.log"))
    cfg = load_config(SimulateConfig, args.config, overrides)
    run_simulate(cfg, args.local_dir, args.data_dir, args.nj, args.cmd, args.force)


if __name__ == "__main__":
    run(main)
