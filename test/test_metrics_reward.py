"""GRPO reward API: config validation, single and multi-metric formulas, batched compute from tensors."""
import numpy as np
import pytest
import torch

from signals import speechlike
from flowse.rl.reward import RewardConfig, RewardModel
from flowse.utils.config import ConfigError, load_config


def test_config_validation():
    with pytest.raises(ConfigError, match=r"unknown metric\(s\) \['MOS'\]; allowed: \['SIG', 'BAK', 'OVRL'"):
        RewardConfig(metrics=["MOS"])
    with pytest.raises(ConfigError, match="one weight per metric"):
        RewardConfig(metrics=["OVRL", "SPK"], weights=[1.0])
    with pytest.raises(ConfigError, match="log_metrics"):
        load_config(RewardConfig, None, ["--log_metrics", "[OVRL,FOO]"])
    cfg = load_config(RewardConfig, None, ["--metrics", "[OVRL,SPK,SBS]", "--weights", "[0.6,1,1]",
                                           "--scales", "{SPK: 2.0}"])
    assert cfg.scale("OVRL") == 0.25 and cfg.scale("SIG") == 0.25 and cfg.scale("P808") == 0.25
    assert cfg.scale("SPK") == 2.0 and cfg.scale("SBS") == 1.0
    with pytest.raises(ConfigError, match="SBS"):  # SBS rewarded without a model: error at construction
        RewardModel(cfg)


def test_single_and_multi_reward_formulas():
    single = RewardModel(RewardConfig(metrics=["SISDR"], log_metrics=[]))
    np.testing.assert_allclose(single.reward({"SISDR": np.array([1.0, 3.0])}), [1.0, 3.0])
    cfg = RewardConfig(metrics=["SISDR", "ESTOI", "PESQ"], weights=[0.6, 1.0, 2.0], scales={"SISDR": 0.5},
                       log_metrics=[])
    multi = RewardModel(cfg)
    m = {"SISDR": np.array([2.0, 4.0, 6.0, 8.0]), "ESTOI": np.array([0.5, 0.7, 0.6, 0.9]),
         "PESQ": np.array([2.0, 2.0, 2.0, 2.0])}
    s = 0.5 * m["SISDR"]
    want = 0.6 * s / s.std() + m["ESTOI"] / m["ESTOI"].std() + 2.0 * m["PESQ"]  # PESQ has std 0: not divided
    np.testing.assert_allclose(multi.reward(m), want, rtol=1e-12)
    plain = RewardModel(RewardConfig(metrics=["SISDR", "ESTOI"], weights=[1.0, 2.0], std_normalize=False,
                                     log_metrics=[]))
    np.testing.assert_allclose(plain.reward(m), m["SISDR"] + 2 * m["ESTOI"])
    nan = plain.reward({"SISDR": np.array([1.0, np.nan, 3.0]), "ESTOI": np.zeros(3)})
    np.testing.assert_allclose(nan, [1.0, 1.0, 3.0])  # an undefined value gets the batch minimum
    with pytest.raises(KeyError, match="ESTOI"):
        plain.reward({"SISDR": np.ones(2)})


@pytest.fixture(scope="module")
def dnsmos_reward():
    cfg = RewardConfig(metrics=["OVRL", "SPK"], weights=[0.6, 1.0], log_metrics=["SIG", "BAK", "SBS", "SISDR"])
    cfg.models.dnsmos.threads = 1
    return RewardModel(cfg)


