"""Mixed ODE-SDE step of Flow-GRPO in SE time: mean, clamp at t = 0, density, KL."""
import math

import numpy as np
import pytest
import torch

from flowse.sampling.ode import time_grid
from flowse.sampling.sde import (
    gaussian_kl_equal_std, gaussian_log_prob, masked_mean, ode_step, sde_mean, sde_sigma, sde_step, step_std,
)


@pytest.fixture
def xu():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 7, 5, generator=g), torch.randn(3, 7, 5, generator=g)


@pytest.mark.parametrize("t,dt", [(0.1, 0.1), (0.3, 0.1), (0.5, 1 / 7), (0.9, 0.1)])
@pytest.mark.parametrize("a", [0.2, 0.4, 0.7])
def test_mean_equals_simplified_form(xu, t, dt, a):
    x, u = xu
    mean = sde_mean(x, u, t, dt, a, t_floor=0.1)
    s = a * math.sqrt((1 - t) / t)
    eq6 = x + (u + s**2 / (2 * (1 - t)) * (-x + t * u)) * dt
    simple = x * (1 - a**2 * dt / (2 * t)) + u * (1 + a**2 / 2) * dt
    torch.testing.assert_close(mean, eq6, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, simple, rtol=1e-5, atol=1e-6)
    assert float(sde_sigma(t, a, 0.1)) == pytest.approx(s, rel=1e-6)
    assert float(step_std(t, dt, a, 0.1)) == pytest.approx(s * math.sqrt(dt), rel=1e-6)


def test_zero_noise_level_is_euler(xu):
    x, u = xu
    torch.testing.assert_close(sde_mean(x, u, 0.3, 0.1, 0.0, 0.1), x + u * 0.1)
    x_next, _, std = sde_step(x, u, torch.full((3,), 0.3), torch.full((3,), 0.1), 0.0, 0.1, noise=torch.randn(3, 7, 5))
    torch.testing.assert_close(x_next, ode_step(x, u, 0.1))
    assert torch.all(std == 0)


def test_clamp_at_t0_is_finite_and_flow_grpo(xu):
    x, u = xu
    ts = time_grid(10)
    t0, t1 = ts[0], ts[1]
    dt = t1 - t0
    a = 0.4
    x_next, mean, std = sde_step(x, u, t0, dt, a, t_floor=t1, noise=torch.randn(3, 7, 5))
    assert torch.isfinite(x_next).all() and torch.isfinite(mean).all() and torch.isfinite(std).all()
    # s = a sqrt(1 / t_1) (Flow-GRPO's sigma_max); mean of Eq. 6 with that s at t = 0
    s = a * math.sqrt(1 / float(t1))
    torch.testing.assert_close(std, torch.full((3,), s * math.sqrt(float(dt))))
    expected = x + (u + s**2 / 2 * (-x)) * float(dt)
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-6)
    # uniform grid: the t = 0 step shrinks x by 1 - a^2/2 and adds noise of std a
    torch.testing.assert_close(std, torch.full((3,), a), rtol=1e-5, atol=1e-6)
    lp = gaussian_log_prob(x_next, mean, std)
    assert torch.isfinite(lp).all()


def test_last_step_finite(xu):
    x, u = xu
    ts = time_grid(10)
    x_next, mean, std = sde_step(x, u, ts[9], ts[10] - ts[9], 0.4, ts[1], noise=torch.randn(3, 7, 5))
    assert torch.isfinite(x_next).all() and float(std[0]) == pytest.approx(0.4 * math.sqrt(0.1 / 0.9) * math.sqrt(0.1), rel=1e-5)
    assert torch.isfinite(gaussian_log_prob(x_next, mean, std)).all()


def test_fp32_under_bf16_inputs(xu):
    x, u = xu
    mean = sde_mean(x.bfloat16(), u.bfloat16(), 0.0, 0.1, 0.4, 0.1)
    assert mean.dtype == torch.float32 and torch.isfinite(mean).all()


def test_sampling_matches_gaussian_density():
    torch.manual_seed(0)
    n, t, f = 4000, 3, 4
    x = torch.randn(1, t, f).expand(n, t, f)
    u = torch.randn(1, t, f).expand(n, t, f)
    tt, dt, a = 0.2, 0.1, 0.5
    x_next, mean, std = sde_step(x, u, tt, dt, a, t_floor=0.1)
    # empirical mean/std per element vs the analytic ones
    torch.testing.assert_close(x_next.mean(0), mean[0], atol=4 * float(std[0]) / math.sqrt(n) * 1.5, rtol=0)
    emp_std = x_next.std(0)
    assert torch.allclose(emp_std, std[0].expand_as(emp_std), rtol=0.06)
    # the log-prob is the elementwise Normal log-density averaged (not summed) over elements
    ref = torch.distributions.Normal(mean, std[:, None, None]).log_prob(x_next).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_log_prob(x_next, mean, std), ref, rtol=1e-5, atol=1e-5)
    # and its expectation is the Gaussian's negative entropy per element
    neg_entropy = -0.5 * math.log(2 * math.pi * math.e * float(std[0]) ** 2)
    assert float(gaussian_log_prob(x_next, mean, std).mean()) == pytest.approx(neg_entropy, abs=0.01)


def test_log_prob_counts_only_valid_frames():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(2, 6, 3, generator=g)
    x = mean + 0.3 * torch.randn(2, 6, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    lp = gaussian_log_prob(x, mean, torch.tensor([0.3, 0.3]), mask)
    alone = gaussian_log_prob(x[:1, :4], mean[:1, :4], torch.tensor([0.3]))
    torch.testing.assert_close(lp[:1], alone)
    # garbage on padded frames changes nothing
    x2 = x.clone()
    x2[0, 4:] = 1e3
    torch.testing.assert_close(gaussian_log_prob(x2, mean, torch.tensor([0.3, 0.3]), mask), lp)
    assert masked_mean(torch.ones(2, 6, 3), mask).tolist() == [1.0, 1.0]


def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    mp, mq = torch.randn(1, 2, 2, generator=g), torch.randn(1, 2, 2, generator=g)
    s, dt = 0.7, 0.1
    std = torch.tensor([s * math.sqrt(dt)])
    kl = gaussian_kl_equal_std(mp, mq, std)
    torch.testing.assert_close(kl, ((mp - mq) ** 2).mean().reshape(1) / (2 * s * s * dt))
    p = torch.distributions.Normal(mp, std[0])
    q = torch.distributions.Normal(mq, std[0])
    exact = torch.distributions.kl_divergence(p, q).mean()
    assert float(kl) == pytest.approx(float(exact), rel=1e-5)
    xs = p.sample((20000,))
    mc = (p.log_prob(xs) - q.log_prob(xs)).mean()
    assert float(kl) == pytest.approx(float(mc), rel=0.05)
    assert np.isfinite(float(kl))
