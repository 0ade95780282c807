"""FlowSE: normalisation, the flow-matching loss (Eq. 1), the CFG form, the Euler ODE sampler, the model dir."""
import json
import os

import numpy as np
import pytest
import torch

from flowse.data.dataset import read_stats
from flowse.models.dit import DiTConfig
from flowse.models.flowse_model import FlowConfig, FlowSE
from flowse.sampling.ode import euler_step, ode_sample, time_grid

DIT = DiTConfig(n_mels=6, hidden=16, depth=1, heads=2, head_dim=8, ffn=24, conv_kernel=3, conv_groups=4,
                time_freq_dim=8, dropout=0.0)
STATS = {"clean": {"mean": np.linspace(-6, -2, 6), "std": np.full(6, 2.0)}, "noisy": {"mean": -3.0, "std": 1.5}}


def _model(flow: FlowConfig | None = None, seed: int = 0) -> FlowSE:
    torch.manual_seed(seed)
    m = FlowSE(DIT, flow or FlowConfig(), STATS)
    for p in m.dit.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def test_normalize_uses_each_streams_stats_and_inverts():
    m = _model()
    mel = torch.randn(2, 5, 6) * 3 - 4
    x = m.normalize(mel, "clean")
    assert torch.allclose(x, (mel - torch.linspace(-6, -2, 6)) / 2.0)
    assert torch.allclose(m.normalize(mel, "noisy"), (mel + 3.0) / 1.5)
    assert torch.allclose(m.denormalize(x), mel, atol=1e-5)
    off = _model(FlowConfig(normalize=False))
    assert torch.equal(off.normalize(mel, "noisy"), mel) and torch.equal(off.denormalize(mel), mel)


def test_loss_is_masked_mse_of_the_velocity_target():
    m = _model(FlowConfig(cfg_dropout=0.5))
    clean, noisy = torch.randn(3, 7, 6) - 4, torch.randn(3, 7, 6) - 3
    lens = torch.tensor([7, 4, 2])
    mask = torch.arange(7)[None] < lens[:, None]
    loss, st = m.loss(clean, noisy, mask, torch.Generator().manual_seed(5))
    # replay the same draws by hand: x0, t, drop in this order
    g = torch.Generator().manual_seed(5)
    mk = mask[..., None].float()
    x1, cond = m.normalize(clean, "clean") * mk, m.normalize(noisy, "noisy") * mk
    x0 = torch.randn(x1.shape, generator=g) * mk
    t = torch.rand(3, generator=g)
    drop = torch.rand(3, generator=g) < 0.5
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
    v = m.dit(xt, cond, t, mask, drop)
    want = sum(((v[i, :n] - (x1 - x0)[i, :n]) ** 2).sum() for i, n in enumerate(lens.tolist())) / (13 * 6)
    assert torch.allclose(loss, want, atol=1e-6)
    assert int(st["frames"]) == 13
    # padded frames do not contribute: changing them leaves the loss unchanged
    clean2 = clean.masked_fill(~mask[..., None], 99.0)
    loss2, _ = m.loss(clean2, noisy, mask, torch.Generator().manual_seed(5))
    assert torch.allclose(loss, loss2)


