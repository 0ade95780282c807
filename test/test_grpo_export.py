"""Guarded export: the paired bootstrap guard, the chosen step on hand-made evaluations and on GRPO runs
(a guard that falls exports an earlier step, an improving run its best step, resume keeps the choice)."""
import json
import os

import numpy as np
import pytest
import torch

from flowse.models.dit import DiTConfig
from flowse.models.flowse_model import FlowConfig, FlowSEConfig
from flowse.models.io import load_model_dir
from flowse.rl.config import ExportConfig
from flowse.rl.export import choose_step, export_models, paired_lower_bound
from flowse.rl.lora import lora_state_dict, merge_lora
from flowse.rl.reward import normalised_reward
from flowse.rl.task import GRPOTask
from flowse.train.trainer import Trainer
from flowse.utils.checkpoint import load_checkpoint
from test_grpo_algorithm import F, BandReward, make_cfg, prompt_set, tiny_model


class GuardedBandReward(BandReward):
    """Rewards SISDR := the band mean; PESQ := a guard that falls by ``k`` per unit of band gain."""

    def __init__(self, k: float = 1.0):
        self.k = k

    def metrics(self, mel, prompts, judge=False):
        band = super().metrics(mel, prompts)["band"]
        return {"SISDR": band, "PESQ": 3.0 - self.k * band}

    def rewarded_values(self, metrics):
        return {"SISDR": metrics["SISDR"]}

    def reward(self, metrics, stds=None):
        return normalised_reward(self.rewarded_values(metrics), {"SISDR": 1.0}, "batch", stds)


def _row(step, sisdr, pesq):
    return {"step": step, "utt_keys": [f"u{i}" for i in range(len(sisdr))],
            "utt_values": {"SISDR": list(map(float, sisdr)), "PESQ": list(map(float, pesq))}}


def test_paired_bootstrap_lower_bound():
    assert paired_lower_bound(np.full(20, -0.3), 200, 0.95, 0) == pytest.approx(-0.3)
    d = np.random.default_rng(0).normal(0.1, 1.0, 400)
    lb = paired_lower_bound(d, 2000, 0.95, 0)
    assert lb == pytest.approx(d.mean() - 1.645 * d.std() / np.sqrt(400), abs=0.02)  # the normal approximation
    assert lb == paired_lower_bound(d, 2000, 0.95, 0)  # seeded


def test_choose_step_hand_made():
    rng = np.random.default_rng(1)
    base_s, base_p = rng.normal(5, 1, 40), rng.normal(3, 0.3, 40)
    noise = lambda: rng.normal(0, 0.01, 40)  # noqa: E731
    rows = [_row(0, base_s, base_p),
            _row(10, base_s + 0.5, base_p + noise()),  # better, guard held
            _row(20, base_s + 1.0, base_p - 0.2 + noise()),  # best reward, guard fell by 0.2
            _row(30, base_s + 0.2, base_p - 0.04 + noise())]  # within the tolerance but worse than step 10
    reward = GuardedBandReward()
    cfg = ExportConfig(guard_metrics=["PESQ", "DMOS"], tolerance=0.05, bootstrap=500)
    choice = choose_step(rows, reward, cfg)
    assert choice["step"] == 10 and choice["guard_metrics"] == ["PESQ"]  # DMOS not computed: not a guard
    s = choice["steps"]
    assert [s[k]["qualifies"] for k in ("0", "10", "20", "30")] == [True, True, False, True]
    assert s["20"]["guards"]["PESQ"]["lower_bound"] < -0.05 and s["20"]["reward"] > s["10"]["reward"]
    assert "step 20 (PESQ" in choice["summary"] and "Exported step 10" in choice["summary"]
    assert choose_step(rows, reward, ExportConfig(guard_metrics=["PESQ"], tolerance=0.5))["step"] == 20
    worse = [rows[0], _row(10, base_s - 0.1, base_p), _row(20, base_s + 1.0, base_p - 1.0)]
    none = choose_step(worse, reward, cfg)
    assert none["step"] == 0 and "the base model" in none["summary"]


