"""DPO for flow matching on a tiny DiT with the cheap mel-band reward: the pair job, the loss, learning."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from flowse.data.kaldi import ScpReader
from flowse.rl.dpo import DPOConfig, DPOTask, dpo_loss, velocity_error
from flowse.rl.dpo_pairs import PairSet, choose_pair, generate_pairs
from flowse.rl.lora import reference_policy
from flowse.train.trainer import Trainer
from flowse.utils.config import load_config
from flowse.utils.fileio import read_jsonl
from test_grpo_algorithm import FRAMES, BandReward, prompt_set, tiny_model

HERE = os.path.dirname(os.path.abspath(__file__))


def make_cfg(**over) -> DPOConfig:
    base = dict(
        rollout=dict(group_size=4, prompts_per_round=2, rounds_per_iter=2, crop_seconds=FRAMES * 256 / 16000,
                     min_seconds=0.0, nfe=6),
        pairs=dict(num_prompts=16),
        train=dict(seed=3, max_steps=30, train_batch_size=8, micro_batch_size=4, lr=1e-2, beta=500.0,
                   schedule="constant", eval_interval=0, ckpt_interval=1000, progress=False),
        lora=dict(r=4, alpha=8), eval=dict(nfe=6),
    )
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(DPOConfig, None, base)


def dpo(cfg: DPOConfig, exp_dir: str, n_prompts: int = 16) -> Trainer:
    return Trainer(DPOTask(tiny_model(dropout=0.0), cfg, BandReward(), prompt_set(n_prompts, 0)), cfg.train, exp_dir)


def test_choose_pair_needs_a_unanimous_winner():
    rewards = np.array([0.5, 0.9, 0.1, 0.3])
    values = {"a": np.array([0.5, 0.9, 0.1, 0.3]), "b": np.array([1.0, 2.0, 3.0, 0.0])}
    assert choose_pair(values, rewards, unanimous=True) == (1, 3)  # 2 has the lowest reward but beats 1 on b
    assert choose_pair(values, rewards, unanimous=False) == (1, 2)
    assert choose_pair({"a": np.ones(3)}, np.ones(3)) is None  # no strictly worse candidate


def test_loss_is_log2_at_the_reference_and_equal_pairs_give_no_gradient(tmp_path):
    e = torch.tensor([0.3, 0.7], requires_grad=True)
    loss, diff = dpo_loss(e, e, torch.tensor([0.3, 0.7]), torch.tensor([0.3, 0.7]), 2500.0)
    assert loss.tolist() == pytest.approx([np.log(2)] * 2) and diff.tolist() == [0.0, 0.0]
    # a pair set whose winner equals its loser: identical velocity errors, a zero gradient
    tr = dpo(make_cfg(pairs=dict(num_prompts=8), train=dict(max_steps=2)), str(tmp_path / "exp"))
    tr.task.begin(tr)
    tr.task.train_step(tr)  # a real pair set: a gradient of the usual size
    g_real = max(float(p.grad.abs().max()) for p in tr.task.params)
    pair_dir = str(tmp_path / "exp" / "pairs")
    os.replace(os.path.join(pair_dir, "winner.scp"), os.path.join(pair_dir, "loser.scp"))
    os.link(os.path.join(pair_dir, "loser.scp"), os.path.join(pair_dir, "winner.scp"))
    tr.task.pairs = PairSet.load(pair_dir)
    tr.task.train_step(tr)
    g_equal = max(float(p.grad.abs().max()) for p in tr.task.params)
    assert g_real > 1e-3 and g_equal < 1e-5 * g_real, (g_real, g_equal)  # float32 round-off only


@pytest.mark.slow
def test_dpo_lowers_the_winners_velocity_error_against_the_losers(tmp_path):
    tr = dpo(make_cfg(), str(tmp_path / "exp"))
    tr.fit()
    pairs = tr.task.pairs
    assert len(pairs) == 16 and len(set(pairs.ids)) == 16
    task = tr.task
    idx = list(range(len(pairs)))
    cond, x_w, x_l, mask, t, eps = task._tensors(idx, 10_000)  # fresh times and noise, the same for both
    gaps = {}
    with torch.no_grad():
        for name in ("ref", "dpo"):
            ctx = reference_policy(task.model) if name == "ref" else torch.enable_grad()
            with ctx:
                e = [velocity_error(task.collector.velocity(((1 - t[:, None, None]) * eps + t[:, None, None] * x) *
                                                            mask[..., None], cond, t, mask), x - eps, mask)
                     for x in (x_w, x_l)]
            gaps[name] = (e[0] - e[1]).numpy()
    drop = gaps["dpo"] - gaps["ref"]  # (e_w - e_l) after DPO minus before: negative = winner favoured
    assert drop.mean() < 0 and (drop < 0).mean() >= 0.75, drop  # measured: mean -0.05, 16 of 16 negative
    assert tr.history[-1]["implicit_acc"] > 0.7 and tr.history[-1]["loss"] < np.log(2)


def _pair_job(exp_dir: str, delay: float) -> subprocess.Popen:
    """The pair generation of ``make_cfg`` (4 chunks) in a child process, pausing ``delay`` s after chunk 1."""
    code = f"""
