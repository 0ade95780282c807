"""Enhancement: the Enhancer API (chunking continuity, determinism, batching) and the CLI (any input format,
bad inputs, outputs written last)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from flowse.features.mel import MelConfig
from flowse.enhance import EnhanceConfig, Enhancer, chunk_spans, overlap_add
from flowse.models.dit import DiTConfig
from flowse.models.flowse_model import FlowConfig, FlowSE
from flowse.models.io import save_model_dir
from flowse.models.vocoders import load_vocoder
from flowse.models.vocoders.config import VocoderConfig
from flowse.train.pretrain import PretrainConfig
from flowse.utils.config import save_config

DIT = DiTConfig(hidden=16, depth=1, heads=2, head_dim=8, ffn=32, conv_kernel=3, conv_groups=4, time_freq_dim=8,
                dropout=0.0)


class IdentityFlow(FlowSE):
    """Velocity of the straight path to the noisy condition: the ODE returns the noisy mel exactly."""

    def velocity(self, x, cond, t, mask=None, cfg_strength=None):
        t = t if torch.is_tensor(t) else torch.tensor(t)
        return (cond - x) / (1 - t.reshape(-1, 1, 1))


def _signal(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def vocoder_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocoder_melgain")
    save_config(VocoderConfig(type="melgain", mel=MelConfig()), str(d / "vocoder.yaml"))
    return str(d)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, vocoder_dir):
    d = tmp_path_factory.mktemp("pretrain_tiny")
    cfg = PretrainConfig(model=DIT, flow=FlowConfig(nfe=3))
    torch.manual_seed(0)
    m = FlowSE(cfg.model, cfg.flow)
    for p in m.dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_model_dir(m, cfg, str(d), vocoder_dir)
    return str(d)


def test_chunk_spans_and_crossfade_are_partitions_of_unity():
    spans = chunk_spans(1000, 300, 50)
    assert spans[0] == (0, 300) and spans[-1] == (700, 1000)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # consecutive chunks overlap
    assert chunk_spans(250, 300, 50) == [(0, 250)]
    ones = overlap_add([np.ones(e - s, np.float32) for s, e in spans], spans, 1000)
    assert np.allclose(ones, 1.0)
    ramp = np.arange(1000, dtype=np.float32)
    assert np.allclose(overlap_add([ramp[s:e] for s, e in spans], spans, 1000), ramp)


def test_long_file_chunking_is_continuous(vocoder_dir):
    m = IdentityFlow(DIT, FlowConfig(nfe=2, normalize=False))
    voc = load_vocoder(vocoder_dir)
    x = _signal(23.3)
    chunked = Enhancer(m, voc, EnhanceConfig(chunk_seconds=4, overlap_seconds=1, batch_size=3), "cpu")(x)
    whole = Enhancer(m, voc, EnhanceConfig(chunk_seconds=30), "cpu")(x)
    assert chunked.shape == x.shape == whole.shape and chunked.dtype == np.float32
    # identity mel + mel-gain vocoder = the input resynthesized; chunk joins must not show
    err = chunked - x
    snr = 10 * np.log10(np.sum(x**2) / np.sum(err**2))
    assert snr > 40, snr
    assert np.max(np.abs(chunked - whole)) < 1e-3
    for s, e in chunk_spans(len(x), 4 * 16000, 16000)[1:]:  # around every join
        seg = slice(s - 2000, s + 2000)
        assert np.max(np.abs(err[seg])) < 5e-3


def test_enhancer_from_model_dir_determinism_and_batch(model_dir):
    enh = Enhancer.from_model_dir(model_dir, "cpu", seed=3)
    assert enh.nfe == 3 and enh.cfg.seed == 3 and enh.vocoder.needs_noisy
    a, b = _signal(2.0, seed=1), _signal(3.1, seed=2)
    ya = enh(a)
    assert np.array_equal(ya, enh(a))
    batch = enh.enhance_batch([b, a])
    assert np.allclose(batch[1], ya, atol=1e-5) and batch[0].shape == b.shape
    other = Enhancer.from_model_dir(model_dir, "cpu", seed=4)(a)
    assert not np.allclose(other, ya)
    # 44.1 kHz stereo in [channels, samples] layout: downmixed and resampled, 16 kHz out
    st = np.stack([_signal(1.0, 44100, 5), _signal(1.0, 44100, 6)])
    assert enh(st, 44100).shape == (16000,)


def test_cli_mixed_inputs_odd_rates_and_bad_files(model_dir, tmp_path, capsys, caplog):
    from flowse.bin import enhance

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "stereo22k.wav", np.stack([_signal(1.5, 22050, 1), _signal(1.5, 22050, 2)], 1), 22050)
    sf.write(src / "sub" / "mono16k.flac", _signal(2.0, 16000, 3), 16000)
    sf.write(src / "silent.wav", np.zeros(16000, np.float32), 16000)
    (src / "broken.wav").write_bytes(b"RIFF not really a wav")
    sf.write(tmp_path / "eight.wav", _signal(1.0, 8000, 4), 8000)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"utt8k {tmp_path / 'eight.wav'}\nmissing {tmp_path / 'nope.wav'}\n")
    out = tmp_path / "out"
    rc = enhance.main(["--model_dir", model_dir, "--in", str(src), str(scp), "--out_dir", str(out),
                       "--device", "cpu", "--nfe", "2", "--cfg", "1.5", "--batch_size", "2", "--seed", "1"])
    assert rc == 0
    lines = (out / "wav.scp").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["mono16k", "stereo22k", "utt8k"]
    lengths = {"mono16k": 32000, "stereo22k": 24000, "utt8k": 16000}
    for ln in lines:
        key, path = ln.split()
        y, sr = sf.read(path)
        assert sr == 16000 and y.ndim == 1 and len(y) == lengths[key], (key, y.shape)
        assert np.abs(y).max() > 0
    text = caplog.text
    for bad in ("silent", "broken", "missing"):
        assert f"skipping {bad}" in text, bad
    printed = capsys.readouterr().out
    assert "RTF" in printed and "nfe 2, cfg 1.5" in printed
    assert "nfe: 2" in (out / "enhance.yaml").read_text() and "cfg_strength: 1.5" in (out / "enhance.yaml").read_text()


def test_cli_fails_when_nothing_works(model_dir, tmp_path):
    from flowse.bin import enhance

    (tmp_path / "bad.wav").write_bytes(b"junk")
    rc = enhance.main(["--model_dir", model_dir, "--in", str(tmp_path / "bad.wav"), "--out_dir",
                       str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 1 and not (tmp_path / "out" / "wav.scp").exists()
