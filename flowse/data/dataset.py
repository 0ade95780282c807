"""Paired (clean, noisy) log-mel training data read from a dump dir, and its batch loader.

A dump set dir (stage 2) holds ``feats.scp`` (noisy log-mel), ``spk1_feats.scp``
(clean log-mel), ``utt2num_frames`` and, for the training set, ``stats.json``.
Features are float32 ``[frames, n_mels]``. Utterances that cannot be used (missing
in one scp, zero frames, NaN/Inf values, noisy/clean frame counts differing by more
than one frame) are skipped with one warning line each when the dataset is loaded.

Batches come from ``flowse.data.batching``; ``BatchLoader`` is resumable: its
position is ``(epoch, index)`` and batch lists and random crops are pure functions
of ``(seed, epoch, index)``, so a resumed run reads exactly the same data.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from flowse.data.batching import make_batches, padding_efficiency, shard_batches
from flowse.data.kaldi import load_entry
from flowse.utils.config import check
from flowse.utils.fileio import c_sorted, read_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)


@dataclass
class DataConfig:
    """Training data settings.

    ``batch_frames``: padded frames per batch per rank (paper: 100 s = 6250 frames per GPU);
    ``max_frames``: random crop length of training utterances; ``cache``: keep all
    features in memory (small corpora); ``check_finite``: scan every feature matrix at
    load to skip NaN/Inf utterances (a full read of the set; non-finite batches met later
    are dropped at collate time anyway).
    """

    batch_frames: int = 6250
    max_frames: int = 1000
    min_frames: int = 8
    max_batch_size: int = 0
    valid_batch_frames: int = 0
    valid_max_utts: int = 0
    cache: bool = False
    check_finite: bool = True
    num_workers: int = 0

    def __post_init__(self):
        check(self.batch_frames > 0, f"data.batch_frames must be positive, got {self.batch_frames}")
        check(self.max_frames >= self.min_frames >= 1, "data: need max_frames >= min_frames >= 1")
        check(self.batch_frames >= self.max_frames, "data.batch_frames must be >= data.max_frames")
        check(self.max_batch_size >= 0 and self.valid_batch_frames >= 0 and self.valid_max_utts >= 0,
              "data: max_batch_size, valid_batch_frames, valid_max_utts must be >= 0 (0 = no limit / default)")
        check(self.num_workers >= 0, "data.num_workers must be >= 0")


_NOISY_KEYS = ("noisy", "feats")
_CLEAN_KEYS = ("clean", "spk1", "spk1_feats")


def _stream_stats(d: dict, where: str) -> dict:
    if "mean" in d and ("std" in d or "var" in d):
        std = d["std"] if "std" in d else np.sqrt(np.maximum(np.asarray(d["var"], dtype=np.float64), 0.0))
        return {"mean": np.asarray(d["mean"], dtype=np.float32), "std": np.asarray(std, dtype=np.float32)}
    if {"sum", "sum_sq", "count"} <= set(d):
        n = float(d["count"])
        mean = np.asarray(d["sum"], dtype=np.float64) / n
        var = np.asarray(d["sum_sq"], dtype=np.float64) / n - mean**2
        return {"mean": mean.astype(np.float32), "std": np.sqrt(np.maximum(var, 0.0)).astype(np.float32)}
    raise ValueError(f"{where}: expected 'mean' and 'std' (or 'var', or 'sum'/'sum_sq'/'count'), got keys {sorted(d)}")


def read_stats(path: str) -> dict:
    """Read ``stats.json`` -> ``{"clean": {"mean", "std"}, "noisy": {"mean", "std"}}`` (float32 arrays).

    Accepts the streams under ``noisy``/``feats`` and ``clean``/``spk1``/``spk1_feats``, each
    with ``mean`` + ``std`` (or ``var``, or ``sum``/``sum_sq``/``count``); std is floored at 1e-3.
    """
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = {}
    for kind, names in (("noisy", _NOISY_KEYS), ("clean", _CLEAN_KEYS)):
        name = next((n for n in names if n in raw), None)
        if name is None:
            raise ValueError(f"{path}: no {kind} statistics (looked for keys {list(names)}; found {sorted(raw)})")
        s = _stream_stats(raw[name], f"{path}:{name}")
        s["std"] = np.maximum(s["std"], 1e-3)
        out[kind] = s
    return out


class MelPairDataset:
    """``(clean [T, F], noisy [T, F])`` float32 pairs of one dump set dir."""

    def __init__(self, set_dir: str, min_frames: int = 1, cache: bool = False, check_finite: bool = True,
                 max_utts: int = 0):
        self.set_dir = set_dir
        noisy_scp = os.path.join(set_dir, "feats.scp")
        clean_scp = os.path.join(set_dir, "spk1_feats.scp")
        for p in (noisy_scp, clean_scp):
            if not os.path.exists(p):
                raise FileNotFoundError(f"{p} not found (run stage 2, log-mel dumping)")
        noisy, clean = read_kv(noisy_scp), read_kv(clean_scp)
        n2f_path = os.path.join(set_dir, "utt2num_frames")
        n2f = {k: int(v) for k, v in read_kv(n2f_path).items()} if os.path.exists(n2f_path) else {}
        keys = c_sorted(noisy)
        if max_utts:
            keys = keys[:max_utts]
        self.keys: list[str] = []
        self.lengths: list[int] = []
        self._noisy: dict[str, str] = {}
        self._clean: dict[str, str] = {}
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        skipped = 0
        for k in keys:
            reason, n, pair = None, n2f.get(k), None
            if k not in clean:
                reason = "no clean features (spk1_feats.scp)"
            elif n is not None and n < min_frames:
                reason = f"{n} frames < min_frames {min_frames}"
            elif cache or check_finite or n is None:
                try:
                    pair = self._read(noisy[k], clean[k], k)
                    n = pair[0].shape[0]
                    if n < min_frames:
                        reason = f"{n} frames < min_frames {min_frames}"
                    elif check_finite and not (np.isfinite(pair[0]).all() and np.isfinite(pair[1]).all()):
                        reason = "NaN or Inf feature values"
                except ValueError as e:
                    reason = str(e)
            if reason:
                logger.warning("%s: skipping utterance %s: %s", set_dir, k, reason)
                skipped += 1
                continue
            self.keys.append(k)
            self.lengths.append(int(n))
            self._noisy[k], self._clean[k] = noisy[k], clean[k]
            if cache and pair is not None:
                self._cache[k] = pair
        if not self.keys:
            raise ValueError(f"{set_dir}: no usable utterances ({skipped} skipped)")
        self.skipped = skipped
        self.n_mels = self[0][0].shape[1]

    @staticmethod
    def _read(noisy_value: str, clean_value: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            nz = np.asarray(load_entry(noisy_value, key), dtype=np.float32)
            cl = np.asarray(load_entry(clean_value, key), dtype=np.float32)
        except Exception as e:  # noqa: BLE001 - unreadable entry: reported by the caller
            raise ValueError(f"cannot read features ({e})") from None
        if nz.ndim != 2 or cl.ndim != 2 or nz.shape[1] != cl.shape[1]:
            raise ValueError(f"feature shapes noisy {nz.shape} / clean {cl.shape} are not [frames, n_mels]")
        if abs(nz.shape[0] - cl.shape[0]) > 1:
            raise ValueError(f"noisy has {nz.shape[0]} frames, clean {cl.shape[0]}")
        n = min(nz.shape[0], cl.shape[0])
        return cl[:n], nz[:n]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.keys[i]
        if k in self._cache:
            return self._cache[k]
        return self._read(self._noisy[k], self._clean[k], k)

    def total_seconds(self, hop: int = 256, sr: int = 16000) -> float:
        return sum(self.lengths) * hop / sr


def collate(pairs: list[tuple[np.ndarray, np.ndarray]], max_frames: int | None, rng: np.random.Generator | None,
            keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Crop (random offset from ``rng``, else from the start) to ``max_frames`` and zero-pad.

    Returns ``{"clean", "noisy": [B, T, F], "mask": [B, T] bool, "lengths": [B]}``;
    pairs with non-finite values are dropped with a warning naming the key.
    """
    crops = []
    for j, (cl, nz) in enumerate(pairs):
        if not (np.isfinite(cl).all() and np.isfinite(nz).all()):
            logger.warning("dropping utterance %s from its batch: NaN or Inf features", keys[j] if keys else j)
            continue
        n = cl.shape[0]
        if max_frames and n > max_frames:
            off = int(rng.integers(0, n - max_frames + 1)) if rng is not None else 0
            cl, nz, n = cl[off : off + max_frames], nz[off : off + max_frames], max_frames
        crops.append((cl, nz, n))
    b = len(crops)
    f = pairs[0][0].shape[1]
    t = max((c[2] for c in crops), default=0)
    clean = torch.zeros(b, t, f)
    noisy = torch.zeros(b, t, f)
    lengths = torch.zeros(b, dtype=torch.long)
    for j, (cl, nz, n) in enumerate(crops):
        clean[j, :n] = torch.tensor(cl)
        noisy[j, :n] = torch.tensor(nz)
        lengths[j] = n
    mask = torch.arange(t)[None] < lengths[:, None]
    return {"clean": clean, "noisy": noisy, "mask": mask, "lengths": lengths}


