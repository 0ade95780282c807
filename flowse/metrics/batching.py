"""Batch helpers shared by the reference-based metrics."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def dedup_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Unique arrays (float32) and, per input, the index of its copy among them.

    GRPO scores the G candidates of one prompt against the same reference: the
    reference is embedded once instead of G times.
    """
    index_of: dict[tuple[int, int], int] = {}
    unique: list[np.ndarray] = []
    index: list[int] = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        key = (len(a), hash(a.tobytes()))
        if key not in index_of:
            index_of[key] = len(unique)
            unique.append(a)
        index.append(index_of[key])
    return unique, index
