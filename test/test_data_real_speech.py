"""The real-speech test set: stage 0's ``real_speech_*`` lists from a dir of clips (``corpus_real``) and
stage 1's ``test_real_speech`` (conf/tiny's set: test noises at the test SNRs, no reverberation),
on fake clips (synthetic tones at 22.05 kHz stereo and 16 kHz); a missing dir gives one warning and no set.
"""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import RECIPE, ROOT
from flowse.data.corpus_real import RealSpeechConfig, prepare_real_speech
from flowse.data.datadir import check_data_dir, read_utt2info
from flowse.data.kaldi import ScpReader
from flowse.data.simulate import SimulateConfig, set_inputs
from flowse.data.stages import read_test_sets, run_prepare_real_speech, run_simulate
from flowse.utils.config import load_config
from flowse.utils.fileio import read_kv, write_kv

SR = 16000


def _tone(seconds, sr, f0=150.0, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def real_dir(tmp_path):
    """Two sources: ``books`` (a 22.05 kHz stereo clip with a transcript, a 16 kHz one without), ``call``
    (one clip with a speaker label); MISSING names a third source."""
    root = tmp_path / "real"
    (root / "books").mkdir(parents=True)
    (root / "call").mkdir()
    x = _tone(2.5, 22050)
    sf.write(root / "books" / "a.wav", np.stack([x, x], 1), 22050)
    sf.write(root / "books" / "b.wav", _tone(2.0, SR, 200.0, 1), SR)
    (root / "books" / "text").write_text("a hello real world\n")
    (root / "books" / "SOURCE").write_text("Books: public domain.\n")
    sf.write(root / "call" / "t1.wav", _tone(3.0, SR, 120.0, 2), SR)
    (root / "call" / "spk").write_text("t1 alice\n")
    (root / "MISSING").write_text("arctic\n")
    return str(root)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_stage0_real_speech_lists(real_dir, tmp_path, caplog):
    out = str(tmp_path / "local")
    with caplog.at_level(logging.INFO):
        counts = prepare_real_speech(RealSpeechConfig(dir=real_dir), out)
    assert counts == {"real_speech_utterances": 3, "real_speech_seconds": 7.5, "real_speech_speakers": 2}
    assert _warnings(caplog) == ["real speech source arctic is missing (tools/fetch_real_speech.sh could not get it)"]
    scp = read_kv(os.path.join(out, "real_speech_clean.scp"))
    assert sorted(scp) == ["real-books-a", "real-books-b", "real-call-t1"]
    for path in scp.values():
        info = sf.info(path)
        assert info.samplerate == SR and info.channels == 1 and info.subtype == "PCM_16"
    assert sf.info(scp["real-books-a"]).duration == pytest.approx(2.5, abs=1e-3)
    assert read_kv(os.path.join(out, "real_speech_utt2spk")) == {
        "real-books-a": "real-books", "real-books-b": "real-books", "real-call-t1": "real-call-alice"}
    assert read_kv(os.path.join(out, "real_speech_text")) == {"real-books-a": "hello real world"}
    assert float(read_kv(os.path.join(out, "real_speech_utt2dur"))["real-call-t1"]) == pytest.approx(3.0)
    sources = open(os.path.join(out, "real_speech_SOURCES")).read()
    assert "== books: 2 clips (real-books-a real-books-b)\nBooks: public domain." in sources
    assert "== call: 1 clips (real-call-t1)\n(no SOURCE file)" in sources


def test_stage0_missing_dir_one_warning_and_stale_lists_removed(real_dir, tmp_path, caplog):
    out = str(tmp_path / "local")
    prepare_real_speech(RealSpeechConfig(dir=real_dir), out)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert prepare_real_speech(RealSpeechConfig(dir=str(tmp_path / "nowhere")), out) == {}
    assert len(_warnings(caplog)) == 1 and "no real speech under" in _warnings(caplog)[0]
    assert not [f for f in os.listdir(out) if f.startswith("real_speech_")]
    caplog.clear()
    assert prepare_real_speech(RealSpeechConfig(dir=None), out) == {} and not _warnings(caplog)


def _test_split_lists(local):
    """Stage-0 lists of a test split: one clean utterance, two noises (white, brown), no RIR."""
    os.makedirs(local, exist_ok=True)
    rng = np.random.default_rng(3)
    sf.write(os.path.join(local, "synth.wav"), _tone(2.0, SR, 180.0, 4), SR)
    sf.write(os.path.join(local, "white.wav"), 0.1 * rng.standard_normal(3 * SR), SR)
    sf.write(os.path.join(local, "brown.wav"), np.cumsum(rng.standard_normal(3 * SR)) / 300, SR)
    write_kv(os.path.join(local, "test_clean.scp"), {"slt-0001": os.path.join(local, "synth.wav")})
    write_kv(os.path.join(local, "utt2spk"), {"slt-0001": "slt"})
    write_kv(os.path.join(local, "text"), {"slt-0001": "a synthetic sentence"})
    write_kv(os.path.join(local, "noise_test.scp"), {n: os.path.join(local, f"{n}.wav") for n in ("white", "brown")})


def _tiny_sim():
    cfg = load_config(SimulateConfig, os.path.join(RECIPE, "conf", "tiny", "simulate.yaml"))
    cfg.sets = {k: cfg.sets[k] for k in ("test_no_reverb", "test_real_speech")}
    return cfg


def test_stage1_real_speech_set(real_dir, tmp_path, caplog):
    local, data = str(tmp_path / "data" / "local"), str(tmp_path / "data")
    _test_split_lists(local)
    cfg = _tiny_sim()
    sc = cfg.sets["test_real_speech"]
    assert (sc.split, sc.clean, sc.reverb_prob, sc.snr_range) == ("test", "real_speech", 0.0, (0.0, 20.0))
    with caplog.at_level(logging.INFO):
        run_prepare_real_speech(RealSpeechConfig(dir=real_dir), local)
        run_simulate(cfg, local, data, nj=1)
    set_dir = os.path.join(data, "test_real_speech")
    keys = check_data_dir(set_dir, ("wav.scp", "spk1.scp", "noise1.scp", "utt2spk", "spk2utt", "utt2dur", "utt2info"))
    assert keys == ["real-books-a", "real-books-b", "real-call-t1"]
    assert read_kv(os.path.join(set_dir, "utt2spk"))["real-call-t1"] == "real-call-alice"
    assert read_kv(os.path.join(set_dir, "text")) == {"real-books-a": "hello real world"}
    assert "Books: public domain." in open(os.path.join(set_dir, "SOURCES")).read()
    wav, spk1 = ScpReader(os.path.join(set_dir, "wav.scp")), ScpReader(os.path.join(set_dir, "spk1.scp"))
    info = read_utt2info(os.path.join(set_dir, "utt2info"))
    clean = ScpReader(os.path.join(local, "real_speech_clean.scp"))
    for k in keys:
        x, s = wav[k].astype(np.float64), spk1[k].astype(np.float64)
        measured = 10 * np.log10(np.sum(s ** 2) / np.sum((x - s) ** 2))
        assert abs(measured - info[k]["snr"]) < 0.5 and -0.5 < measured < 20.5
        assert info[k]["rir"] is None and info[k]["target"] == "clean" and info[k]["noise"] in ("white", "brown")
        ref = clean[k]
        assert len(s) == len(ref) and abs(np.corrcoef(s, ref)[0, 1]) > 0.999  # the reference is the recording
    assert len({info[k]["snr"] for k in keys}) == 3
    assert read_test_sets(data) == ["test_no_reverb", "test_real_speech"]
    assert read_kv(os.path.join(data, "test_no_reverb", "text")) == {"slt-0001": "a synthetic sentence"}
    assert not os.path.exists(os.path.join(data, "test_no_reverb", "SOURCES"))
    assert _warnings(caplog) == ["real speech source arctic is missing (tools/fetch_real_speech.sh could not get it)"]


def test_stage1_without_real_speech_skips_the_set(tmp_path, caplog):
    local, data = str(tmp_path / "data" / "local"), str(tmp_path / "data")
    _test_split_lists(local)
    with caplog.at_level(logging.INFO):
        run_prepare_real_speech(RealSpeechConfig(dir=str(tmp_path / "nowhere")), local)
        run_simulate(_tiny_sim(), local, data, nj=1)
    assert len(_warnings(caplog)) == 1 and "no real speech under" in _warnings(caplog)[0]
    assert not os.path.exists(os.path.join(data, "test_real_speech"))
    assert read_test_sets(data) == ["test_no_reverb"]


def test_set_key_without_clean_list_is_unchanged():
    cfg = _tiny_sim()
    assert "clean" not in set_inputs(cfg, "test_no_reverb", "data/local")[0]["set"]
    config, files = set_inputs(cfg, "test_real_speech", "data/local")
    assert config["set"]["clean"] == "real_speech"
    assert [os.path.basename(f) for f in files[:2]] == ["real_speech_clean.scp", "real_speech_utt2spk"]
    assert os.path.basename(files[2]) == "noise_test.scp"


@pytest.mark.slow
def test_stages_0_1_cli_tiny(real_dir, tmp_path):
    """Stages 0-1 through their CLIs on conf/tiny with the fake dir, then stage 0 again without it."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", LC_ALL="C")
    conf = os.path.join(RECIPE, "conf", "tiny")

    def run(*argv):
        r = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stderr

    stage0 = ["flowse.bin.prepare_corpus", "--corpus", "mini", "--config", f"{conf}/corpus.yaml", "--out_dir", "data/local", "--nj", "2"]
    stage1 = ["flowse.bin.simulate", "--config", f"{conf}/simulate.yaml", "--local_dir", "data/local", "--data_dir", "data", "--nj", "2"]
    run(*stage0, "--real_speech.dir", real_dir)
    run(*stage1)
    data = str(tmp_path / "data")
    assert read_test_sets(data) == ["test_no_reverb", "test_with_reverb", "test_real_speech"]
    assert len(read_kv(os.path.join(data, "test_real_speech", "wav.scp"))) == 3
    assert set(read_kv(os.path.join(data, "test_no_reverb", "text"))) == set(read_kv(os.path.join(data, "test_no_reverb", "utt2spk")))
    log = run(*stage0, "--real_speech.dir", str(tmp_path / "nowhere"))
    assert "already done, skipping" in log and sum(" WARNING: " in line for line in log.splitlines()) == 1
    log = run(*stage1)
    assert read_test_sets(data) == ["test_no_reverb", "test_with_reverb"] and " WARNING: " not in log
