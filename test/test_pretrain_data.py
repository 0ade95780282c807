"""Training data: dump-dir reading with bad-utterance skipping, frame batching, DDP sharding, resumable loader."""
import logging

import numpy as np
import pytest
import torch

from flowse.data.batching import make_batches, padding_efficiency, shard_batches
from flowse.data.dataset import BatchLoader, MelPairDataset, collate
from flowse.data.kaldi import ArkWriter
from flowse.utils.fileio import write_kv


def write_set(d, feats: dict, clean: dict | None = None, n2f: bool = True):
    d.mkdir(parents=True, exist_ok=True)
    clean = feats if clean is None else clean
    with ArkWriter(str(d / "feats.ark"), str(d / "feats.scp")) as w:
        for k, v in feats.items():
            w[k] = v
    with ArkWriter(str(d / "spk1_feats.ark"), str(d / "spk1_feats.scp")) as w:
        for k, v in clean.items():
            w[k] = v
    if n2f:
        write_kv(str(d / "utt2num_frames"), {k: v.shape[0] for k, v in feats.items()})


def test_dataset_skips_bad_utterances_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    good = {f"g{i}": rng.standard_normal((10 + i, 4)).astype(np.float32) for i in range(3)}
    nan = rng.standard_normal((8, 4)).astype(np.float32)
    nan[3, 1] = np.nan
    feats = {**good, "nan": nan, "short": np.zeros((1, 4), np.float32), "noclean": good["g0"],
             "mismatch": rng.standard_normal((20, 4)).astype(np.float32)}
    clean = {k: v for k, v in feats.items() if k != "noclean"}
    clean["mismatch"] = clean["mismatch"][:15]
    write_set(tmp_path / "s", feats, clean)
    with caplog.at_level(logging.WARNING):
        ds = MelPairDataset(str(tmp_path / "s"), min_frames=2)
    assert ds.keys == ["g0", "g1", "g2"] and ds.lengths == [10, 11, 12] and ds.skipped == 4
    for k in ("nan", "short", "noclean", "mismatch"):
        assert any(k in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records), k
    cl, nz = ds[1]
    assert np.array_equal(cl, good["g1"]) and cl.shape == (11, 4)


def test_dataset_without_usable_data_fails_clearly(tmp_path):
    write_set(tmp_path / "s", {"a": np.full((3, 4), np.inf, np.float32)})
    with pytest.raises(ValueError, match="no usable utterances"):
        MelPairDataset(str(tmp_path / "s"))


def test_make_batches_respects_the_frame_budget_and_covers_everything():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 300, size=200).tolist()
    batches = make_batches(lengths, batch_frames=1000, max_frames=250, seed=3, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    for b in batches:
        assert len(b) * min(max(lengths[i] for i in b), 250) <= 1000
    eff = padding_efficiency(batches, lengths, 250)
    assert eff > 0.9  # bucketing keeps padding small
    assert make_batches(lengths, 1000, 250, seed=3, epoch=0) == batches
    assert make_batches(lengths, 1000, 250, seed=3, epoch=1) != batches
    assert make_batches([5000, 10], 1000) in ([[1], [0]], [[0], [1]])  # over-long utterance alone
    assert max(len(b) for b in make_batches([10] * 50, 1000, max_batch_size=7)) == 7


def test_shard_batches_equal_counts_disjoint():
    batches = [[i] for i in range(11)]
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)) == 9
    assert [len(shard_batches([[0]], r, 2)) for r in range(2)] == [1, 1]


def test_collate_crops_pads_and_drops_non_finite():
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    b = np.ones((3, 4), np.float32)
    bad = np.full((5, 4), np.nan, np.float32)
    out = collate([(a, a + 100), (b, b), (bad, bad)], max_frames=6, rng=np.random.default_rng(0))
    assert out["clean"].shape == (2, 6, 4) and out["lengths"].tolist() == [6, 3]
    off = int(out["clean"][0, 0, 0]) // 4
    assert torch.equal(out["clean"][0], torch.from_numpy(a[off : off + 6]))
    assert torch.equal(out["noisy"][0], torch.from_numpy(a[off : off + 6] + 100))  # same crop on both streams
    assert out["mask"].tolist()[1] == [True] * 3 + [False] * 3 and out["clean"][1, 3:].abs().sum() == 0


def test_loader_resumes_at_any_position(tmp_path):
    rng = np.random.default_rng(2)
    feats = {f"u{i:02d}": rng.standard_normal((int(rng.integers(5, 60)), 4)).astype(np.float32) for i in range(30)}
    write_set(tmp_path / "s", feats)
    ds = MelPairDataset(str(tmp_path / "s"), cache=True)
    loader = BatchLoader(ds, batch_frames=120, max_frames=40, seed=7)
    it = loader.iter_from(0, 0)
    full = [next(it) for _ in range(len(loader.epoch_batches(0)) + 4)]  # crosses an epoch boundary
    e, i, _ = full[5]
    resumed = loader.iter_from(e, i)
    for want in full[5:]:
        got = next(resumed)
        assert got[:2] == want[:2]
        assert torch.equal(got[2]["clean"], want[2]["clean"]) and torch.equal(got[2]["noisy"], want[2]["noisy"])
    assert full[-1][0] == 1
