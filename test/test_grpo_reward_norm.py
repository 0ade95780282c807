"""Frozen reward normalisation: measured on the first collection, stored, reused bit-exactly on resume;
per-metric std and within-group share logged every iteration."""
import json

import numpy as np
import pytest
import torch

from flowse.rl.lora import lora_state_dict
from flowse.rl.reward import normalised_reward
from flowse.rl.task import GRPOTask
from flowse.train.trainer import Trainer
from test_grpo_algorithm import BandReward, make_cfg, prompt_set, tiny_model


class TwoBandReward(BandReward):
    """Two rewarded mel-band means (bins 4..7 and 0..3), combined by the library's multi-metric formula."""

    def __init__(self, mode: str):
        self.mode = mode

    def metrics(self, mel, prompts, judge=False):
        out = super().metrics(mel, prompts)
        m = prompts.mask.to(mel.device)[..., None].float()
        out["low"] = ((mel[..., 0:4] * m).sum((1, 2)) / (m.sum((1, 2)) * 4)).double().cpu().numpy()
        return out

    def rewarded_values(self, metrics):
        return {"band": metrics["band"], "low": 0.5 * metrics["low"]}

    def reward(self, metrics, stds=None):
        return normalised_reward(self.rewarded_values(metrics), {"band": 1.0, "low": 1.0}, self.mode, stds)


def _cfg(mode: str = "frozen"):
    return make_cfg(train=dict(max_steps=6, schedule="linear"), reward=dict(std_normalize=mode))


def _trainer(cfg, exp_dir=None) -> Trainer:
    task = GRPOTask(tiny_model(), cfg, TwoBandReward(cfg.reward.std_normalize), prompt_set(16, 0))
    return Trainer(task, cfg.train, exp_dir)


def test_frozen_normalisation_resumes_bit_exact(tmp_path):
    cfg = _cfg()
    straight = _trainer(cfg)
    straight.fit()
    frozen = straight.task.collector.frozen_stds
    assert set(frozen) == {"band", "low"}
    rows = straight.history
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert frozen == {"band": rows[0]["std/band"], "low": rows[0]["std/low"]}  # measured on iteration 0
    assert rows[1]["std/band"] != frozen["band"]  # later iterations would measure other stds
    assert all(0.0 <= r[f"within/{m}"] <= 1.0 for r in rows for m in ("band", "low"))
    first = _trainer(cfg, str(tmp_path))
    first.fit(stop_at=2)
    stored = json.loads((tmp_path / "reward_std.json").read_text())
    assert stored == {"iteration": 0, "stds": frozen}
    again = _trainer(cfg, str(tmp_path))
    again.fit()
    assert again.step == 6 and again.task.collector.frozen_stds == frozen
    for k, v in lora_state_dict(straight.task.model).items():
        assert torch.equal(lora_state_dict(again.task.model)[k], v), k
    assert [r["reward_mean"] for r in again.history] == [r["reward_mean"] for r in rows]
    # the same run with batch normalisation gives other rewards from iteration 1 on (the stds drift)
    batch = _trainer(_cfg("batch"))
    batch.fit(stop_at=4)
    assert batch.history[0]["reward_mean"] == pytest.approx(rows[0]["reward_mean"], rel=1e-12)
    assert batch.history[1]["reward_mean"] != pytest.approx(rows[1]["reward_mean"], rel=1e-6)


def test_frozen_resume_without_the_stored_stds_is_an_error(tmp_path):
    cfg = _cfg()
    _trainer(cfg, str(tmp_path)).fit(stop_at=2)
    (tmp_path / "reward_std.json").unlink()
    with pytest.raises(RuntimeError, match="reward_std.json not found"):
        _trainer(cfg, str(tmp_path)).fit()
