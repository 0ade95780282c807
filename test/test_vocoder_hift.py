"""HiFT (CosyVoice2's vocoder) and CosyVoice2's mel: against CosyVoice's and Matcha-TTS's own code.

The references come from the ``cosyvoice2-eu`` package (CosyVoice's ``cosyvoice.hifigan`` and
Matcha-TTS's ``matcha.utils.audio`` bundled, torch/numpy/scipy/librosa only); without it
those tests are skipped. The real speech comes from Debian's ``pocketsphinx-testdata``.
"""
import glob
import importlib.util
import os

import pytest
import torch

from flowse.features.audio import read_audio
from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders.hift import HiFTConfig, HiFTGenerator, HiFTVocoder, load_hift_state
from flowse.utils.config import ConfigError

MEL = MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, fmax=8000, magnitude_eps=1e-9)
SMALL = dict(base_channels=32, f0_cond_channels=32)
SPEECH = sorted(glob.glob("/usr/share/pocketsphinx/test/data/librivox/*.wav"))
NO_REFERENCE = "CosyVoice's code not installed (pip install --no-deps cosyvoice2-eu==0.2.8)"


def cosyvoice_hift(cfg: HiFTConfig):
    """CosyVoice's own HiFTGenerator + ConvRNNF0Predictor with ``cfg``'s numbers."""
    gen = pytest.importorskip("cosyvoice.hifigan.generator", reason=NO_REFERENCE)
    f0 = pytest.importorskip("cosyvoice.hifigan.f0_predictor", reason=NO_REFERENCE)
    return gen.HiFTGenerator(
        in_channels=cfg.in_channels, base_channels=cfg.base_channels, nb_harmonics=cfg.nb_harmonics,
        sampling_rate=cfg.sampling_rate, nsf_alpha=cfg.nsf_alpha, nsf_sigma=cfg.nsf_sigma,
        nsf_voiced_threshold=cfg.nsf_voiced_threshold, upsample_rates=cfg.upsample_rates,
        upsample_kernel_sizes=cfg.upsample_kernel_sizes,
        istft_params={"n_fft": cfg.istft_n_fft, "hop_len": cfg.istft_hop_length},
        resblock_kernel_sizes=cfg.resblock_kernel_sizes, resblock_dilation_sizes=cfg.resblock_dilation_sizes,
        source_resblock_kernel_sizes=cfg.source_resblock_kernel_sizes,
        source_resblock_dilation_sizes=cfg.source_resblock_dilation_sizes, lrelu_slope=cfg.lrelu_slope,
        audio_limit=cfg.audio_limit,
        f0_predictor=f0.ConvRNNF0Predictor(num_class=1, in_channels=cfg.in_channels,
                                           cond_channels=cfg.f0_cond_channels),
    ).eval()


@torch.no_grad()
def speechlike_f0(gen, mel: torch.Tensor) -> None:
    """Rescale the F0 predictor's output layer so that random weights give 10-300 Hz (a few unvoiced frames)."""
    out = gen.f0_predictor.classifier(gen.f0_predictor.condnet(mel).transpose(1, 2)).squeeze(-1)
    scale = 100 / out.std()
    gen.f0_predictor.classifier.weight.mul_(scale)
    gen.f0_predictor.classifier.bias.mul_(scale).add_(60 - out.mean() * scale)


def old_style(sd: dict) -> dict:
    """Parametrization names -> the released hift.pt's ``weight_g`` / ``weight_v`` names."""
    return {k.replace(".parametrizations.weight.original0", ".weight_g")
            .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in sd.items()}


