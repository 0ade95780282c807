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
import shutil
import time

from flowse.data import jobdirs
from flowse.data.dump import STEP, dump_sets
from flowse.features.mel import MelConfig
from flowse.utils.config import ConfigError, load_config, save_config, to_dict
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="mel.yaml (MelConfig keys)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--dump_dir", required=True)
    parser.add_argument("--sets", required=True, help='space-separated set names, e.g. "train valid test_no_reverb"')
    parser.add_argument("--stats_sets", default="train", help="sets that get stats.json (space-separated)")
    parser.add_argument("--nj", type=int, default=1)
    parser.add_argument("--cmd", default="local", help="job backend: local | slurm <srun options>")
    parser.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = parser.parse_known_args(argv)
    setup_logging(os.path.join(args.dump_dir, "log", "dump_mel.log"))
    cfg = load_config(MelConfig, args.config, overrides)
    sets = args.sets.split()
    if not sets:
        raise ConfigError("--sets is empty")
    missing = [s for s in sets if not os.path.isdir(os.path.join(args.data_dir, s))]
    if missing:
        raise FileNotFoundError(f"no data dir for set(s) {missing} under {args.data_dir} (run stages 0-1)")
    force = args.force == "true"
    stats_sets = set(args.stats_sets.split())
    mel = to_dict(cfg)
    save_config(cfg, os.path.join(args.dump_dir, "mel.yaml"))
    todo = []
    for name in sets:
        set_dir, out_dir = os.path.join(args.data_dir, name), os.path.join(args.dump_dir, name)
        inputs = {"mel": mel, "stats": name in stats_sets,
                  "data": {f: jobdirs.file_md5(os.path.join(set_dir, f)) for f in ("wav.scp", "spk1.scp")}}
        if jobdirs.stage_up_to_date(out_dir, STEP, inputs, force):
            logger.info(f"{out_dir}: already dumped, skipping (--force true to redo)")
            continue
        jobdirs.stage_start(out_dir, STEP)
        if force and os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        todo.append((name, set_dir, out_dir, inputs))
    if not todo:
        return
    start = time.time()
    counts = dump_sets(mel, [(d, o, name in stats_sets) for name, d, o, _ in todo], args.nj, args.cmd,
                       os.path.join(args.dump_dir, "log"))
    for (name, _, out_dir, inputs), c in zip(todo, counts):
        jobdirs.stage_finish(out_dir, STEP, inputs)
        logger.info(f"{out_dir}: {c['utterances']} utterances, {c['frames']} frames, {c['skipped']} skipped")
    wall = time.time() - start
    n = sum(c["utterances"] for c in counts)
    logger.info(f"stage 2 done: {n} utterances, {sum(c['frames'] for c in counts)} frames in {wall:.1f} s "
                f"with nj={args.nj} ({n / wall:.1f} utt/s); {sum(c['skipped'] for c in counts)} skipped")


if __name__ == "__main__":
    main()
