"""DNSMOS: model location and hashes, the reference's windowing and P.808 mel, equality with speechmos."""
import os
import shutil

import numpy as np
import pytest
import torch

from signals import speechlike
from flowse.metrics.dnsmos import (
    DNSMOS, MODEL_FILES, DnsmosConfig, POLY_BAK, POLY_OVRL, POLY_SIG, WINDOW, P808Features, reference_windows, sha256,
    speechmos_model_dir,
)
from flowse.metrics.melspec import mel_filters


@pytest.fixture(scope="module")
def dnsmos():
    return DNSMOS(DnsmosConfig(threads=1))


def test_model_dir_and_sha256():
    d = speechmos_model_dir()
    for name, digest in MODEL_FILES.items():
        assert sha256(os.path.join(d, name)) == digest
    assert MODEL_FILES["sig_bak_ovr.onnx"].startswith("269fbebd") and MODEL_FILES["sig_bak_ovr.onnx"].endswith("6edd")
    assert MODEL_FILES["model_v8.onnx"].startswith("9246480c") and MODEL_FILES["model_v8.onnx"].endswith("6e91")


def test_user_model_dir_and_bad_hash(tmp_path):
    src = speechmos_model_dir()
    for name in MODEL_FILES:
        os.symlink(os.path.join(src, name), tmp_path / name)
    assert DNSMOS(DnsmosConfig(model_dir=str(tmp_path), threads=1)).model_dir == str(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(os.path.join(src, "model_v8.onnx"), bad / "model_v8.onnx")
    with open(bad / "sig_bak_ovr.onnx", "wb") as f:
        f.write(b"not a model")
    with pytest.raises(ValueError, match="sha256"):
        DNSMOS(DnsmosConfig(model_dir=str(bad)))
    with pytest.raises(FileNotFoundError, match="DNSMOS model missing"):
        DNSMOS(DnsmosConfig(model_dir=str(tmp_path / "nowhere")))


def test_reference_windowing():
    x = np.arange(2 * 16000, dtype=np.float32)  # 2 s: doubled 2 -> 4 -> 8 -> 16 s, not repeated to 10 s
    w = reference_windows(x)
    assert w.shape == (7, WINDOW)  # int(floor(16) - 9.01) + 1 windows, one per second
    np.testing.assert_array_equal(w[1, :5], np.arange(16000, 16005))
    np.testing.assert_array_equal(w[0, 32000:32003], [0, 1, 2])  # the doubled copy follows the original
    # 20 s: int(20 - 9.01) + 1 = 11 windows, of which 7..10 are one sample short in the reference and dropped
    w20 = reference_windows(np.arange(20 * 16000, dtype=np.float32))
    assert w20.shape == (7, WINDOW)
    assert reference_windows(np.ones(9 * 16000 + 500, np.float32)).shape == (1, WINDOW)
    with pytest.raises(ValueError):
        reference_windows(np.zeros(0, np.float32))


def test_p808_features_equal_librosa():
    librosa = pytest.importorskip("librosa", reason="librosa (test-only dependency) is needed for the reference mel")
    np.testing.assert_allclose(mel_filters(16000, 321, 120), librosa.filters.mel(sr=16000, n_fft=321, n_mels=120),
                               atol=1e-7)
    seg = reference_windows(speechlike(9.5))[0]
    ref = librosa.feature.melspectrogram(y=seg[:-160], sr=16000, n_fft=321, hop_length=160, n_mels=120)
    ref = ((librosa.power_to_db(ref, ref=np.max) + 40) / 40).T
    ours = P808Features()(torch.from_numpy(seg[None]))[0].numpy()
    assert ours.shape == ref.shape == (900, 120)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_equal_to_speechmos(dnsmos):
    try:
        from speechmos import dnsmos as ref_dnsmos
    except Exception as e:  # noqa: BLE001 - any import failure means no reference to compare with
        pytest.skip(f"speechmos reference not importable ({e!r})")
    clips = [speechlike(s, f0, seed=i, noise=nz) for i, (s, f0, nz) in
             enumerate([(1.0, 120, 0.01), (2.3, 180, 0.05), (5.0, 220, 0.002), (9.5, 100, 0.02),
                        (12.7, 150, 0.01), (20.0, 130, 0.03)])]
    ours = dnsmos.score(clips)
    for i, c in enumerate(clips):
        ref = ref_dnsmos.run(c, 16000)
        for k, rk in [("SIG", "sig_mos"), ("BAK", "bak_mos"), ("OVRL", "ovrl_mos"), ("P808", "p808_mos")]:
            assert abs(ours[k][i] - ref[rk]) < 1e-3, (i, k, ours[k][i], ref[rk])
    assert np.ptp(ours["OVRL"]) > 0.05  # the clips are told apart: values are real scores, not constants


def test_dedup_shared_trunk_and_level_sensitivity(dnsmos, monkeypatch):
    calls = []
    orig = dnsmos._run_p835
    monkeypatch.setattr(dnsmos, "_run_p835", lambda w: calls.append(len(w)) or orig(w))
    trunk = dnsmos.trunk
    monkeypatch.setattr(dnsmos, "trunk", None)  # per-window scoring (the trunk paths are tested below)
    one = speechlike(1.0, seed=3)
    single = dnsmos.score([one])
    both = dnsmos.score([one, 0.1 * one])
    assert calls == [1, 1, 1]  # 1 s tiles to 16 s: 7 windows, all equal, scored once
    w = reference_windows(one)
    assert len(w) == 7 and all(np.array_equal(w[0], w[i]) for i in range(7))
    for k in single:
        assert abs(both[k][0] - single[k][0]) < 1e-5
    assert abs(both["SIG"][1] - both["SIG"][0]) > 1e-3  # a quieter copy scores differently: no normalisation
    # the shared trunk (convolutions once over the 1100-frame span, in 2 chunks) equals per-window scoring;
    # MAX_SPAN 1000 also splits the windows into groups [0 s, 1 s] and [2 s]
    monkeypatch.setattr(trunk, "MAX_SPAN", 1000)
    clip = speechlike(12.1, seed=4)
    starts = [0, 16000, 32000]
    np.testing.assert_allclose(trunk.clip_raw(clip, starts), orig(reference_windows(clip)), atol=1e-5)


def test_p808_skipped_when_not_wanted(dnsmos, monkeypatch):
    clips = [speechlike(2.0, seed=5), speechlike(3.3, seed=6)]
    full = dnsmos.score(clips)
    calls = []
    monkeypatch.setattr(dnsmos, "_run_p808", lambda w: calls.append(len(w)))
    lean = dnsmos.score(clips, p808=False)
    assert calls == [] and sorted(lean) == ["BAK", "OVRL", "SIG"]
    for k in lean:
        np.testing.assert_array_equal(lean[k], full[k])


def test_periodic_trunk_equals_reference(dnsmos, monkeypatch):
    """Short clips of a multiple of 160 samples take the one-period trunk; values equal per-window scoring."""
    orig = dnsmos._run_p835
    spans = []
    trunk = dnsmos.trunk._trunk
    monkeypatch.setattr(dnsmos.trunk, "_trunk", lambda f: spans.append(f.shape[2]) or trunk(f))
    for sec, seed in ((0.04, 1), (1.6, 2), (2.0, 3), (3.2, 4)):
        clip = speechlike(sec, seed=seed)
        assert len(clip) % 160 == 0
        spans.clear()
        got = dnsmos.score([clip], p808=False)
        raw = orig(reference_windows(clip))
        assert sorted(set(spans)) == sorted({len(clip) // 160 + 16, 12})  # one period + halo; edge chunks
        np.testing.assert_allclose(got["OVRL"][0], POLY_OVRL(raw[:, 2]).mean(), atol=2e-5)
        np.testing.assert_allclose(got["SIG"][0], POLY_SIG(raw[:, 0]).mean(), atol=2e-5)
        np.testing.assert_allclose(got["BAK"][0], POLY_BAK(raw[:, 1]).mean(), atol=2e-5)
