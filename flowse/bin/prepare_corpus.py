"""Stage 0: corpus preparation (synthesize the mini corpus, or scan DNS2020 + extra dirs).

    python -m flowse.bin.prepare_corpus --corpus mini --config conf/mini/corpus.yaml \\
        --out_dir data/local [--nj 2] [--force true] [--mini.utts.train 100 ...]
    python -m flowse.bin.prepare_corpus --corpus dns2020 --config conf/paper/corpus.yaml \\
        --dns_root /data/DNS-Challenge --out_dir data/local

Extra ``--key value`` arguments override the yaml. Writes the lists to --out_dir
(official DNS test sets as data dirs beside it, in --data_dir), the resolved
config to ``<out_dir>/corpus.yaml``, and the done marker last; a finished run is
skipped unless --force true or its inputs changed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

from flowse.data import jobdirs
from flowse.data.corpus import CORPORA, CorpusConfig, prepare_corpus
from flowse.data.corpus_mini import SENTENCE_DIR
from flowse.utils.config import load_config, save_config, to_dict
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, choices=CORPORA)
    parser.add_argument("--config", required=True, help="corpus.yaml")
    parser.add_argument("--dns_root", default="", help="DNS-Challenge checkout (dns2020 only)")
    parser.add_argument("--out_dir", required=True, help="list dir, e.g. data/local")
    parser.add_argument("--data_dir", default=None, help="where official test sets go (default: parent of --out_dir)")
    parser.add_argument("--nj", type=int, default=1, help="parallel synthesis jobs (mini, synthetic RIRs)")
    parser.add_argument("--cmd", default="local", help="job backend: local | slurm <srun options>")
    parser.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = parser.parse_known_args(argv)
    force = args.force == "true"
    setup_logging(os.path.join(args.out_dir, "log", "prepare_corpus.log"))
    cfg = load_config(CorpusConfig, args.config, overrides)
    data_dir = args.data_dir or os.path.dirname(os.path.abspath(args.out_dir))
    step = f"prepare_corpus_{args.corpus}"
    section = cfg.mini if args.corpus == "mini" else cfg.dns2020
    inputs = {"corpus": args.corpus, "dns_root": os.path.abspath(args.dns_root) if args.dns_root else "",
              "seed": cfg.seed, "rir": to_dict(cfg.rir), args.corpus: to_dict(section)}
    if args.corpus == "mini":
        inputs["sentences"] = {f: jobdirs.file_md5(os.path.join(SENTENCE_DIR, f)) for f in sorted(os.listdir(SENTENCE_DIR))}
    if jobdirs.stage_up_to_date(args.out_dir, step, inputs, force):
        logger.info(f"{args.out_dir}: stage 0 ({args.corpus}) already done, skipping (--force true to redo)")
        return
    jobdirs.stage_start(args.out_dir, step)
    if force:
        shutil.rmtree(os.path.join(args.out_dir, "jobs"), ignore_errors=True)
    counts = prepare_corpus(args.corpus, cfg, args.out_dir, data_dir, args.dns_root or None, args.nj, args.cmd)
    logger.info(f"stage 0 ({args.corpus}) done: {json.dumps(counts)}")
    save_config(cfg, os.path.join(args.out_dir, "corpus.yaml"))
    jobdirs.stage_finish(args.out_dir, step, inputs)


if __name__ == "__main__":
    main()