def test_perfect_velocity_gives_zero_loss():
    class Oracle(torch.nn.Module):  # knows x1: v = (x1 - x_t) / (1 - t)
        def __init__(self, x1):
            super().__init__()
            self.x1, self.cfg = x1, DIT

        def forward(self, x, cond, t, mask=None, drop_cond=None):
            return (self.x1 - x) / (1 - t[:, None, None])

    m = _model(FlowConfig(cfg_dropout=0.0))
    clean = torch.randn(2, 5, 6)
    m.dit = Oracle(m.normalize(clean, "clean"))
    loss, _ = m.loss(clean, torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    assert loss.item() < 1e-8
    # and the Euler sampler then lands exactly on the clean mel (straight paths)
    x1 = ode_sample(m, torch.randn(2, 5, 6), None, nfe=4, cfg_strength=1.0)
    assert torch.allclose(m.denormalize(x1), clean, atol=1e-4)


def test_cfg_form_and_single_forward_cases():
    m = _model()
    x, c = torch.randn(2, 6, 6), torch.randn(2, 6, 6)
    t = torch.tensor([0.2, 0.7])
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    with torch.no_grad():
        v_c = m.dit(x, c, t, mask)
        v_u = m.dit(x, torch.zeros_like(c), t, mask)
        for w in (0.0, 1.0, 0.5, 2.5):
            assert torch.allclose(m.velocity(x, c, t, mask, w), v_u + w * (v_c - v_u), atol=1e-5), w
        assert torch.allclose(m.velocity(x, c, 0.2, None, 1.0)[0], m.dit(x, c, torch.tensor([0.2, 0.2]))[0])
    calls = []
    m.dit.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        m.velocity(x, c, t, mask, 1.0), m.velocity(x, c, t, mask, 0.0), m.velocity(x, c, t, mask, 2.0)
    assert calls == [2, 2, 4]  # w = 1 and w = 0: one forward of B; otherwise one forward of 2B
    m.flow_cfg.cfg_strength = 2.0
    with torch.no_grad():
        assert torch.allclose(m.velocity(x, c, t, mask), v_u + 2.0 * (v_c - v_u), atol=1e-5)


def test_time_grid_and_euler():
    g = time_grid(10)
    assert g.shape == (11,) and g[0] == 0 and g[-1] == 1
    assert torch.allclose(g[1:] - g[:-1], torch.full((10,), 0.1))
    with pytest.raises(ValueError):
        time_grid(0)
    assert torch.equal(euler_step(torch.ones(2), torch.tensor([2.0, -1.0]), 0.5), torch.tensor([2.0, 0.5]))


def test_ode_sample_shapes_determinism_and_masking():
    m = _model()
    cond = torch.randn(2, 9, 6)
    mask = torch.arange(9)[None] < torch.tensor([9, 5])[:, None]
    a = ode_sample(m, cond, mask, nfe=3, generator=torch.Generator().manual_seed(0))
    b = ode_sample(m, cond, mask, nfe=3, generator=torch.Generator().manual_seed(0))
    c = ode_sample(m, cond, mask, nfe=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 9, 6) and torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.count_nonzero(a[1, 5:]) == 0
    # constant velocity field: x1 = x0 + u exactly, whatever nfe
    class Const(torch.nn.Module):
        flow_cfg = FlowConfig()

        def velocity(self, x, cond, t, mask, w):
            return torch.full_like(x, 0.25)

    x0 = torch.randn(1, 4, 6)
    assert torch.allclose(ode_sample(Const(), torch.zeros(1, 4, 6), None, nfe=7, x0=x0), x0 + 0.25, atol=1e-6)


def test_read_stats_formats(tmp_path):
    p = tmp_path / "stats.json"
    p.write_text(json.dumps({"feats": {"mean": [1.0, 2.0], "var": [4.0, 9.0]},
                             "spk1_feats": {"sum": [2.0, 4.0], "sum_sq": [2.0, 16.0], "count": 2}}))
    s = read_stats(str(p))
    assert np.allclose(s["noisy"]["std"], [2.0, 3.0]) and np.allclose(s["noisy"]["mean"], [1, 2])
    assert np.allclose(s["clean"]["mean"], [1.0, 2.0]) and np.allclose(s["clean"]["std"], [1e-3, 2.0])
    p.write_text(json.dumps({"noisy": {"mean": 0.0, "std": 1.0}}))
    with pytest.raises(ValueError, match="clean"):
        read_stats(str(p))


def test_model_dir_roundtrip(tmp_path):
    from flowse.models.io import load_model_dir, read_vocoder_dir, save_model_dir
    from flowse.train.pretrain import PretrainConfig

    cfg = PretrainConfig(model=DIT, flow=FlowConfig(cfg_strength=1.5, nfe=7))
    m = _model(cfg.flow)
    out = tmp_path / "exp" / "pretrain_x"
    voc = tmp_path / "exp" / "vocoder_y"
    os.makedirs(voc)
    save_model_dir(m, cfg, str(out), str(voc), step=42)
    assert (out / "vocoder_dir").read_text().strip() == "../vocoder_y"
    assert read_vocoder_dir(str(out)) == str(voc)
    m2, cfg2 = load_model_dir(str(out))
    assert (cfg2.model, cfg2.flow) == (cfg.model, cfg.flow) and not m2.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    assert m2.flow_cfg.nfe == 7 and torch.allclose(m2.clean_mean, torch.linspace(-6, -2, 6))
    # a model_config.yaml wins over another stage's config.yaml in the same dir
    (out / "config.yaml").write_text("seed: 3\nlora: {r: 4}\n")
    save_model_dir(m, cfg, str(out), str(voc), config_name="model_config.yaml")
    assert load_model_dir(str(out))[1].flow == cfg.flow
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_model_dir(str(tmp_path))
