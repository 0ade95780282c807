"""Any sample rate: the mel config at 22.05/24 kHz, audio resampled on reading (ark audio at its data
dir's rate, files at their own), stage 1 at 24 kHz, stage 2 at the mel rate, enhancement output rates."""
import numpy as np
import pytest
import soundfile as sf
import torch

from flowse.data.datadir import read_sample_rate, write_sample_rate
from flowse.data.dump import dump_sets
from flowse.data.kaldi import ScpReader, ark_writers, load_entry
from flowse.data.simulate import SetConfig, SimulateConfig, simulate_sets
from flowse.enhance import EnhanceConfig, Enhancer, enhance_files
from flowse.features.audio import resample
from flowse.features.mel import LogMel, MelConfig
from flowse.models.dit import DiTConfig
from flowse.models.flowse_model import FlowConfig, FlowSE
from flowse.models.vocoders import build_vocoder
from flowse.models.vocoders.config import VocoderConfig
from flowse.utils.config import ConfigError
from flowse.utils.fileio import write_kv

MEL_24K = dict(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, n_mels=80, fmin=0.0, fmax=8000.0)
MEL_22K = dict(sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024, n_mels=80, fmin=0.0, fmax=8000.0)


def _tone(seconds: float, sr: int, f0: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("kw", [MEL_24K, MEL_22K])
def test_mel_config_other_rates_frames_and_bands(kw):
    cfg = MelConfig(**kw)
    assert cfg.hop_seconds == kw["hop_length"] / kw["sample_rate"]
    mel = LogMel(cfg)
    for seconds in (0.5, 1.37):
        x = _tone(seconds, cfg.sample_rate, 1000.0)
        out = mel(torch.from_numpy(x))
        assert out.shape == (len(x) // cfg.hop_length, 80) == (cfg.num_frames(len(x)), 80)
    # same fmin/fmax/n_mels: a 1 kHz tone lands in the same mel band at every rate
    ref = LogMel(MelConfig())(torch.from_numpy(_tone(1.0, 16000, 1000.0)))
    assert int(out.mean(0).argmax()) == int(ref.mean(0).argmax())


def test_mel_config_checks_stay():
    with pytest.raises(ConfigError, match="fmax <= sample_rate/2"):
        MelConfig(sample_rate=16000, fmax=9000.0)
    with pytest.raises(ConfigError, match="sample_rate must be positive"):
        MelConfig(sample_rate=0)
    assert MelConfig(sample_rate=44100, fmax=22050.0).sample_rate == 44100


def test_ark_audio_is_read_at_its_data_dir_rate(tmp_path):
    d = tmp_path / "set24k"
    x = _tone(1.0, 24000)
    feats = np.random.default_rng(0).standard_normal((7, 80)).astype(np.float32)
    with ark_writers(str(d), ["wav", "feats"]) as w:
        w["wav"]["u1"], w["feats"]["u1"] = x, feats
    assert read_sample_rate(str(d)) == 16000  # no sample_rate file: the 16 kHz of older dirs
    write_sample_rate(str(d), 24000)
    assert read_sample_rate(str(d)) == 24000
    np.testing.assert_array_equal(ScpReader(str(d / "wav.scp"), 24000)["u1"], x)
    y = ScpReader(str(d / "wav.scp"), 16000)["u1"]
    assert len(y) == 16000
    np.testing.assert_allclose(y[1000:-1000], _tone(1.0, 16000)[1000:-1000], atol=2e-3)
    np.testing.assert_array_equal(ScpReader(str(d / "feats.scp"), 24000)["u1"], feats)  # matrices as stored
    sf.write(str(tmp_path / "f48k.wav"), _tone(0.5, 48000), 48000)  # files: their own rate
    assert len(load_entry(str(tmp_path / "f48k.wav"), sr=24000, stored_sr=16000)) == 12000
    (d / "sample_rate").write_text("fast\n")
    with pytest.raises(ValueError, match="positive integer sample rate"):
        read_sample_rate(str(d))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """Stage-0 lists with sources at 16 and 48 kHz."""
    d = tmp_path_factory.mktemp("rates")
    sf.write(str(d / "c16.wav"), _tone(1.5, 16000, 220.0), 16000)
    sf.write(str(d / "c48.flac"), _tone(1.2, 48000, 330.0), 48000)
    sf.write(str(d / "n16.wav"), 0.1 * np.random.default_rng(0).standard_normal(32000).astype(np.float32), 16000)
    loc = d / "local"
    loc.mkdir()
    write_kv(str(loc / "train_clean.scp"), {"a-16k": str(d / "c16.wav"), "a-48k": str(d / "c48.flac")})
    write_kv(str(loc / "utt2spk"), {"a-16k": "a", "a-48k": "a"})
    write_kv(str(loc / "noise_train.scp"), {"n": str(d / "n16.wav")})
    return d


def test_simulate_at_24k_resamples_sources(local):
    cfg = SimulateConfig(seed=1, sample_rate=24000, sets={"train": SetConfig(split="train", snr_range=(5.0, 5.0))})
    counts = simulate_sets(cfg, ["train"], str(local / "local"), str(local / "data24"))["train"]
    set_dir = local / "data24" / "train"
    assert counts["utterances"] == 2 and read_sample_rate(str(set_dir)) == 24000
    wav, spk1, noise = (ScpReader(str(set_dir / f), 24000) for f in ("wav.scp", "spk1.scp", "noise1.scp"))
    assert len(wav["a-16k"]) == 36000 and len(wav["a-48k"]) == 28800
    np.testing.assert_array_equal(wav["a-16k"], spk1["a-16k"] + noise["a-16k"])  # exact mixing invariant
    dur = dict(ln.split() for ln in open(set_dir / "utt2dur"))
    assert dur == {"a-16k": "1.5000", "a-48k": "1.2000"}
    # the 16 kHz view of the 24 kHz dir is the resampled audio
    np.testing.assert_array_equal(ScpReader(str(set_dir / "wav.scp"))["a-16k"], resample(wav["a-16k"], 24000, 16000))


def test_dump_resamples_to_the_mel_rate(local):
    cfg = SimulateConfig(seed=1, sets={"train": SetConfig(split="train", snr_range=(5.0, 5.0))})
    simulate_sets(cfg, ["train"], str(local / "local"), str(local / "data16"))
    set_dir, out = local / "data16" / "train", local / "dump24" / "train"
    dump_sets(MEL_24K | {"log_floor": 1e-5}, [(str(set_dir), str(out), True)], log_dir=str(local / "dump24" / "log"))
    noisy16 = ScpReader(str(set_dir / "wav.scp"), 16000)
    feats = ScpReader(str(out / "feats.scp"))
    n2f = {k: int(v) for k, v in (ln.split() for ln in open(out / "utt2num_frames"))}
    mel = LogMel(MelConfig(**MEL_24K))
    for k, x in noisy16.items():
        x24 = resample(x, 16000, 24000)
        assert n2f[k] == len(x24) // 480 == feats[k].shape[0], k
        np.testing.assert_allclose(feats[k], mel(torch.from_numpy(x24)).numpy(), atol=1e-5)


class IdentityFlow(FlowSE):
    """The ODE returns the noisy mel exactly (velocity of the straight path to the condition)."""

    def velocity(self, x, cond, t, mask=None, cfg_strength=None):
        t = t if torch.is_tensor(t) else torch.tensor(t)
        return (cond - x) / (1 - t.reshape(-1, 1, 1))


DIT = DiTConfig(hidden=16, depth=1, heads=2, head_dim=8, ffn=32, conv_kernel=3, conv_groups=4, time_freq_dim=8,
                dropout=0.0)


def test_enhancer_24k_output_rates(tmp_path):
    voc = build_vocoder(VocoderConfig(type="melgain", mel=MelConfig(**MEL_24K)), "cpu")
    enh = Enhancer(IdentityFlow(DIT, FlowConfig(nfe=2, normalize=False)), voc, EnhanceConfig(), "cpu")
    assert enh.sample_rate == enh.output_rate == 24000
    x = _tone(1.3, 16000)
    y24 = enh(x, 16000)
    y16 = enh(x, 16000, out_sr=16000)
    assert y24.shape == (len(resample(x, 16000, 24000)),) and y16.shape == x.shape
    # identity mel + mel-gain: the input back, at the rate asked for
    err = y16[2000:-2000] - x[2000:-2000]
    assert 10 * np.log10(np.sum(x[2000:-2000] ** 2) / np.sum(err**2)) > 30
    np.testing.assert_array_equal(y16, resample(y24, 24000, 16000))
    # files: default = the vocoder's rate, or the rate asked for; ark inputs at their dir's rate
    d = tmp_path / "set"
    with ark_writers(str(d), ["wav"]) as w:
        w["wav"]["ark24"] = _tone(1.0, 24000)
    write_sample_rate(str(d), 24000)
    sf.write(str(tmp_path / "f8k.wav"), _tone(1.0, 8000), 8000)
    for out_sr, out in [(None, "out_default"), (16000, "out16")]:
        r = enhance_files(enh, [str(d / "wav.scp"), str(tmp_path / "f8k.wav")], str(tmp_path / out), out_sr)
        rate = out_sr or 24000
        assert r["written"] == 2 and r["sample_rate"] == rate and r["audio_seconds"] == pytest.approx(2.0)
        for line in open(tmp_path / out / "wav.scp"):
            info = sf.info(line.split()[1])
            assert info.samplerate == rate and info.frames == rate, line
