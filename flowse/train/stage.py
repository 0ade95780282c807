"""The shared frame of a training stage (pretraining, GRPO): skip-if-done, DDP set-up, config, marker."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch

from flowse.utils import stage
from flowse.utils.config import save_config
from flowse.utils.distributed import DistInfo, cleanup, init_distributed
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def set_threads(threads: int, local_world_size: int = 1) -> int:
    """Torch intra-op threads: ``threads``, or all cores shared by the local ranks when 0."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(n)
    return n


def run_training_stage(name: str, exp_dir: str, cfg: Any, threads: int, device: str, force: bool,
                       body: Callable[[DistInfo], object]) -> int:
    """Run ``body(dist)`` once per exp dir: logs to ``train.log``, skips when the ``name`` marker
    holds this config's key (unless ``force``), writes the resolved config (rank 0), marks done last (rank 0)."""
    os.makedirs(exp_dir, exist_ok=True)
    setup_logging(os.path.join(exp_dir, "train.log"))
    key = stage.step_key(config=cfg)
    if stage.is_done(exp_dir, name, key, force):
        logger.info("%s: %s already done with this config (marker %s); skipping (use --force true to redo)", exp_dir,
                    name, stage.marker_path(exp_dir, name))
        return 0
    stage.clear(exp_dir, name)
    dist = init_distributed(device)
    n = set_threads(threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if dist.is_main:
        save_config(cfg, os.path.join(exp_dir, "config.yaml"))
    logger.info("%s -> %s on %s (%d rank(s)), %d thread(s)/rank", name, exp_dir, dist.device, dist.world_size, n)
    try:
        body(dist)
        if dist.is_main:
            stage.mark_done(exp_dir, name, key)
    finally:
        cleanup()
    return 0
