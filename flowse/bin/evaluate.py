"""Stage 6: enhance every test set with every system, score it, write RESULTS.md per system.

    python -m flowse.bin.evaluate --systems "exp/noisy_input exp/vocoder_mini exp/pretrain_mini" \\
        --exp_root exp --data_dir data --sets "test_no_reverb test_with_reverb" \\
        --config conf/mini/score.yaml [--nj 2] [--cmd local] [--device cpu] [--force false] \\
        [--enhance_args "--nfe 10"] [--models.dnsmos.threads 1 ...]

Systems: those of --systems, then every other dir under --exp_root holding a ``model.pt``
(see ``flowse.evaluate``). Extra ``--key value`` options override score.yaml;
--enhance_args holds ``flowse.enhance.EnhanceConfig`` keys (``--nfe 10 --cfg_strength 1.0``).
"""
from __future__ import annotations

import argparse

from flowse.enhance import EnhanceConfig
from flowse.evaluate import evaluate, find_systems
from flowse.metrics.config import ScoreConfig
from flowse.utils.cli import add_job_options, run
from flowse.utils.config import load_config
from flowse.utils.log import setup_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", required=True, help="space-separated exp dirs")
    p.add_argument("--exp_root", default=None, help="also score every exp dir under it that holds a model.pt")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--sets", required=True, help="space-separated test sets (data dirs)")
    p.add_argument("--config", default=None, help="score.yaml")
    p.add_argument("--device", default="cpu")
    p.add_argument("--enhance_args", default="", help="EnhanceConfig overrides, e.g. '--nfe 10'")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of the enhancement, which runs between the scoring jobs (0: all cores)")
    add_job_options(p)
    args, overrides = p.parse_known_args(argv)
    setup_logging()
    from flowse.train.stage import set_threads

    set_threads(args.threads)
    score_cfg = load_config(ScoreConfig, args.config, overrides)
    enhance_cfg = load_config(EnhanceConfig, None, args.enhance_args)
    evaluate(find_systems(args.systems.split(), args.exp_root), args.data_dir, args.sets.split(), score_cfg,
             enhance_cfg, args.nj, args.cmd, args.device, args.force)


if __name__ == "__main__":
    run(main)
