"""Scoring CLI (files, skips, parallel jobs), RESULTS.md and the collection table."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import signals
from flowse.bin import make_results, score
from flowse.data.kaldi import ArkWriter
from flowse.metrics.intrusive import si_sdr
from flowse.utils.fileio import read_kv


def speechlike(sec: float, f0: float = 140.0, seed: int = 0, sr: int = 16000) -> np.ndarray:
    return signals.speechlike(sec, f0, seed, noise=0.0, gain=0.1, harmonics=5, sr=sr)


@pytest.fixture()
def corpus(tmp_path):
    """est folder (wav files) and ref wav.scp (ark entries), with the edge cases of the scorer."""
    rng = np.random.default_rng(0)
    est_dir = tmp_path / "est"
    est_dir.mkdir()
    clean = {f"utt{i}": speechlike(1.0 + 0.5 * i, 100 + 40 * i, seed=i) for i in range(4)}
    clean["short"] = speechlike(0.3)
    clean["broken"] = speechlike(1.0)
    est = {k: v + 0.01 * rng.standard_normal(v.size).astype(np.float32) for k, v in clean.items()}
    for k in ("utt0", "utt1", "short"):
        sf.write(est_dir / f"{k}.wav", est[k], 16000)
    est["utt2"] = est["utt2"][:-400]  # 25 ms shorter than its reference
    sf.write(est_dir / "utt2.flac", est["utt2"], 16000)
    e3 = speechlike(2.5, 220, seed=3, sr=8000)  # stored at 8 kHz: resampled on reading
    sf.write(est_dir / "utt3.wav", e3, 8000)
    est["utt3"] = None
    (est_dir / "broken.wav").write_bytes(b"RIFF not really")
    with ArkWriter(str(tmp_path / "ref.ark"), str(tmp_path / "ref.scp")) as w:
        for k, v in clean.items():
            w[k] = v
    return {"est": str(est_dir), "ref": str(tmp_path / "ref.scp"), "clean": clean, "est_wav": est,
            "tmp": tmp_path}


def test_score_files_summary_and_skips(corpus, capfd):
    out = str(corpus["tmp"] / "scores")
    rc = score.main(["--est", corpus["est"], "--ref", corpus["ref"], "--metrics", "sisdr,pesq,estoi,spk,sbs",
                     "--out_dir", out, "--progress", "false"])
    assert rc == 0
    summ = json.load(open(os.path.join(out, "summary.json")))
    assert summ["num_utts"] == 6 and summ["num_scored"] == 4 and summ["num_skipped"] == 2
    assert set(summ["skipped"]) == {"broken", "short"}
    assert "too short" in summ["skipped"]["short"] and "broken.wav" in summ["skipped"]["broken"]
    assert summ["metrics"]["SBS"]["status"] == "n/a" and "sbs.model_dir" in summ["metrics"]["SBS"]["hint"]
    assert not os.path.exists(os.path.join(out, "SBS"))
    sisdr = read_kv(os.path.join(out, "SISDR"))
    assert list(sisdr) == ["utt0", "utt1", "utt2", "utt3"]
    clean, est = corpus["clean"], corpus["est_wav"]
    k = est["utt2"].size  # trimmed to the shorter signal
    e2 = sf.read(os.path.join(corpus["est"], "utt2.flac"), dtype="float32")[0]
    assert float(sisdr["utt2"]) == pytest.approx(si_sdr(e2, clean["utt2"][:k]), abs=1e-5)
    assert 10 < float(sisdr["utt0"]) < 20  # 1% noise on a 0.1-peak voice
    means = {m: np.mean([float(v) for v in read_kv(os.path.join(out, m)).values()]) for m in ("SISDR", "PESQ")}
    assert summ["metrics"]["SISDR"]["mean"] == pytest.approx(means["SISDR"], abs=1e-5)
    assert summ["metrics"]["PESQ"]["count"] == 4 and 1.0 <= summ["metrics"]["PESQ"]["mean"] <= 4.65
    assert all(0.0 < float(v) <= 1.0 for v in read_kv(os.path.join(out, "SPK")).values())
    text = capfd.readouterr().err
    assert "skipped broken" in text and "resampled" in text and "trimmed to the shorter" in text
    assert os.path.exists(os.path.join(out, "config.yaml")) and os.path.exists(os.path.join(out, ".score.done"))
    # rerun with the same config and inputs: skipped by the completion marker; --fail_on_skip reports
    # the skips with exit 3
    before = os.path.getmtime(os.path.join(out, "summary.json"))
    assert score.main(["--est", corpus["est"], "--ref", corpus["ref"], "--metrics", "sisdr,pesq,estoi,spk,sbs",
                       "--out_dir", out]) == 0
    assert os.path.getmtime(os.path.join(out, "summary.json")) == before
    assert score.main(["--est", corpus["est"], "--ref", corpus["ref"], "--metrics", "sisdr", "--out_dir", out,
                       "--force", "true", "--fail_on_skip", "true", "--progress", "false"]) == score.EXIT_SKIPPED


def test_missing_refs_and_bad_metric(corpus, tmp_path):
    ref = tmp_path / "partial.scp"
    lines = open(corpus["ref"]).read().splitlines()
    ref.write_text("\n".join(line for line in lines if not line.startswith(("utt1 ", "utt3 "))) + "\n")
    with pytest.raises(SystemExit, match="2 utterances .* no reference .*: utt1 utt3"):
        score.main(["--est", corpus["est"], "--ref", str(ref), "--metrics", "sisdr", "--out_dir", str(tmp_path / "o")])
    from flowse.utils.config import ConfigError

    with pytest.raises(ConfigError, match="unknown metric 'mos'"):
        score.main(["--est", corpus["est"], "--metrics", "mos", "--out_dir", str(tmp_path / "o2")])


def test_parallel_jobs_equal_single(corpus):
    out1, out2 = str(corpus["tmp"] / "s1"), str(corpus["tmp"] / "s2")
    args = ["--est", corpus["est"], "--ref", corpus["ref"], "--metrics", "sisdr", "--progress", "false"]
    assert score.main(args + ["--out_dir", out1]) == 0
    assert score.main(args + ["--out_dir", out2, "--nj", "2"]) == 0
    assert read_kv(os.path.join(out1, "SISDR")) == read_kv(os.path.join(out2, "SISDR"))
    s1, s2 = (json.load(open(os.path.join(o, "summary.json"))) for o in (out1, out2))
    assert s1["metrics"] == s2["metrics"] and s1["skipped"] == s2["skipped"]
    assert os.path.exists(os.path.join(out2, "log", "score.1.log")) and os.path.exists(os.path.join(out2, "log", "score.2.log"))


def test_dnsmos_without_ref_results_md_and_collect(corpus, tmp_path):
    exp = tmp_path / "exp" / "grpo_tiny"
    rc = score.main(["--est", corpus["est"], "--out_dir", str(exp / "scores_test_real"), "--progress", "false",
                     "--models.dnsmos.threads", "1", "--batch_size", "8"])
    assert rc == 0
    s = json.load(open(exp / "scores_test_real" / "summary.json"))
    assert sorted(s["metrics"]) == ["BAK", "OVRL", "P808", "SIG"]  # no --ref: non-intrusive only
    assert 1.0 < s["metrics"]["OVRL"]["mean"] < 5.0 and s["metrics"]["OVRL"]["count"] == 4
    (exp / "scores_test_no_reverb").mkdir()
    fake = {"num_utts": 3, "num_scored": 3, "num_skipped": 0, "skipped": {},
            "metrics": {"SIG": {"mean": 3.5981}, "BAK": {"mean": 4.1721}, "OVRL": {"mean": 3.3734},
                        "SPK": {"mean": 0.88881}, "SBS": {"mean": None, "status": "n/a", "hint": "x"},
                        "PESQ": {"mean": 2.5}, "ESTOI": {"mean": 0.81}, "SISDR": {"mean": 12.345}}}
    (exp / "scores_test_no_reverb" / "summary.json").write_text(json.dumps(fake))
    (exp / "config.yaml").write_text("reward:\n  metrics: [OVRL]\n")
    assert make_results.main(["--exp_dir", str(exp), "--sets", "test_no_reverb test_real test_missing"]) == 0
    md = (exp / "RESULTS.md").read_text()
    assert "| test_no_reverb | 3 | 3.598 | 4.172 | 3.373 | 0.8888 | n/a [^sbs] | 2.500 | 0.8100 | 12.35 |" in md
    assert "| test_real | 4 (2 skipped) |" in md and "| test_missing | not scored |" in md
    assert "[^sbs]: SBS is n/a" in md and "metrics: [OVRL]" in md and "git commit" in md and "onnxruntime" in md
    res = json.load(open(exp / "results.json"))
    assert set(res) == {"test_no_reverb", "test_real"}
    assert res["test_no_reverb"]["SBS"] is None and res["test_no_reverb"]["OVRL"] == pytest.approx(3.3734)
    assert res["test_real"]["PESQ"] is None and res["test_real"]["OVRL"] == pytest.approx(s["metrics"]["OVRL"]["mean"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_md = tmp_path / "ALL.md"
    p = subprocess.run([sys.executable, os.path.join(root, "utils", "collect_results.py"), str(tmp_path / "exp"),
                        "--out", str(out_md)], capture_output=True, text=True, check=True)
    assert "| grpo_tiny | test_no_reverb | 3.598 | 4.172 | 3.373 | 0.8888 | n/a | 2.500 | 0.8100 | 12.35 |" in p.stdout
    assert "| grpo_tiny | test_real |" in p.stdout and p.stdout in out_md.read_text()
