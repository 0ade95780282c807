"""Policy-gradient SNR: the estimator on synthetic gradients, and the trainer's gradient on a tiny model."""
import numpy as np
import pytest
import torch

from flowse.rl.snr import gradient_snr
from flowse.rl.task import GRPOTask
from test_grpo_algorithm import BandReward, grpo, make_cfg, prompt_set, tiny_model


def _synthetic(k: int, p: int, signal: float, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(p, generator=gen)
    s = s / s.norm() * signal
    e = torch.randn(k, p, generator=gen) * noise / np.sqrt(p)
    return s + e


def test_snr_estimator_recovers_known_signal_share():
    # |s|^2 = 1, E|e|^2 = 9: rho = 0.1, 10 candidates per estimate -> 90 for SNR 1
    res = gradient_snr(_synthetic(40, 20000, 1.0, 3.0, 0), candidates=10)
    assert abs(res.rho - 0.1) < 3 * res.rho_se and res.rho_se < 0.03, res
    assert abs(res.signal_norm - 1.0) < 0.15
    assert 50 < res.candidates_for_snr1 < 160
    noise_only = gradient_snr(_synthetic(40, 20000, 0.0, 3.0, 1), candidates=10)
    assert abs(noise_only.rho) < 3 * noise_only.rho_se and abs(noise_only.rho) < 0.01
    with pytest.raises(ValueError, match="K >= 3"):
        gradient_snr(torch.zeros(2, 5), 1)


class EnergyReward(BandReward):
    """The summed log-mel of the output: every bin and frame carries signal."""

    def reward(self, metrics, stds=None):
        return metrics["other"]


class RandomReward(BandReward):
    """Rewards that ignore the samples: the policy gradient has no signal."""

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def reward(self, metrics, stds=None):
        return self.rng.standard_normal(len(metrics["band"]))


def _snr(reward, same_init_noise: bool = True, k: int = 10):
    shape = dict(group_size=8, prompts_per_round=4, rounds_per_iter=2, same_init_noise=same_init_noise)
    tr = GRPOTask(tiny_model(), make_cfg(rollout=shape), reward, prompt_set(128, 0))
    before = [p.detach().clone() for p in tr.params]
    g = torch.stack([tr.policy_gradient(i) for i in range(k)])
    assert all(torch.equal(a, p) for a, p in zip(before, tr.params))  # no update
    return gradient_snr(g, 64)


def test_policy_gradient_signal_and_its_absence():
    energy = _snr(EnergyReward())
    assert energy.rho > 0.15 and energy.rho > 5 * energy.rho_se, energy  # measured 0.25 +- 0.02
    rand = _snr(RandomReward())
    assert abs(rand.rho) < 0.08, rand  # measured 0.027 +- 0.028
    # shared x0 per group: reward differences come from the SDE noise alone (measured 0.06 +- 0.03 without)
    indep = _snr(EnergyReward(), same_init_noise=False)
    assert energy.rho > indep.rho + 0.1, (energy, indep)


def test_policy_gradient_is_the_first_update_direction():
    """Adam's first step (one update per iteration) moves a parameter by -lr g / (|g| + eps)."""
    cfg = make_cfg(train=dict(updates_per_iter=1, weight_decay=0.0, grad_clip=1e9, lr=1e-3))
    g = grpo(cfg, prompt_set(16, 0)).task.policy_gradient(0)
    tr = grpo(cfg, prompt_set(16, 0))
    before = torch.cat([p.detach().flatten().clone() for p in tr.task.params])
    tr.run_unit()
    delta = torch.cat([p.detach().flatten() for p in tr.task.params]) - before
    moving = g.abs() > 1e-10
    assert moving.sum() > 100
    torch.testing.assert_close(delta[moving], -1e-3 * g[moving] / (g[moving].abs() + 1e-8), rtol=0, atol=1e-6)
    assert delta[~moving].abs().max() < 1e-7
