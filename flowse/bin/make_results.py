"""Write <exp_dir>/RESULTS.md and results.json from <exp_dir>/scores_<set>/summary.json.

    python -m flowse.bin.make_results --exp_dir exp/grpo_x --sets "test_no_reverb test_with_reverb" [--title ...]
"""
from __future__ import annotations

import argparse

from flowse.metrics.results import make_results
from flowse.utils.cli import run
from flowse.utils.log import get_logger, setup_logging

logger = get_logger("flowse.bin.make_results")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--sets", required=True, help="test set names, space or comma separated")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    setup_logging()
    sets = [s for s in args.sets.replace(",", " ").split() if s]
    md, results = make_results(args.exp_dir, sets, args.title)
    logger.info("wrote %s/RESULTS.md and results.json (%d of %d sets scored)", args.exp_dir, len(results), len(sets))
    print(md)
    return 0


if __name__ == "__main__":
    run(main)
