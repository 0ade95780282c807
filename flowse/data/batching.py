"""Dynamic batching by total frames with length bucketing, and DDP sharding.

A batch holds utterances of similar (cropped) length so that ``batch_size x longest``
(the padded size) stays within ``batch_frames``. The paper's 100 s of audio per GPU
is 6250 frames at hop 256 / 16 kHz. Batch lists are a pure function of
``(lengths, seed, epoch)``, so a resumed run rebuilds exactly the same epoch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def make_batches(
    lengths: Sequence[int],
    batch_frames: int,
    max_frames: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    max_batch_size: int | None = None,
) -> list[list[int]]:
    """Group indices into batches with ``len(batch) * max(cropped length) <= batch_frames``.

    Lengths are first cropped to ``max_frames``; indices are sorted by cropped length
    (ties in an epoch-dependent random order when ``shuffle``), cut greedily, and the
    batch order is shuffled. A single utterance longer than ``batch_frames`` forms its own batch.
    """
    if batch_frames <= 0:
        raise ValueError(f"batch_frames must be positive, got {batch_frames}")
    lens = np.asarray(lengths, dtype=np.int64)
    if max_frames:
        lens = np.minimum(lens, max_frames)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lens)) if shuffle else np.arange(len(lens))
    order = order[np.argsort(lens[order], kind="stable")]
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = int(lens[i])
        new_longest = max(longest, n)
        full = max_batch_size is not None and len(cur) >= max_batch_size
        if cur and (new_longest * (len(cur) + 1) > batch_frames or full):
            batches.append(cur)
            cur, new_longest = [], n
        cur.append(int(i))
        longest = new_longest
    if cur:
        batches.append(cur)
    if shuffle:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int, equal: bool = True) -> list[list[int]]:
    """This rank's batches: ``batches[rank::world_size]``.

    With ``equal`` every rank gets the same count (DDP needs equal step counts): the
    tail that does not fill a round is dropped, and a list shorter than ``world_size``
    is repeated first.
    """
    if world_size <= 1:
        return list(batches)
    if not batches:
        return []
    if equal:
        while len(batches) < world_size:
            batches = batches + batches
        batches = batches[: len(batches) // world_size * world_size]
    return batches[rank::world_size]


def padding_efficiency(batches: list[list[int]], lengths: Sequence[int], max_frames: int | None = None) -> float:
    """Valid frames / padded frames over ``batches`` (1.0 = no padding)."""
    lens = np.asarray(lengths, dtype=np.int64)
    if max_frames:
        lens = np.minimum(lens, max_frames)
    valid = sum(int(lens[b].sum()) for b in batches)
    padded = sum(int(lens[b].max()) * len(b) for b in batches if b)
    return valid / padded if padded else 1.0