def test_matches_cosyvoice_hift():
    """CosyVoice2 sizes, random weights, the same state dict and the same excitation noise."""
    torch.manual_seed(0)
    ref = cosyvoice_hift(HiFTConfig())
    mel = torch.randn(1, 80, 40) - 6
    speechlike_f0(ref, mel)
    ours = HiFTGenerator(HiFTConfig()).eval()
    ours.load_state_dict(ref.state_dict())
    seed = 3
    noise = ours.m_source.noise(1, 40 * 480, seed)
    randn_like = torch.randn_like

    def cosyvoice_noise(t, *args, **kwargs):  # the harmonics' noise is ours; the unused noise branch random
        return noise.clone() if t.shape[-1] == 9 else randn_like(t, *args, **kwargs)

    with torch.no_grad():
        f0_ref = ref.f0_predictor(mel)
        torch.randn_like = cosyvoice_noise
        try:
            wav_ref, source_ref = ref.inference(mel)
        finally:
            torch.randn_like = randn_like
        wav, f0 = ours(mel, seed)
        source = ours.m_source(f0, seed)
    voiced = (f0_ref > 10).float().mean()
    assert 0.5 < voiced < 1 and float(f0_ref.max()) > 150
    assert torch.allclose(f0, f0_ref, rtol=0, atol=1e-5)
    assert torch.allclose(source, source_ref.squeeze(1), rtol=0, atol=1e-5)
    assert wav.shape == wav_ref.shape == (1, 40 * 480)
    assert 0.01 < float(wav_ref.std()) and float(wav_ref.abs().max()) < 0.9  # not clamped
    assert torch.allclose(wav, wav_ref, rtol=0, atol=1e-4)


def test_cosyvoice2_sizes():
    gen = HiFTGenerator(HiFTConfig())
    sd = old_style(gen.state_dict())
    assert len(sd) == 328 and sum(v.numel() for v in sd.values()) == 20_821_295
    assert sum(v.numel() for v in gen.parameters()) == 20_821_295
    assert sum(k.endswith(".weight_g") for k in sd) == 82
    assert sum(k.endswith(".alpha") for k in sd) == 72
    assert HiFTConfig().hop_length == 480


def test_loads_released_layouts(tmp_path):
    """Old-style weight norm, a ``generator.`` prefix and Snake alpha [C, 1] load; weight norm is folded."""
    torch.manual_seed(1)
    cfg = HiFTConfig(**SMALL)
    src = HiFTGenerator(cfg).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    mel = torch.randn(2, 80, 12) - 6
    want, _ = src(mel, seed=7)
    released = {("generator." + k): (v[:, None] if k.endswith(".alpha") else v)
                for k, v in old_style(src.state_dict()).items()}
    path = str(tmp_path / "hift.pt")
    torch.save(released, path)
    voc = HiFTVocoder(MEL, HiFTConfig(checkpoint=path, seed=7, **SMALL))
    assert not voc.generator.has_weight_norm
    got = voc.synthesize(mel.transpose(1, 2))
    assert torch.allclose(got, want, rtol=0, atol=1e-5)
    voc.load_weights(path)  # into the folded generator: folds the checkpoint's (g, v) the same way
    assert torch.allclose(voc.synthesize(mel.transpose(1, 2)), want, rtol=0, atol=1e-5)
    torch.save(src.state_dict(), path)  # the current (parametrization) layout
    voc = HiFTVocoder.from_config(MEL, HiFTConfig(checkpoint="hift.pt", seed=7, **SMALL), base_dir=str(tmp_path))
    assert voc.cfg.checkpoint == path
    assert torch.allclose(voc.synthesize(mel.transpose(1, 2)), want, rtol=0, atol=1e-5)


