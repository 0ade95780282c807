"""DiT backbone: the paper's parameter count, LoRA-facing module names, padding invariance, dropout/eval."""
import pytest
import torch

from flowse.models.dit import DiT, DiTConfig, apply_rotary, count_parameters, rotary_cos_sin

SMALL = DiTConfig(n_mels=12, hidden=32, depth=2, heads=2, head_dim=16, ffn=48, conv_kernel=5, conv_groups=4,
                  time_freq_dim=16, dropout=0.0)


def _randomized(cfg: DiTConfig, seed: int = 0) -> DiT:
    torch.manual_seed(seed)
    m = DiT(cfg)
    for p in m.parameters():  # adaLN-zero makes a fresh DiT output exactly 0: randomize everything
        torch.nn.init.normal_(p, std=0.2)
    return m.eval()


def test_paper_config_has_46_179_920_parameters():
    m = DiT(DiTConfig())
    assert count_parameters(m) == 46_179_920
    per_block = count_parameters(m.blocks[0])
    assert per_block == 3_676_672
    assert count_parameters(m.time_embed) == 394_240
    assert count_parameters(m.input_proj) == 82_432
    assert count_parameters(m.conv_pos) == 1_016_832
    assert count_parameters(m.norm_out) == 525_312
    assert count_parameters(m.proj_out) == 41_040
    # LoRA r=32 on q, k, v, out of the 12 blocks: the paper's 1.57M
    lora = sum(32 * (mod.in_features + mod.out_features) for name, mod in m.named_modules()
               if name.split(".")[-1] in ("to_q", "to_k", "to_v", "to_out") and ".attn." in name)
    assert lora == 1_572_864


def test_attention_linears_have_the_names_lora_targets():
    m = DiT(SMALL)
    names = {n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    for i in range(SMALL.depth):
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            mod = m.get_submodule(f"blocks.{i}.attn.{proj}")
            assert f"blocks.{i}.attn.{proj}" in names and mod.bias is not None


def test_fresh_model_outputs_zero_adaln_zero():
    m = DiT(SMALL)
    v = m(torch.randn(2, 9, 12), torch.randn(2, 9, 12), torch.rand(2))
    assert torch.count_nonzero(v) == 0


def test_padded_batch_equals_each_utterance_alone():
    m = _randomized(SMALL)
    lens = [40, 23, 5]
    b, n = len(lens), max(lens)
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(b, n, 12, generator=g), torch.randn(b, n, 12, generator=g)
    t = torch.tensor([0.1, 0.5, 0.9])
    mask = torch.arange(n)[None] < torch.tensor(lens)[:, None]
    # garbage in the padding must not matter
    x2 = x.masked_fill(~mask[..., None], 1e3)
    with torch.no_grad():
        v = m(x2, c, t, mask)
        for i, n_i in enumerate(lens):
            alone = m(x[i : i + 1, :n_i], c[i : i + 1, :n_i], t[i : i + 1])
            assert torch.allclose(v[i, :n_i], alone[0], atol=1e-4), (i, (v[i, :n_i] - alone[0]).abs().max())
            assert torch.count_nonzero(v[i, n_i:]) == 0
            assert alone.abs().mean() > 0.05  # a real, non-trivial output


def test_drop_cond_equals_zero_condition_and_time_matters():
    m = _randomized(SMALL)
    x, c = torch.randn(2, 10, 12), torch.randn(2, 10, 12)
    t = torch.tensor([0.3, 0.3])
    with torch.no_grad():
        dropped = m(x, c, t, drop_cond=torch.tensor([True, False]))
        assert torch.allclose(dropped[0], m(x[:1], torch.zeros_like(c[:1]), t[:1])[0], atol=1e-5)
        assert torch.allclose(dropped[1], m(x[1:], c[1:], t[1:])[0], atol=1e-5)
        assert (m(x, c, torch.tensor([0.8, 0.8])) - m(x, c, t)).abs().mean() > 1e-3


def test_dropout_active_in_train_mode_only():
    cfg = DiTConfig(**{**SMALL.__dict__, "dropout": 0.5})
    m = _randomized(cfg)
    x, c, t = torch.randn(1, 8, 12), torch.randn(1, 8, 12), torch.rand(1)
    with torch.no_grad():
        assert torch.equal(m(x, c, t), m(x, c, t))  # eval: deterministic
        m.train()
        assert not torch.equal(m(x, c, t), m(x, c, t))


def test_rotary_is_relative():
    # <R(p) q, R(p+k) k> depends on k only
    cos, sin = rotary_cos_sin(20, 8, 10000.0, "cpu", torch.float32)
    q, k = torch.randn(8), torch.randn(8)
    def rot(v, p):
        return apply_rotary(v[None, None, None], cos[p : p + 1], sin[p : p + 1])[0, 0, 0]
    assert torch.allclose(rot(q, 2) @ rot(k, 5), rot(q, 10) @ rot(k, 13), atol=1e-5)
    assert torch.allclose(rot(q, 0), q)


@pytest.mark.parametrize("bad", [{"head_dim": 15}, {"conv_kernel": 4}, {"dropout": 1.0}, {"hidden": 30}])
def test_config_checks(bad):
    from flowse.utils.config import ConfigError

    with pytest.raises(ConfigError):
        DiTConfig(**{**SMALL.__dict__, **bad})


def test_model_info_prints_one_json_line(capsys):
    import json

    from conftest import RECIPE
    from flowse.bench import model_info

    assert model_info.main(["--config", f"{RECIPE}/conf/paper/pretrain.yaml"]) == 0
    info = json.loads(capsys.readouterr().out.strip())
    assert info == {"total_params": 46_179_920, "trainable_params": 46_179_920}
    model_info.main(["--config", f"{RECIPE}/conf/paper/pretrain.yaml", "--model.depth", "1"])
    assert json.loads(capsys.readouterr().out)["total_params"] == 46_179_920 - 11 * 3_676_672