def _run(exp_dir, k: float, tolerance: float, stop_at=None):
    cfg = make_cfg(train=dict(max_steps=12, eval_interval=4, lr=3e-2),
                   export=dict(guard_metrics=["PESQ"], tolerance=tolerance, bootstrap=200))
    task = GRPOTask(tiny_model(), cfg, GuardedBandReward(k), prompt_set(16, 0), eval_prompts=prompt_set(8, 1))
    tr = Trainer(task, cfg.train, str(exp_dir))
    tr.fit(stop_at=stop_at)
    return tr, cfg


def _export(tr, cfg, exp_dir):
    mcfg = FlowSEConfig(DiTConfig(n_mels=F, hidden=32, depth=2, heads=2, head_dim=16, ffn=64, conv_kernel=5,
                                  conv_groups=4, time_freq_dim=16, dropout=0.1), FlowConfig(normalize=False,
                                                                                             cfg_strength=1.0))
    choice = choose_step(tr.eval_history, tr.task.collector.reward_fn, cfg.export)
    final = {k: v.clone() for k, v in lora_state_dict(tr.task.model).items()}
    export_models(tr.task.model, mcfg, str(exp_dir), None, tr.step, choice)
    return choice, final


def _merged(lora_state: dict) -> dict:
    m = tiny_model()
    from flowse.rl.lora import apply_lora, load_lora_state_dict
    from flowse.rl.config import LoRAConfig

    apply_lora(m, LoRAConfig(r=4, alpha=8))
    load_lora_state_dict(m, lora_state)
    merge_lora(m)
    return m.state_dict()


def test_guarded_export_on_grpo_runs(tmp_path):
    # the guard falls with the reward: no step qualifies at tolerance 0, the base model is exported
    tr, cfg = _run(tmp_path / "falls", k=1.0, tolerance=0.0)
    ev = {r["step"]: r for r in tr.eval_history}
    assert sorted(ev) == [0, 4, 8, 12] and ev[12]["eval/SISDR"] > ev[0]["eval/SISDR"] + 0.05
    assert ev[12]["guarded_step"] == 0
    choice, _ = _export(tr, cfg, tmp_path / "falls")
    assert choice["step"] == 0
    base = tiny_model().state_dict()
    model, _ = load_model_dir(str(tmp_path / "falls"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, base[k], rtol=0, atol=1e-6)
    last, _ = load_model_dir(str(tmp_path / "falls" / "last"))
    assert any(not torch.allclose(v, base[k]) for k, v in last.state_dict().items())
    saved = json.load(open(tmp_path / "falls" / "export.json"))
    assert saved["step"] == 0 and saved["last_step"] == 12 and "Rejected by a guard" in saved["summary"]
    # a guard that does not fall: the best step is exported, with that step's adapter
    tr, cfg = _run(tmp_path / "improves", k=0.0, tolerance=0.0)
    rewards = {int(s): v["reward"] for s, v in choose_step(tr.eval_history, tr.task.collector.reward_fn,
                                                            cfg.export)["steps"].items()}
    best = max(rewards, key=rewards.get)
    assert best > 0
    choice, final = _export(tr, cfg, tmp_path / "improves")
    assert choice["step"] == best
    want = _merged(load_checkpoint(os.path.join(tmp_path, "improves", "lora", f"step_{best}.pt")))
    model, _ = load_model_dir(str(tmp_path / "improves"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=1e-6)
    last, _ = load_model_dir(str(tmp_path / "improves" / "last"))
    want_last = _merged(final)
    for k, v in last.state_dict().items():
        torch.testing.assert_close(v, want_last[k], rtol=0, atol=1e-6)
    # interrupted and resumed: the same evaluations, the same choice
    _run(tmp_path / "resumed", k=0.0, tolerance=0.0, stop_at=8)
    tr2, _ = _run(tmp_path / "resumed", k=0.0, tolerance=0.0)
    again, _ = _export(tr2, cfg, tmp_path / "resumed")
    assert again == choice
