"""Score enhanced audio: one Kaldi-style file per metric plus summary.json in --out_dir.

    python -m flowse.bin.score --est exp/x/enhanced_test/wav.scp --ref data/test/spk1.scp \\
        --metrics dnsmos,spk,sbs,pesq,estoi,sisdr --out_dir exp/x/scores_test \\
        [--text data/test/text] [--nj 4] [--config conf/mini/score.yaml] [--device cpu|cuda] [--section.key value ...]

--est / --ref: a wav.scp (ark entries or audio paths) or a folder of audio files
(utt id = file name without extension). Keys are matched by utt id; estimates
without a reference are an error naming them. Without --ref only the
non-intrusive DNSMOS metrics are computed. --text: reference transcripts
(Kaldi text file, "<utt> <words>") for WER/CER (metric group wer); without it
they are n/a. Unusable utterances are skipped with
one log line each and listed in summary.json ("num_skipped", "skipped"); the exit
status stays 0 unless --fail_on_skip true (then 3, after writing all outputs).
A finished dir is skipped on rerun unless --force true.
"""
from __future__ import annotations

import argparse
import sys

from flowse.metrics.config import ScoreConfig
from flowse.metrics.registry import METRICS
from flowse.utils.cli import add_job_options, boolean
from flowse.utils.config import load_config
from flowse.utils.errors import UserError
from flowse.utils.log import setup_logging

EXIT_SKIPPED = 3


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--est", required=True, help="wav.scp or folder of the audio to score")
    p.add_argument("--ref", default=None, help="wav.scp or folder of the clean references (spk1.scp)")
    p.add_argument("--text", default=None, help="Kaldi text file of reference transcripts (for wer)")
    p.add_argument("--metrics", default=None, help=f"comma list of {','.join(METRICS)} (default: config)")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--config", default=None, help="score.yaml")
    add_job_options(p, "parallel jobs (keys split evenly)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="threads per job (0: cores / nj)")
    p.add_argument("--keys", default=None, help="score only the utt ids listed in this file (one per line)")
    p.add_argument("--progress", type=boolean, default=True)
    p.add_argument("--fail_on_skip", type=boolean, default=False, help=f"exit {EXIT_SKIPPED} if any utt was skipped")
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = get_parser().parse_known_args(argv)
    setup_logging()
    from flowse.metrics.scoring import score_set

    cfg = load_config(ScoreConfig, args.config, extra)
    keys = None
    if args.keys:
        with open(args.keys, encoding="utf-8") as f:
            keys = [line.split()[0] for line in f if line.strip()]
    try:
        summary = score_set(args.est, args.out_dir, args.ref, cfg, args.metrics, keys, args.nj, args.cmd,
                            args.device, args.threads, args.progress, args.force, args.text)
    except UserError as e:
        raise SystemExit(f"score: {e}") from None
    return EXIT_SKIPPED if (args.fail_on_skip and summary["num_skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
