"""Stage 0: corpus preparation (synthesize the mini corpus, or scan DNS2020 + extra dirs).

    python -m flowse.bin.prepare_corpus --corpus mini --config conf/mini/corpus.yaml \\
        --out_dir data/local [--nj 2] [--force true] [--mini.utts.train 100 ...]
    python -m flowse.bin.prepare_corpus --corpus dns2020 --config conf/paper/corpus.yaml \\
        --dns_root /data/DNS-Challenge --out_dir data/local

Extra ``--key value`` arguments override the yaml. Writes the lists to --out_dir
(official DNS test sets as data dirs beside it, in --data_dir), the resolved
config to ``<out_dir>/corpus.yaml``, and the done marker last; a finished run is
skipped unless --force true or its config or inputs changed.
"""
from __future__ import annotations

import argparse
import os

from flowse.data.corpus import CORPORA, CorpusConfig
from flowse.data.stages import run_prepare_corpus
from flowse.utils.cli import add_job_options, run
from flowse.utils.config import load_config
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, choices=CORPORA)
    parser.add_argument("--config", required=True, help="corpus.yaml")
    parser.add_argument("--dns_root", default="", help="DNS-Challenge checkout (dns2020 only)")
    parser.add_argument("--out_dir", required=True, help="list dir, e.g. data/local")
    parser.add_argument("--data_dir", default=None, help="where official test sets go (default: parent of --out_dir)")
    add_job_options(parser, "parallel synthesis jobs (mini, synthetic RIRs)")
    args, overrides = parser.parse_known_args(argv)
    setup_logging(os.path.join(args.out_dir, "log", "prepare_corpus.log"))
    cfg = load_config(CorpusConfig, args.config, overrides)
    data_dir = args.data_dir or os.path.dirname(os.path.abspath(args.out_dir))
    run_prepare_corpus(args.corpus, cfg, args.out_dir, data_dir, args.dns_root, args.nj, args.cmd, args.force)


if __name__ == "__main__":
    run(main)