class _EpochBatches(torch.utils.data.Dataset):
    def __init__(self, ds: MelPairDataset, batches: list[list[int]], start: int, max_frames: int | None,
                 seed: int, epoch: int, rank: int, random_crop: bool):
        self.ds, self.batches, self.start = ds, batches, start
        self.max_frames, self.seed, self.epoch, self.rank, self.random_crop = max_frames, seed, epoch, rank, random_crop

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        index = self.start + j
        ids = self.batches[index]
        rng = np.random.default_rng([self.seed, self.epoch, index, self.rank]) if self.random_crop else None
        return collate([self.ds[i] for i in ids], self.max_frames, rng, [self.ds.keys[i] for i in ids])


class BatchLoader:
    """Endless, resumable iterator of this rank's batches: yields ``(epoch, index, batch)``.

    A batch whose every utterance was dropped at collate time is yielded empty (B = 0),
    so that all DDP ranks stay in step; the trainer skips it on every rank.

    Each epoch's batch list is ``make_batches`` of the dataset lengths with
    ``(seed, epoch)``, sharded with equal counts per rank; batch ``index`` of an epoch is
    cropped with ``rng(seed, epoch, index, rank)``. ``num_workers > 0`` prefetches in
    worker processes (same content).
    """

    def __init__(self, ds: MelPairDataset, batch_frames: int, max_frames: int | None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, num_workers: int = 0,
                 max_batch_size: int = 0):
        self.ds, self.batch_frames, self.max_frames = ds, batch_frames, max_frames
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.num_workers, self.max_batch_size = num_workers, max_batch_size or None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        all_b = make_batches(self.ds.lengths, self.batch_frames, self.max_frames, self.shuffle, self.seed, epoch,
                             self.max_batch_size)
        return shard_batches(all_b, self.rank, self.world_size, equal=True)

    def efficiency(self, epoch: int = 0) -> float:
        return padding_efficiency(self.epoch_batches(epoch), self.ds.lengths, self.max_frames)

    def iter_from(self, epoch: int = 0, index: int = 0) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        while True:
            batches = self.epoch_batches(epoch)
            if not batches:
                raise ValueError(f"{self.ds.set_dir}: no batches for rank {self.rank}")
            if index < len(batches):
                src = _EpochBatches(self.ds, batches, index, self.max_frames, self.seed, epoch, self.rank, self.shuffle)
                # own generator: a DataLoader draws its base seed from it, never from the global RNG
                # (a resumed run creates one more DataLoader than an uninterrupted one)
                loader = torch.utils.data.DataLoader(src, batch_size=None, shuffle=False,
                                                     num_workers=self.num_workers,
                                                     generator=torch.Generator().manual_seed(self.seed))
                for j, batch in enumerate(loader):
                    yield epoch, index + j, batch
            epoch, index = epoch + 1, 0
