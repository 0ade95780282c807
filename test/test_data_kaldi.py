"""ark/scp round trips and Kaldi data-dir invariants."""
import os

import numpy as np
import pytest

from flowse.features.audio import write_wav
from flowse.data.datadir import check_data_dir, make_spk2utt, read_utt2info, write_data_dir
from flowse.data.kaldi import ArkWriter, ScpReader, iter_scp, load_audio
from flowse.utils.fileio import read_kv


def test_ark_scp_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    data = {"b-2": rng.standard_normal(1234).astype(np.float32), "a-1": rng.standard_normal((57, 80)).astype(np.float32),
            "B-0": np.array([1e-30, -0.0, 3.4e38], np.float32)}
    with ArkWriter(str(tmp_path / "x.ark"), str(tmp_path / "x.scp")) as w:
        for k, v in data.items():
            w[k] = v
    keys = list(read_kv(str(tmp_path / "x.scp")))
    assert keys == ["B-0", "a-1", "b-2"]  # C byte order: upper case first
    r = ScpReader(str(tmp_path / "x.scp"))
    for k, v in data.items():
        assert r[k].dtype == np.float32 and np.array_equal(r[k], v)
    assert [k for k, _ in iter_scp(str(tmp_path / "x.scp"))] == keys
    with pytest.raises(KeyError, match="nope"):
        r["nope"]


def test_ark_writer_interrupted_leaves_no_scp(tmp_path):
    with pytest.raises(RuntimeError):
        with ArkWriter(str(tmp_path / "y.ark"), str(tmp_path / "y.scp")) as w:
            w["a"] = np.zeros(3, np.float32)
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    w = ArkWriter(str(tmp_path / "z.ark"), str(tmp_path / "z.scp"))
    w["k"] = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="duplicate"):
        w["k"] = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="invalid key"):
        w["a b"] = np.ones(2, np.float32)
    w.abort()


def test_scp_of_wav_paths_resamples_and_downmixes(tmp_path):
    import soundfile as sf

    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32)
    sf.write(str(tmp_path / "s.wav"), stereo, 8000)
    x = load_audio(str(tmp_path / "s.wav"))
    assert len(x) == 16000 and x.dtype == np.float32
    assert np.max(np.abs(x)) == pytest.approx(0.75, abs=0.02)  # mean of the two channels


def test_data_dir_write_check_and_errors(tmp_path):
    d = str(tmp_path / "set")
    keys = ["spkB-u1", "spkA-u2", "spkA-u1"]
    files = {
        "wav.scp": {k: f"/x/{k}.wav" for k in keys},
        "spk1.scp": {k: f"/y/{k}.wav" for k in keys},
        "utt2spk": {k: k.split("-")[0] for k in keys},
        "utt2info": {k: {"snr": 1.5, "rir": None} for k in keys},
    }
    write_data_dir(d, files)
    assert check_data_dir(d) == ["spkA-u1", "spkA-u2", "spkB-u1"]
    assert read_kv(os.path.join(d, "spk2utt")) == {"spkA": "spkA-u1 spkA-u2", "spkB": "spkB-u1"}
    assert read_utt2info(os.path.join(d, "utt2info"))["spkA-u2"] == {"rir": None, "snr": 1.5}
    assert make_spk2utt({"b": "s2", "a": "s1", "c": "s1"}) == {"s1": "a c", "s2": "b"}

    bad = dict(files, **{"spk1.scp": {k: "p" for k in keys[:2] + ["spkC-u9"]}})
    with pytest.raises(ValueError, match=r"spkA-u1.*spkC-u9"):
        write_data_dir(str(tmp_path / "bad"), bad)
    # a hand-edited file with other keys or unsorted lines is reported with the file name
    with open(os.path.join(d, "utt2dur"), "w") as f:
        f.write("spkA-u1 1.0\nspkA-u2 1.0\n")
    with pytest.raises(ValueError, match=r"utt2dur.*spkB-u1"):
        check_data_dir(d)
    with open(os.path.join(d, "utt2dur"), "w") as f:
        f.write("spkB-u1 1.0\nspkA-u1 1.0\nspkA-u2 1.0\n")
    with pytest.raises(ValueError, match="not sorted"):
        check_data_dir(d)


def test_write_wav_is_atomic_and_16bit(tmp_path):
    import soundfile as sf

    p = str(tmp_path / "a.wav")
    write_wav(p, np.array([0.5, -2.0, 0.25], np.float32))
    x, sr = sf.read(p, dtype="float32")
    assert sr == 16000 and sf.info(p).subtype == "PCM_16"
    np.testing.assert_allclose(x, [0.5, -1.0, 0.25], atol=1e-4)
    assert os.listdir(tmp_path) == ["a.wav"]