import sys, time
sys.path.insert(0, {HERE!r})
import flowse.rl.dpo_pairs as dp
from test_dpo import dpo, make_cfg
orig = dp._write_chunk
def slow(chunk_dir, *a, **k):
    orig(chunk_dir, *a, **k)
    if chunk_dir.endswith("/1"):
        time.sleep({delay})
dp._write_chunk = slow
tr = dpo(make_cfg(pairs=dict(num_prompts=32)), {exp_dir!r}, n_prompts=32)
tr.task.begin(tr)
"""
    return subprocess.Popen([sys.executable, "-c", code], cwd=HERE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_pair_job_resumes_after_kill_9_without_duplicates(tmp_path):
    clean = str(tmp_path / "clean")
    p = _pair_job(clean, 0.0)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    killed = str(tmp_path / "killed")
    p = _pair_job(killed, 30.0)
    done1 = os.path.join(killed, "pairs", "chunks", "1", ".pairs.done")
    t0 = time.time()
    while not os.path.exists(done1):
        assert p.poll() is None and time.time() - t0 < 300, "the pair job ended before its second chunk"
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not os.path.exists(os.path.join(killed, "pairs", ".pairs.done"))
    first = {c: os.stat(os.path.join(killed, "pairs", "chunks", c, "winner.ark")).st_mtime_ns for c in ("0", "1")}
    p = _pair_job(killed, 0.0)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    for c, mtime in first.items():  # finished chunks were kept, not redone
        assert os.stat(os.path.join(killed, "pairs", "chunks", c, "winner.ark")).st_mtime_ns == mtime
    ids = {}
    for d in (clean, killed):
        lines = [ln.split()[0] for ln in open(os.path.join(d, "pairs", "winner.scp"))]
        assert len(lines) == len(set(lines)) > 0  # no duplicates
        ids[d] = lines
        scores = read_jsonl(os.path.join(d, "pairs", "scores.jsonl"))
        assert [r["id"] for r in sorted(scores, key=lambda r: r["id"])] == lines
    assert ids[clean] == ids[killed]
    a, b = (ScpReader(os.path.join(d, "pairs", "loser.scp")) for d in (clean, killed))
    for k in ids[clean]:
        np.testing.assert_array_equal(a[k], b[k])


def test_pairs_are_regenerated_when_their_config_changes(tmp_path):
    exp = str(tmp_path / "exp")
    tr = dpo(make_cfg(pairs=dict(num_prompts=8)), exp)
    info = generate_pairs(tr.task.collector, os.path.join(exp, "pairs"), 8, True, tr.task.pair_key())
    assert info["prompts"] == 8 and info["chunks"] == 2 and info["pairs"] == len(PairSet.load(os.path.join(exp, "pairs")))
    tr2 = dpo(make_cfg(pairs=dict(num_prompts=12)), exp)
    info2 = generate_pairs(tr2.task.collector, os.path.join(exp, "pairs"), 12, True, tr2.task.pair_key())
    assert info2["prompts"] == 12 and info2["chunks"] == 3
    assert len(os.listdir(os.path.join(exp, "pairs", "chunks"))) == 3
