"""Copy synthesis (python -m flowse.bin.vocode): audio -> log-mel -> vocoder -> audio for every vocoder type.

Closeness is the log-mel L1 (nats, mean over frames and bands, the last, partial frame left
out) between the input's mel (feats.scp) and the mel recomputed from the output. For scale:
two different speech-like signals are 0.61 apart. Measured here: Griffin-Lim (16 iterations,
power 1) 0.085, mel-gain <= 1.5e-3 (the identity up to the edge of a padded batch), the universal HiFi-GAN 0.21-0.23
(test_vocoder_hifigan); random-weight hifigan / hift are checked against their generators.
"""
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from flowse.bin import vocode
from flowse.data.kaldi import ScpReader
from flowse.features.audio import resample
from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders.config import HiFiGANConfig
from flowse.models.vocoders.hifigan import Generator
from flowse.models.vocoders.hifigan_io import to_standard_state_dict, write_standard_config
from flowse.models.vocoders.hift import HiFTConfig, HiFTGenerator
from flowse.utils.checkpoint import save_checkpoint
from flowse.utils.config import save_config
from flowse.utils.errors import UserError
from flowse.utils.fileio import read_kv
from signals import speechlike

LENGTHS = {"utt_a": 0.8, "utt_b": 1.1, "utt_c": 0.55}  # seconds at 16 kHz, not multiples of any hop
MEL24 = MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, magnitude_eps=1e-9)
SMALL_HIFT = {"base_channels": 32, "f0_cond_channels": 32}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder of 16 kHz speech-like wavs and the yamls of the runs."""
    d = tmp_path_factory.mktemp("vocode")
    os.makedirs(d / "in")
    for i, (k, sec) in enumerate(LENGTHS.items()):
        sf.write(str(d / "in" / f"{k}.wav"), speechlike(sec, f0=120.0 + 40 * i, seed=i), 16000, subtype="FLOAT")
    save_config(MelConfig(), str(d / "mel16.yaml"))
    save_config(MEL24, str(d / "mel24.yaml"))
    return d


def _yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(d, vocoder_yaml: str, mel_yaml: str, out: str, *extra: str) -> str:
    out_dir = str(d / out)
    vocode.main(["--config", vocoder_yaml, "--mel_config", str(d / mel_yaml), "--in", str(d / "in"),
                 "--out_dir", out_dir, "--device", "cpu", *extra])
    return out_dir


def _check_outputs(d, out_dir: str, mel_cfg: MelConfig) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rates, lengths and feats.scp frame counts; returns ``{utt: (input at mel rate, output, feats)}``."""
    wavs = read_kv(os.path.join(out_dir, "wav.scp"))
    feats = ScpReader(os.path.join(out_dir, "feats.scp"))
    assert sorted(wavs) == sorted(feats) == sorted(LENGTHS)
    got = {}
    for k in LENGTHS:
        x16, _ = sf.read(str(d / "in" / f"{k}.wav"), dtype="float32")
        x = resample(x16, 16000, mel_cfg.sample_rate)
        y, sr = sf.read(wavs[k], dtype="float32")
        assert sr == mel_cfg.sample_rate and y.shape == x.shape
        assert feats[k].shape == (x.shape[0] // mel_cfg.hop_length, mel_cfg.n_mels)
        got[k] = (x, y, feats[k])
    return got


def _mel_l1(mel_cfg: MelConfig, y: np.ndarray, feats: np.ndarray) -> float:
    with torch.no_grad():
        m = LogMel(mel_cfg)(torch.from_numpy(y)[None])[0].numpy()
    t = feats.shape[0] - 1
    return float(np.abs(m[:t] - feats[:t]).mean())


def test_feats_are_the_input_mel(inputs):
    out = _run(inputs, _yaml(inputs / "gl.yaml", {"type": "griffinlim"}), "mel16.yaml", "out_feats",
               "--griffinlim.n_iter", "1")
    for k, (x, _, feats) in _check_outputs(inputs, out, MelConfig()).items():
        with torch.no_grad():
            ref = LogMel(MelConfig())(torch.from_numpy(x)[None])[0].numpy()
        assert np.allclose(feats, ref, atol=1e-5)


def test_griffinlim_round_trip(inputs):
    out = _run(inputs, _yaml(inputs / "gl.yaml", {"type": "griffinlim"}), "mel16.yaml", "out_gl",
               "--griffinlim.n_iter", "16", "--griffinlim.power", "1.0", "--seed", "5")  # --seed: ignored here
    for k, (_, y, feats) in _check_outputs(inputs, out, MelConfig()).items():
        assert _mel_l1(MelConfig(), y, feats) < 0.2, k


def test_melgain_copy_synthesis_is_the_identity(inputs):
    out = _run(inputs, _yaml(inputs / "mg.yaml", {"type": "melgain"}), "mel16.yaml", "out_mg")
    for k, (x, y, feats) in _check_outputs(inputs, out, MelConfig()).items():
        # the last n_fft samples differ in a batch: the noisy STFT there sees the zero padding of shorter items
        n = feats.shape[0] * 256
        assert np.abs(y[: n - 1024] - x[: n - 1024]).max() < 2e-4, k  # 16-bit PCM: 3e-5 per step
        assert not y[n:].any()
        assert _mel_l1(MelConfig(), y, feats) < 5e-3, k  # measured <= 1.5e-3 (the batch edge above)


def test_hifigan_jik876_checkpoint(inputs, tmp_path):
    """A random small generator written as a jik876 checkpoint + config.json: the output is its output."""
    cfg = HiFiGANConfig(upsample_initial_channel=32)
    torch.manual_seed(0)
    gen = Generator(cfg)
    save_checkpoint({"generator": to_standard_state_dict(gen.state_dict())}, str(tmp_path / "g_00000001"))
    write_standard_config(str(tmp_path / "config.json"), cfg, MelConfig())
    conf = _yaml(tmp_path / "hg.yaml", {"type": "hifigan"})
    with pytest.raises(UserError, match="set pretrained"):
        _run(inputs, conf, "mel16.yaml", "out_hg_none")
    # one utterance per call: in a padded batch the end of a shorter item sees the padding
    out = _run(inputs, conf, "mel16.yaml", "out_hg", "--pretrained", str(tmp_path / "g_00000001"), "--batch_size", "1")
    for k, (_, y, feats) in _check_outputs(inputs, out, MelConfig()).items():
        with torch.no_grad():
            ref = gen(torch.tensor(feats).T[None])[0, 0].numpy()
        assert np.abs(y[: ref.shape[0]] - np.clip(ref, -1, 1)).max() < 1e-4, k
    with pytest.raises(ValueError, match="sampling_rate=16000 \\(ours sample_rate=24000\\)"):
        _run(inputs, conf, "mel24.yaml", "out_hg24", "--pretrained", str(tmp_path / "g_00000001"))


def test_hift_24k_seeded(inputs, tmp_path):
    torch.save(HiFTGenerator(HiFTConfig(**SMALL_HIFT)).state_dict(), str(tmp_path / "hift.pt"))
    conf = _yaml(tmp_path / "hift.yaml", {"type": "hift", "hift": SMALL_HIFT})
    with pytest.raises(FileNotFoundError, match=r"hift\.checkpoint.*CosyVoice2-0\.5B"):
        _run(inputs, conf, "mel24.yaml", "out_hift_none")
    ckpt = ["--hift.checkpoint", str(tmp_path / "hift.pt")]
    outs = {name: _check_outputs(inputs, _run(inputs, conf, "mel24.yaml", f"out_hift_{name}", *ckpt, "--seed", seed),
                                 MEL24)
            for name, seed in (("a", "3"), ("b", "3"), ("c", "4"))}
    for k in LENGTHS:
        assert np.array_equal(outs["a"][k][1], outs["b"][k][1])
        assert not np.array_equal(outs["a"][k][1], outs["c"][k][1])


def test_user_errors_are_one_line(inputs, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    conf = _yaml(tmp_path / "hg.yaml", {"type": "hifigan", "pretrained": str(tmp_path / "missing.pt")})
    r = subprocess.run([sys.executable, "-m", "flowse.bin.vocode", "--config", conf, "--mel_config",
                        str(inputs / "mel16.yaml"), "--in", str(inputs / "in"), "--out_dir", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("flowse.bin.vocode: error: pretrained: no file")
