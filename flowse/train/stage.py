"""The shared frame of a training stage (pretraining, GRPO): skip-if-done, DDP set-up, config, marker."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable

import torch

from flowse.utils import stage
from flowse.utils.config import save_config
from flowse.utils.distributed import DistInfo, barrier, cleanup, init_distributed
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def set_threads(threads: int, local_world_size: int = 1) -> int:
    """Torch intra-op threads: ``threads``, or all cores shared by the local ranks when 0."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(n)
    return n


def _without_step_budget(cfg: Any) -> dict:
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    if isinstance(data.get("train"), dict):
        data["train"] = {k: v for k, v in data["train"].items() if k != "max_steps"}
    return data


def run_training_stage(name: str, exp_dir: str, cfg: Any, threads: int, device: str, force: bool,
                       body: Callable[[DistInfo, bool], object], files: Iterable[str] = ()) -> int:
    """Run ``body(dist, resume)`` once per exp dir: logs to ``train.log``, skips when the ``name`` marker
    holds the key of this config and input ``files`` (unless ``force``), writes the resolved config
    (rank 0), marks done last (rank 0). ``resume`` is False when the checkpoints left in the exp dir
    belong to other inputs (a changed config or input file, or ``force``): the body then starts
    afresh instead of continuing a model trained on what changed. A raised ``train.max_steps``
    alone continues the run."""
    os.makedirs(exp_dir, exist_ok=True)
    setup_logging(os.path.join(exp_dir, "train.log"))
    key = stage.step_key(config=cfg, files=files)
    if stage.is_done(exp_dir, name, key, force):
        logger.info("%s: %s already done with these inputs (marker %s); skipping (use --force true to redo)",
                    exp_dir, name, stage.marker_path(exp_dir, name))
        return 0
    resume_key = stage.step_key(config=_without_step_budget(cfg), files=files)
    resume = stage.resumable(exp_dir, name, resume_key, key, force)
    # a rendezvous: every rank has read the marker and the started record before rank 0 rewrites them
    dist = init_distributed(device)
    n = set_threads(threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if dist.is_main:
        stage.clear(exp_dir, name)
        save_config(cfg, os.path.join(exp_dir, "config.yaml"))
        stage.mark_started(exp_dir, name, resume_key)
    logger.info("%s -> %s on %s (%d rank(s)), %d thread(s)/rank%s", name, exp_dir, dist.device, dist.world_size, n,
                "" if resume else "; not resuming: any checkpoints there are of other inputs")
    try:
        body(dist, resume)
        barrier()  # raises on a rank whose peer failed: no marker then
        if dist.is_main:
            stage.mark_done(exp_dir, name, key)
    finally:
        cleanup()
    return 0
