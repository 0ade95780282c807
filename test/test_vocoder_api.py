"""Vocoder API: framing, shapes, masking, mel-gain reconstruction/enhancement, Griffin-Lim convergence."""
import math

import numpy as np
import pytest
import torch

from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders import VocoderConfig, build_vocoder, load_vocoder
from flowse.models.vocoders.config import GriffinLimConfig, MelGainConfig
from flowse.models.vocoders.melgain import band_to_bin_matrix
from flowse.models.vocoders.stft import MelFraming
from flowse.utils.config import ConfigError, save_config

HOP = 256


def speechlike(seconds: float = 1.5, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """Voiced harmonics with a gliding f0 and a syllabic envelope, plus short fricative bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 130 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30) if k * 200 < sr / 2)
    env = np.clip(np.sin(2 * np.pi * 3.0 * t + seed), 0, None) ** 0.7
    fric = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 3.0 * t + seed + np.pi) > 0.95)
    x = 0.1 * voiced * env + 0.05 * fric
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return 10 * math.log10(float((ref**2).sum() / ((ref - est) ** 2).sum()))


@pytest.fixture(scope="module")
def clean():
    return torch.from_numpy(speechlike())[None]


@pytest.fixture(scope="module")
def noisy(clean):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(clean.shape, generator=g)
    noise *= clean.norm() / noise.norm() * 10 ** (-5 / 20)  # 5 dB SNR
    return clean + noise


def test_framing_matches_logmel_and_inverts(clean):
    fr = MelFraming(MelConfig())
    spec = fr.stft(clean)
    assert spec.shape == (1, 513, clean.shape[1] // HOP)
    assert torch.allclose(fr.log_mel(spec), LogMel()(clean), atol=1e-5)
    y = fr.istft(spec)
    assert y.shape == (1, spec.shape[-1] * HOP)
    assert (y - clean[:, : y.shape[1]]).abs().max() < 1e-5


def test_band_to_bin_columns_sum_to_one():
    m = band_to_bin_matrix(MelFraming(MelConfig()).fbank)
    assert m.shape == (80, 513)
    assert torch.allclose(m.sum(0), torch.ones(513), atol=1e-5)
    assert (m >= 0).all()


@pytest.mark.parametrize("kind", ["griffinlim", "melgain", "hifigan"])
def test_decode_shapes_and_masking(kind, clean, noisy):
    cfg = VocoderConfig(type=kind, griffinlim=GriffinLimConfig(n_iter=4))
    cfg.hifigan.upsample_initial_channel = 32
    voc = build_vocoder(cfg)
    assert voc.name == kind and voc.sample_rate == 16000 and voc.hop_length == HOP
    assert voc.needs_noisy == (kind == "melgain")
    mel = LogMel()(torch.cat([clean, 0.5 * clean]))
    t = mel.shape[1]
    lengths = torch.tensor([t, t - 7])
    wav = voc.decode(mel, lengths, torch.cat([noisy, noisy]))
    assert wav.shape == (2, t * HOP) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all()
    assert (wav[1, (t - 7) * HOP :] == 0).all()
    assert wav[1, : (t - 7) * HOP].abs().max() > 0
    # frames beyond lengths are ignored: garbage there changes nothing in the valid part of item 1
    # (hifigan: its receptive field reaches past the end, so only griffinlim / melgain are exact)
    if kind != "hifigan":
        mel2 = mel.clone()
        mel2[1, t - 7 :] = 5.0
        wav2 = voc.decode(mel2, lengths, torch.cat([noisy, noisy]))
        assert torch.allclose(wav, wav2, atol=1e-6)


@pytest.mark.parametrize("kind", ["griffinlim", "melgain"])
def test_single_frame_decodes(kind, clean):
    voc = build_vocoder(VocoderConfig(type=kind, griffinlim=GriffinLimConfig(n_iter=2)))
    mel = LogMel()(clean)[:, 50:51]
    wav = voc.decode(mel, noisy=clean[:, 50 * HOP : 51 * HOP])
    assert wav.shape == (1, HOP) and torch.isfinite(wav).all()


def test_melgain_needs_noisy_and_bad_shapes(clean):
    voc = build_vocoder(VocoderConfig(type="melgain"))
    mel = LogMel()(clean)
    with pytest.raises(ValueError, match="needs the noisy"):
        voc.decode(mel)
    with pytest.raises(ValueError, match=r"\[B, T, 80\]"):
        voc.decode(mel[..., :40], noisy=clean)


def test_melgain_clean_mel_of_clean_signal_reconstructs(clean):
    voc = build_vocoder(VocoderConfig(type="melgain"))
    out = voc.decode(LogMel()(clean), noisy=clean)
    n = out.shape[1]
    assert snr_db(clean[:, :n], out) > 40.0


def test_melgain_clean_mel_on_noisy_improves_snr(clean, noisy):
    voc = build_vocoder(VocoderConfig(type="melgain"))
    out = voc.decode(LogMel()(clean), noisy=noisy)
    n = out.shape[1]
    before, after = snr_db(clean[:, :n], noisy[:, :n]), snr_db(clean[:, :n], out)
    assert abs(before - 5.0) < 0.2
    assert after > before + 5.0, (before, after)


def test_melgain_gain_is_clamped(noisy):
    mel = LogMel()(noisy)
    voc = build_vocoder(VocoderConfig(type="melgain", melgain=MelGainConfig(max_gain=1.0)))
    out = voc.decode(mel + 1.0, noisy=noisy)  # asks for gain e everywhere: clamped to 1 -> the noisy input
    assert torch.allclose(out, noisy[:, : out.shape[1]], atol=1e-4)
    voc2 = build_vocoder(VocoderConfig(type="melgain", melgain=MelGainConfig(max_gain=2.0)))
    out2 = voc2.decode(mel + math.log(2.0), noisy=noisy)
    assert torch.allclose(out2, 2.0 * noisy[:, : out2.shape[1]], atol=1e-4)


def test_melgain_floor_limits_the_attenuation(noisy):
    """min_gain is an attenuation limit: a mel that asks for silence leaves min_gain x the noisy input."""
    mel = LogMel()(noisy)
    voc = build_vocoder(VocoderConfig(type="melgain", melgain=MelGainConfig(min_gain=0.178)))
    out = voc.decode(mel - 20.0, noisy=noisy)
    assert torch.allclose(out, 0.178 * noisy[:, : out.shape[1]], atol=1e-4)


def test_melgain_smoothing_averages_log_gains_over_frames(noisy):
    """smooth_frames k: the log-gain of frame t is the mean over frames t-k//2..t+k//2 (fewer at the edges)."""
    voc = build_vocoder(VocoderConfig(type="melgain", melgain=MelGainConfig(smooth_frames=3)))
    spec = voc.framing.stft(noisy)
    mel = voc.framing.log_mel(spec).clone()
    mel[:, 5] -= 3.0  # one frame asks for gain e^-3, its neighbours for 1
    mel[:, 0] -= 3.0  # the first frame: averaged with frame 1 only
    gain = voc.mel_gain(mel, spec)
    assert torch.allclose(gain[:, 4:7], torch.full_like(gain[:, 4:7], math.exp(-1.0)), atol=1e-5)
    assert torch.allclose(gain[:, 0:2], torch.stack([torch.full_like(gain[:, 0], math.exp(-1.5)),
                                                     torch.full_like(gain[:, 1], math.exp(-1.0))], 1), atol=1e-5)
    assert torch.allclose(gain[:, 8:], torch.ones_like(gain[:, 8:]), atol=1e-5)
def test_griffinlim_beats_random_phase(clean):
    voc = build_vocoder(VocoderConfig(type="griffinlim", griffinlim=GriffinLimConfig(n_iter=32)))
    mel = LogMel()(clean)
    mag = voc.inverse_mel(mel)
    fr = voc.framing
    g = torch.Generator().manual_seed(0)
    rand = fr.istft(torch.polar(mag, torch.rand(mag.shape, generator=g) * 2 * math.pi))

    def sc(w):
        s = fr.stft(w).abs()
        return float((s - mag).norm() / mag.norm())

    gl = voc.decode(mel)
    assert sc(gl) < 0.6 * sc(rand), (sc(gl), sc(rand))
    assert float((LogMel()(gl) - mel).abs().mean()) < float((LogMel()(rand) - mel).abs().mean())
    # deterministic for a seed
    assert torch.equal(gl, voc.decode(mel))


def test_griffinlim_nnls_inverse_mel_fits_better(clean):
    mel = LogMel()(clean)
    fb = MelFraming(MelConfig()).fbank
    err = []
    for it in (0, 20):
        voc = build_vocoder(VocoderConfig(type="griffinlim", griffinlim=GriffinLimConfig(nnls_iter=it, power=1.0)))
        mag = voc.inverse_mel(mel)
        assert (mag >= 0).all()
        err.append(float((mag.transpose(1, 2) @ fb - mel.exp()).norm()))
    assert err[1] < err[0]


def test_load_vocoder_roundtrip_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vocoder.yaml"):
        load_vocoder(str(tmp_path))
    cfg = VocoderConfig(type="melgain", mel=MelConfig(), melgain=MelGainConfig(max_gain=1.5))
    save_config(cfg, str(tmp_path / "vocoder.yaml"))
    voc = load_vocoder(str(tmp_path))
    assert voc.name == "melgain" and voc.cfg.max_gain == 1.5
    (tmp_path / "vocoder.yaml").write_text("type: wavenet\n")
    with pytest.raises(ConfigError, match="griffinlim"):
        load_vocoder(str(tmp_path))
    (tmp_path / "vocoder.yaml").write_text("type: hifigan\nmel: {}\n")
    with pytest.raises(FileNotFoundError, match="vocoder.pt"):
        load_vocoder(str(tmp_path))


def test_load_vocoder_ignores_stage_sections(tmp_path):
    """A vocoder.yaml with stage-3 settings besides the vocoder loads; a bad key inside a section does not."""
    import yaml

    from flowse.utils.config import to_dict

    data = to_dict(VocoderConfig(type="melgain", mel=MelConfig(), melgain=MelGainConfig(max_gain=1.5)))
    data.update(train={"max_steps": 10, "whatever": 1}, decode_batch_size=4)
    (tmp_path / "vocoder.yaml").write_text(yaml.safe_dump(data))
    voc = load_vocoder(str(tmp_path))
    assert voc.name == "melgain" and voc.cfg.max_gain == 1.5
    data["melgain"]["max_gian"] = 2.0
    (tmp_path / "vocoder.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"vocoder.yaml: .*melgain: unknown key\(s\) \['max_gian'\]"):
        load_vocoder(str(tmp_path))


def test_vocoder_config_sections_come_from_the_registry(monkeypatch):
    """A new type is one registry line: its section appears in VocoderConfig and build_vocoder builds it."""
    import dataclasses

    from flowse.models.vocoders import config as vcfg

    @dataclasses.dataclass
    class ToyConfig:
        gain: float = 1.0

    assert [f.name for f in dataclasses.fields(VocoderConfig)][:6] == ["type", *vcfg.VOCODERS]
    monkeypatch.setitem(vcfg.VOCODERS, "toy", vcfg.VocoderType("flowse.models.vocoders.griffinlim:GriffinLimVocoder",
                                                               GriffinLimConfig, "toy"))
    cls = vcfg.build_vocoder_config()
    cfg = cls(type="toy", toy=GriffinLimConfig(n_iter=3), mel=MelConfig())
    with pytest.raises(ConfigError, match="toy"):
        from flowse.utils.config import load_config

        load_config(cls, None, ["--type", "wavenet"])
    voc = build_vocoder(cfg)
    assert voc.name == "griffinlim" and voc.cfg.n_iter == 3