def test_compute_from_padded_tensor(dnsmos_reward):
    rm = dnsmos_reward
    assert rm.metrics == ["SIG", "BAK", "OVRL", "SPK", "SISDR"]  # SBS dropped: no model configured
    clean = [speechlike(1.0, 120, seed=1, noise=0.0), speechlike(2.0, 200, seed=2, noise=0.0)]  # 1 + 2 windows
    est = [c + 0.02 * np.random.default_rng(i).standard_normal(c.size).astype(np.float32) for i, c in enumerate(clean)]
    n = max(x.size for x in est)
    pad = lambda xs: torch.stack([torch.nn.functional.pad(torch.from_numpy(x), (0, n - x.size)) for x in xs])  # noqa: E731
    lengths = torch.tensor([x.size for x in est])
    from_tensor = rm.compute(pad(est), pad(clean), lengths)
    from_list = rm.compute(est, clean)
    assert set(from_list) == {"SIG", "BAK", "OVRL", "SPK", "SISDR"}
    for k in from_list:
        np.testing.assert_allclose(from_tensor[k], from_list[k], atol=1e-6)
    assert np.all((from_list["OVRL"] > 1.0) & (from_list["OVRL"] < 5.0))
    assert np.all(from_list["SPK"] > 0.5)
    r, metrics = rm(est, clean)
    spk, ovrl = metrics["SPK"], 0.25 * metrics["OVRL"]
    np.testing.assert_allclose(r, 0.6 * ovrl / ovrl.std() + spk / spk.std(), rtol=1e-9)
    with pytest.raises(ValueError, match="need reference"):
        rm.compute(est, None)


def test_compute_without_reference():
    cfg = RewardConfig(metrics=["OVRL"], log_metrics=["SIG", "SPK"])
    cfg.models.dnsmos.threads = 1
    rm = RewardModel(cfg)
    out = rm.compute([speechlike(1.0)], None)
    assert sorted(out) == ["OVRL", "SIG"]  # SPK needs a reference: not computed, not an error
    assert rm.reward(out)[0] == pytest.approx(0.25 * out["OVRL"][0])


def test_std_normalize_modes_and_old_booleans():
    assert load_config(RewardConfig, None, ["--std_normalize", "true"]).std_normalize == "batch"
    assert load_config(RewardConfig, None, ["--std_normalize", "false"]).std_normalize == "none"
    with pytest.raises(ConfigError, match="'batch' \\| 'frozen' \\| 'none'"):
        load_config(RewardConfig, None, ["--std_normalize", "fixed"])
    m = {"SISDR": np.array([2.0, 4.0, 6.0, 8.0]), "ESTOI": np.array([0.5, 0.7, 0.6, 0.9])}
    cfg = dict(metrics=["SISDR", "ESTOI"], weights=[0.5, 1.0], log_metrics=[])
    frozen = RewardModel(RewardConfig(std_normalize="frozen", **cfg))
    with pytest.raises(ValueError, match="frozen stds must be given"):
        frozen.reward(m)
    stds = {"SISDR": 4.0, "ESTOI": 0.25}
    np.testing.assert_allclose(frozen.reward(m, stds), 0.5 * m["SISDR"] / 4.0 + m["ESTOI"] / 0.25, rtol=1e-12)
    batch = RewardModel(RewardConfig(std_normalize="batch", **cfg))
    np.testing.assert_allclose(batch.reward(m), 0.5 * m["SISDR"] / m["SISDR"].std() + m["ESTOI"] / m["ESTOI"].std(),
                               rtol=1e-12)
    np.testing.assert_allclose(batch.reward(m, stds), frozen.reward(m, stds), rtol=0)  # given stds win
    none = RewardModel(RewardConfig(std_normalize="none", **cfg))
    np.testing.assert_allclose(none.reward(m, stds), 0.5 * m["SISDR"] + m["ESTOI"], rtol=1e-12)


def test_within_group_share_of_variance():
    from flowse.rl.advantages import within_group_share

    groups = np.repeat([0, 1], 3)
    assert within_group_share(np.array([1.0, 1, 1, 5, 5, 5]), groups) == 0.0  # all spread is between prompts
    assert within_group_share(np.array([0.0, 1, 2, 0, 1, 2]), groups) == pytest.approx(1.0)  # all within groups
    v = np.array([0.0, 1, 2, 10, 11, 12])  # within var 2/3 each, total var 25 + 2/3
    assert within_group_share(v, groups) == pytest.approx((2 / 3) / (25 + 2 / 3))
    assert np.isnan(within_group_share(np.ones(6), groups))
