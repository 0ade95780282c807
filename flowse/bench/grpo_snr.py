"""How many GRPO candidates does one update need? The policy gradient's signal-to-noise ratio.

    python -m flowse.bench.grpo_snr --config conf/mini/grpo.yaml --init_dir exp/pretrain_mini \\
        --data_dir data --dump_dir dump --estimates 12 [--out grads.pt] [--rollout.group_size 8 ...]
    torchrun --nproc_per_node 4 -m flowse.bench.grpo_snr ... --device cuda

Collects ``--estimates`` independent GRPO iterations (the config's collection shape: its
prompts, groups, crops, sampler) from the model in ``--init_dir`` (the base model, no
update in between) and computes each iteration's policy gradient of Eq. 9 over all its
transitions. Their agreement (``flowse.rl.snr``) gives the signal share ``rho`` of one
iteration's gradient and the number of candidates one update needs for SNR 1. Use it before
a long run to choose ``rounds_per_iter x prompts_per_round x group_size`` (and the learning
rate: with ``rho << 1``, Adam steps are mostly noise and drift the model). ``--out`` keeps
the gradients (resumable: existing estimates are reused). Prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the other bins: no spinning OpenMP threads

import torch  # noqa: E402

from flowse.rl.config import GRPOConfig  # noqa: E402
from flowse.train.stage import set_threads  # noqa: E402
from flowse.utils.config import load_config  # noqa: E402
from flowse.utils.distributed import cleanup, init_distributed  # noqa: E402
from flowse.utils.fileio import atomic_open  # noqa: E402
from flowse.utils.log import get_logger, setup_logging  # noqa: E402

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    from flowse.rl.build import build_trainer
    from flowse.rl.snr import gradient_snr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="GRPO yaml (its collection shape is measured)")
    p.add_argument("--init_dir", required=True, help="model dir (stage 4 or a merged stage 5 exp dir)")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--dump_dir", required=True)
    p.add_argument("--train_set", default="train")
    p.add_argument("--estimates", type=int, default=12, help="independent iterations (>= 3)")
    p.add_argument("--first_iteration", type=int, default=0, help="iteration index of the first estimate (seeds)")
    p.add_argument("--out", default=None, help="torch file of the gradients (reused when it exists)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args, overrides = p.parse_known_args(argv)
    if args.estimates < 3:
        p.error("--estimates must be >= 3")
    cfg = load_config(GRPOConfig, args.config, overrides)
    setup_logging()
    dist = init_distributed(args.device)
    set_threads(cfg.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    try:
        trainer, _, _ = build_trainer(cfg, args.init_dir, args.data_dir, args.dump_dir, dist,
                                      train_set=args.train_set)
        ro = cfg.rollout
        cands = ro.rounds_per_iter * ro.prompts_per_round * ro.group_size
        grads: list[torch.Tensor] = []
        shape = {"candidates": cands, "first_iteration": args.first_iteration, "seed": cfg.train.seed}
        if args.out and os.path.exists(args.out):
            saved = torch.load(args.out, weights_only=True)
            if {k: saved.get(k) for k in shape} != shape:
                raise ValueError(f"{args.out} holds estimates of {({k: saved.get(k) for k in shape})}, not {shape}: "
                                 "give another --out")
            grads = list(saved["grads"])[: args.estimates]
            logger.info("%s: reusing %d gradient estimates", args.out, len(grads))
        for k in range(len(grads), args.estimates):
            t0 = time.perf_counter()
            grads.append(trainer.task.policy_gradient(args.first_iteration + k))
            logger.info("estimate %d/%d: |g| %.3e (%d candidates, %.1f s)", k + 1, args.estimates,
                        float(grads[-1].norm()), cands, time.perf_counter() - t0)
            if args.out and dist.is_main:
                with atomic_open(args.out, "wb", encoding=None) as f:
                    torch.save({"grads": grads, **shape}, f)
        res = gradient_snr(torch.stack(grads), cands)
        if dist.is_main:
            print(res.summary())
            print(json.dumps({"estimates": res.k, "candidates": cands, "rho": res.rho, "rho_se": res.rho_se,
                              "candidates_for_snr1": res.candidates_for_snr1, "grad_norm": res.grad_norm}))
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
