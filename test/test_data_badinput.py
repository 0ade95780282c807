"""Bad source audio in stages 1-2: skipped with one warning naming the file, resampled/downmixed when
that is right, a clear error when nothing usable is left or keys do not match."""
import glob
import os

import numpy as np
import pytest
import soundfile as sf

from flowse.data.datadir import check_data_dir, read_utt2info
from flowse.data.dump import dump_sets, plan_dump
from flowse.data.kaldi import ScpReader
from flowse.data.simulate import SetConfig, SimulateConfig, simulate_sets
from flowse.data.tts import check_engines
from flowse.utils.fileio import write_kv

SR = 16000


def _tone(seconds, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return np.repeat(x[:, None], channels, 1).astype(np.float32) if channels > 1 else x.astype(np.float32)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    a = d / "audio"
    a.mkdir()
    sf.write(str(a / "good.wav"), _tone(1.5), SR)
    sf.write(str(a / "stereo.wav"), _tone(1.5, channels=2), SR)  # downmixed
    sf.write(str(a / "rate8k.wav"), _tone(1.5, sr=8000), 8000)  # resampled
    sf.write(str(a / "rate48k.flac"), _tone(1.2, sr=48000), 48000)
    sf.write(str(a / "zeros.wav"), np.zeros(SR * 2, np.float32), SR)
    sf.write(str(a / "short.wav"), _tone(0.3), SR)
    sf.write(str(a / "empty.wav"), np.zeros(0, np.float32), SR)
    nan = _tone(1.5)
    nan[100] = np.nan
    sf.write(str(a / "nan.wav"), nan, SR, subtype="FLOAT")
    (a / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    clean = {f"s1-{n}": str(a / f) for n, f in [
        ("good", "good.wav"), ("stereo", "stereo.wav"), ("r8k", "rate8k.wav"), ("r48k", "rate48k.flac"),
        ("zeros", "zeros.wav"), ("short", "short.wav"), ("empty", "empty.wav"), ("nan", "nan.wav"),
        ("broken", "broken.wav"), ("missing", "nope.wav")]}
    sf.write(str(a / "noise_ok.wav"), np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1, SR)
    sf.write(str(a / "noise_tiny.wav"), np.ones(100, np.float32) * 0.1, SR)
    loc = d / "local"
    loc.mkdir()
    write_kv(str(loc / "train_clean.scp"), clean)
    write_kv(str(loc / "utt2spk"), {k: "s1" for k in clean})
    write_kv(str(loc / "noise_train.scp"), {"n-ok": str(a / "noise_ok.wav"), "n-zeros": str(a / "zeros.wav"),
                                            "n-broken": str(a / "broken.wav"), "n-tiny": str(a / "noise_tiny.wav")})
    return d


def test_simulate_skips_bad_clean_and_noise_files(local):
    cfg = SimulateConfig(seed=5, sets={"train": SetConfig(split="train", min_seconds=1.0, snr_range=(5.0, 5.0))})
    counts = simulate_sets(cfg, ["train"], str(local / "local"), str(local / "data"), nj=1)["train"]
    keys = check_data_dir(str(local / "data" / "train"), ("wav.scp", "spk1.scp", "noise1.scp"))
    assert keys == ["s1-good", "s1-r48k", "s1-r8k", "s1-stereo"]
    assert counts["skipped"] == 6 and counts["utterances"] == 4
    info = read_utt2info(str(local / "data" / "train" / "utt2info"))
    assert {i["noise"] for i in info.values()} == {"n-ok"}  # bad noises were redrawn
    wav = ScpReader(str(local / "data" / "train" / "wav.scp"))
    assert len(wav["s1-r8k"]) == int(1.5 * SR) and len(wav["s1-r48k"]) == int(1.2 * SR)  # resampled
    spk1 = ScpReader(str(local / "data" / "train" / "spk1.scp"))
    np.testing.assert_allclose(spk1["s1-stereo"] / np.abs(spk1["s1-stereo"]).max(),
                               spk1["s1-good"] / np.abs(spk1["s1-good"]).max(), atol=1e-6)  # downmixed
    log = "".join(open(p).read() for p in glob.glob(str(local / "data" / "log" / "simulate.*.log")))
    for name, reason in [("zeros.wav", "all samples are zero"), ("short.wav", "too short"), ("empty.wav", "empty"),
                         ("nan.wav", "NaN"), ("broken.wav", "cannot read"), ("nope.wav", "cannot read"),
                         ("noise_tiny.wav", "too short")]:
        lines = [ln for ln in log.splitlines() if "WARNING" in ln and name in ln]
        assert lines and reason in lines[0], (name, lines)


def test_simulate_fails_when_nothing_is_usable(local):
    loc = local / "local_bad"
    loc.mkdir()
    write_kv(str(loc / "train_clean.scp"), {"a": str(local / "audio" / "zeros.wav")})
    write_kv(str(loc / "utt2spk"), {"a": "s"})
    write_kv(str(loc / "noise_train.scp"), {"n": str(local / "audio" / "noise_ok.wav")})
    cfg = SimulateConfig(sets={"train": SetConfig(split="train")})
    with pytest.raises(RuntimeError, match=r"no usable utterance \(1 skipped"):
        simulate_sets(cfg, ["train"], str(loc), str(local / "data_bad"), nj=1)
    write_kv(str(loc / "utt2spk"), {"b": "s"})
    with pytest.raises(ValueError, match=r"no speaker for 1 utterances.*\['a'\]"):
        simulate_sets(cfg, ["train"], str(loc), str(local / "data_bad"), nj=1)


def test_dump_mismatched_keys_and_bad_entries(local, tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    a = local / "audio"
    write_kv(str(d / "wav.scp"), {"u1": str(a / "good.wav"), "u2": str(a / "good.wav"), "u3": str(a / "zeros.wav")})
    write_kv(str(d / "spk1.scp"), {"u1": str(a / "good.wav"), "u9": str(a / "good.wav"), "u3": str(a / "good.wav")})
    with pytest.raises(ValueError, match=r"only in .*wav.scp: \['u2'\]; only in .*spk1.scp: \['u9'\]"):
        plan_dump(str(d))
    os.unlink(d / "spk1.scp")
    sf.write(str(a / "hop.wav"), _tone(0.01), SR)  # 160 samples: less than one hop
    write_kv(str(d / "wav.scp"), {"u1": str(a / "stereo.wav"), "u2": str(a / "hop.wav"), "u3": str(a / "zeros.wav")})
    [counts] = dump_sets({}, [(str(d), str(tmp_path / "dump"), True)], nj=1, log_dir=str(tmp_path / "log"))
    assert counts == {"utterances": 1, "skipped": 2, "frames": int(1.5 * SR) // 256}
    assert not os.path.exists(tmp_path / "dump" / "spk1_feats.scp")  # no reference in this set
    feats = ScpReader(str(tmp_path / "dump" / "feats.scp"))["u1"]
    assert feats.shape == (int(1.5 * SR) // 256, 80) and feats.dtype == np.float32


def test_missing_synthesizers_name_the_packages(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="apt-get install flite espeak-ng"):
        check_engines({"flite", "espeak"})
    check_engines(set())