def test_bad_checkpoint_lists_the_keys(tmp_path):
    sd = old_style(HiFTGenerator(HiFTConfig(**SMALL)).state_dict())
    del sd["conv_pre.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["m_source.l_linear.weight"] = torch.zeros(1, 5)
    with pytest.raises(ValueError) as e:
        load_hift_state(HiFTGenerator(HiFTConfig(**SMALL)), sd, "bad.pt")
    msg = str(e.value)
    assert "bad.pt" in msg and "conv_pre.bias" in msg and "extra.weight" in msg
    assert "m_source.l_linear.weight: checkpoint (1, 5) vs model (1, 9)" in msg
    with pytest.raises(ValueError, match="missing"):  # a full-size checkpoint into a small config
        load_hift_state(HiFTGenerator(HiFTConfig(**SMALL)), HiFTGenerator(HiFTConfig()).state_dict(), "big.pt")
    with pytest.raises(FileNotFoundError, match="hift.checkpoint"):
        HiFTVocoder(MEL, HiFTConfig(checkpoint=str(tmp_path / "absent.pt"), **SMALL))
    torch.save({"model": "not weights"}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="not a HiFT state dict"):
        HiFTVocoder(MEL, HiFTConfig(checkpoint=str(tmp_path / "odd.pt"), **SMALL))


def test_seeded_source_and_batch_padding():
    torch.manual_seed(2)
    voc = HiFTVocoder(MEL, HiFTConfig(**SMALL)).eval()
    mel = torch.randn(2, 40, 80) - 5
    speechlike_f0(voc.generator, mel.transpose(1, 2))
    a = voc.decode(mel)
    assert torch.equal(a, voc.decode(mel))
    other = HiFTVocoder(MEL, HiFTConfig(seed=1, **SMALL)).eval()
    other.load_state_dict(voc.state_dict())
    assert (other.decode(mel) - a).abs().max() > 1e-3
    # Noise: the same stream for every item, and a shorter item's noise is the prefix of a longer one's.
    noise = voc.generator.m_source.noise(2, 40 * 480, 0)
    assert torch.equal(noise[0], noise[1])
    assert torch.equal(noise[0, : 25 * 480], voc.generator.m_source.noise(1, 25 * 480, 0)[0])
    # Padded batch vs one by one: equal up to the network's reach of the padding (~12 frames).
    lengths = torch.tensor([40, 25])
    batch = voc.decode(mel, lengths)
    alone = voc.decode(mel[1:, :25])
    assert batch[1, 25 * 480:].abs().max() == 0
    assert torch.allclose(batch[0], a[0], rtol=0, atol=1e-4)
    assert torch.allclose(batch[1, : 13 * 480], alone[0, : 13 * 480], rtol=0, atol=1e-4)
    assert float(alone.std()) > 0.01


def test_config_errors():
    with pytest.raises(ConfigError, match="hop length: mel 256 vs hift 480"):
        HiFTVocoder(MelConfig(), HiFTConfig(**SMALL))
    with pytest.raises(ConfigError, match="SineGen2"):
        HiFTConfig(sampling_rate=22050)
    with pytest.raises(ConfigError, match="source_resblock"):
        HiFTConfig(source_resblock_kernel_sizes=[7, 11])


def matcha_mel_spectrogram():
    spec = importlib.util.find_spec("matcha")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("Matcha-TTS's code not installed (pip install --no-deps cosyvoice2-eu==0.2.8)")
    pytest.importorskip("librosa", reason="Matcha's mel_spectrogram needs librosa")
    path = os.path.join(list(spec.submodule_search_locations)[0], "utils", "audio.py")
    # Loaded by path: matcha.utils' __init__ imports its training stack (hydra, lightning).
    mod_spec = importlib.util.spec_from_file_location("matcha_audio_reference", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.mel_spectrogram


@pytest.mark.skipif(not SPEECH, reason="no real speech: apt-get install pocketsphinx-testdata")
def test_cosyvoice2_mel_matches_matcha():
    mel_spectrogram = matcha_mel_spectrogram()
    wav = torch.from_numpy(read_audio(SPEECH[1], sr=24000))[None, : 24000 * 2]
    ours = LogMel(MEL)(wav)
    ref = mel_spectrogram(wav, 1920, 80, 24000, 480, 1920, 0, 8000, center=False).transpose(1, 2)
    assert ours.shape == ref.shape == (1, 100, 80)
    assert float(ours.max()) > -2 and float(ours.min()) < -9  # speech and near-silence
    assert torch.allclose(ours, ref, rtol=0, atol=1e-4)
    plain = LogMel(MelConfig(**{**MEL.__dict__, "magnitude_eps": 0.0}))
    assert torch.equal(plain.magnitude(wav), torch.stft(
        torch.nn.functional.pad(wav[:, None], (720, 720), mode="reflect")[:, 0], 1920, 480, 1920,
        plain.window, center=False, return_complex=True).abs().transpose(1, 2))
