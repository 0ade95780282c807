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
import shutil
import time

from flowse.data import jobdirs
from flowse.data.simulate import STEP, SimulateConfig, set_inputs, simulate_sets
from flowse.utils.config import load_config, save_config
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="simulate.yaml")
    parser.add_argument("--local_dir", required=True, help="stage-0 lists, e.g. data/local")
    parser.add_argument("--data_dir", required=True, help="where the set dirs go, e.g. data")
    parser.add_argument("--nj", type=int, default=1)
    parser.add_argument("--cmd", default="local", help="job backend: local | slurm <srun options>")
    parser.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = parser.parse_known_args(argv)
    setup_logging(os.path.join(args.data_dir, "log", "simulate.log"))
    cfg = load_config(SimulateConfig, args.config, overrides)
    if not cfg.sets:
        raise SystemExit(f"{args.config}: no sets to simulate (the 'sets' mapping is empty)")
    force = args.force == "true"
    todo, inputs = [], {}
    for name in cfg.sets:
        set_dir = os.path.join(args.data_dir, name)
        inputs[name] = set_inputs(cfg, name, args.local_dir)
        if jobdirs.stage_up_to_date(set_dir, STEP, inputs[name], force):
            logger.info(f"{set_dir}: already simulated, skipping (--force true to redo)")
            continue
        jobdirs.stage_start(set_dir, STEP)
        if force and os.path.isdir(set_dir):
            shutil.rmtree(set_dir)
        todo.append(name)
    if not todo:
        return
    start = time.time()
    counts = simulate_sets(cfg, todo, args.local_dir, args.data_dir, args.nj, args.cmd)
    for name in todo:
        set_dir = os.path.join(args.data_dir, name)
        save_config(cfg, os.path.join(set_dir, "simulate.yaml"))
        jobdirs.stage_finish(set_dir, STEP, inputs[name])
        c = counts[name]
        logger.info(f"{set_dir}: {c['utterances']} utterances ({c['seconds'] / 3600:.3f} h), {c['skipped']} skipped")
    wall = time.time() - start
    n = sum(c["utterances"] for c in counts.values())
    hours = sum(c["seconds"] for c in counts.values()) / 3600
    skipped = sum(c["skipped"] for c in counts.values())
    logger.info(
        f"stage 1 done: {n} utterances, {hours:.3f} h of audio in {wall:.1f} s with nj={args.nj}: "
        f"{n / wall:.1f} utt/s, {hours / (wall / 3600):.0f} audio-hours/hour; {skipped} skipped"
    )


if __name__ == "__main__":
    main()
