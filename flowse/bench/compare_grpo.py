"""Paired per-iteration comparison of GRPO runs against a base run (see ``flowse.rl.compare``).

    python -m flowse.bench.compare_grpo exp/grpo_mini exp/grpo_mini_null [--metrics OVRL BAK] [--block 8]

Prints, per metric and block of iterations, the mean difference of the runs' logged
training means (run - base) with its paired standard error.
"""
from __future__ import annotations

import argparse

from flowse.rl.compare import check_comparable, load_history, paired_differences


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="GRPO exp dir")
    p.add_argument("base", help="GRPO exp dir with the same seed and rollout shape (e.g. a --train.lr 1e-12 null run)")
    p.add_argument("--metrics", nargs="+", default=None, help="train/<metric> keys (default: all logged)")
    p.add_argument("--block", type=int, default=8, help="iterations per reported block")
    args = p.parse_args(argv)
    run, base = load_history(args.run), load_history(args.base)
    check_comparable(run, base)
    keys = ["reward_mean"] + [f"train/{m}" for m in args.metrics] if args.metrics else \
        ["reward_mean"] + sorted(k for k in next(iter(run.values())) if k.startswith("train/"))
    print(f"{args.run} - {args.base} (paired by iteration; mean +- standard error per block)")
    for key in keys:
        blocks = paired_differences(run, base, key, args.block)
        print(f"  {key:16s} " + "  ".join(f"it {a}-{b}: {m:+.4f} +- {se:.4f}" for a, b, m, se in blocks))
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
