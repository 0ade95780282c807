"""The one checkpoint writer/reader: atomic ``checkpoint_<step>.pt`` files in an exp dir.

Checkpoints hold only tensors and plain Python containers so they load with
``torch.load(weights_only=True)`` (no pickled code is ever executed).
"""
from __future__ import annotations

import glob
import os
import re

import torch

from flowse.utils.fileio import atomic_open

_CKPT_RE = re.compile(r"checkpoint_(\d+)\.pt$")


def save_checkpoint(state: dict, path: str) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise RuntimeError(f"cannot load checkpoint {path}: {e}") from e


def checkpoint_path(exp_dir: str, step: int) -> str:
    return os.path.join(exp_dir, f"checkpoint_{step}.pt")


def list_checkpoints(exp_dir: str) -> list[tuple[int, str]]:
    out = []
    for p in glob.glob(os.path.join(exp_dir, "checkpoint_*.pt")):
        m = _CKPT_RE.search(p)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(exp_dir: str) -> str | None:
    ckpts = list_checkpoints(exp_dir)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(exp_dir: str, keep: int) -> None:
    """Keep the ``keep`` newest step checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(exp_dir)[:-keep]:
        os.unlink(p)
