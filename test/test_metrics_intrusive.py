"""PESQ-WB, ESTOI and SI-SDR values and their undefined cases."""
import numpy as np
import pytest

import signals
from flowse.metrics.intrusive import MetricUndefined, estoi, pesq_wb, si_sdr
from flowse.metrics.suite import MetricSuite, sanitize


def speechlike(sec: float, seed: int = 0) -> np.ndarray:
    return signals.speechlike(sec, seed=seed, noise=0.001)


def test_si_sdr_known_values():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(16000)
    s -= s.mean()
    n = rng.standard_normal(16000)
    n -= n.mean()
    n -= n @ s / (s @ s) * s  # orthogonal to s
    n *= np.linalg.norm(s) / np.linalg.norm(n) * 10 ** (-10 / 20)  # 10 dB below s
    assert si_sdr(s + n, s) == pytest.approx(10.0, abs=1e-9)
    assert si_sdr(3.0 * (s + n) + 0.5, s) == pytest.approx(10.0, abs=1e-9)  # scale and offset invariant
    assert si_sdr(s, s) > 150  # perfect: large but finite
    assert si_sdr(np.zeros_like(s), s) == pytest.approx(0.0)
    with pytest.raises(MetricUndefined, match="silent"):
        si_sdr(s, np.zeros_like(s))
    with pytest.raises(ValueError, match="equal length"):
        si_sdr(s[:10], s)


def test_pesq_and_estoi_values():
    ref = speechlike(3.0)
    rng = np.random.default_rng(1)
    noisy = ref + 0.03 * rng.standard_normal(ref.size).astype(np.float32)
    assert pesq_wb(ref, ref) == pytest.approx(4.64, abs=0.01)  # PESQ-WB ceiling
    p_noisy = pesq_wb(noisy, ref)
    assert 1.0 <= p_noisy < 3.0
    assert estoi(ref, ref) == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < estoi(noisy, ref) < 0.95
    from pesq import pesq
    from pystoi import stoi

    assert p_noisy == pytest.approx(pesq(16000, ref.astype(np.float64), noisy.astype(np.float64), "wb"), abs=1e-6)
    assert estoi(noisy, ref) == pytest.approx(stoi(ref.astype(np.float64), noisy.astype(np.float64), 16000,
                                                   extended=True), abs=1e-9)


def test_undefined_cases():
    ref = speechlike(2.0)
    with pytest.raises(MetricUndefined, match="silent"):
        pesq_wb(ref, np.zeros_like(ref))
    with pytest.raises(MetricUndefined, match="0.25 s"):
        pesq_wb(ref[:2000], ref[:2000])
    with pytest.raises(MetricUndefined, match="frames"):
        estoi(ref[:4000], ref[:4000])  # 0.25 s: fewer than 30 frames of 384 ms


def test_suite_trims_and_marks_undefined():
    suite = MetricSuite(["pesq", "estoi", "sisdr"])
    ref = speechlike(3.0, seed=2)
    est = np.concatenate([ref, np.zeros(800, np.float32)])  # 50 ms longer than the reference
    res = suite.compute([est, ref], [ref, np.zeros_like(ref)])
    assert res.trimmed == [(0, ref.size + 800, ref.size)]
    assert res.values["PESQ"][0] == pytest.approx(4.64, abs=0.01)
    assert res.values["SISDR"][0] > 100
    assert np.isnan(res.values["PESQ"][1]) and np.isnan(res.values["SISDR"][1]) and np.isnan(res.values["ESTOI"][1])
    assert {m for m, items in res.undefined.items() if items == [(1, items[0][1])]} == {"PESQ", "ESTOI", "SISDR"}
    with pytest.raises(ValueError, match="need a reference"):
        suite.compute([est], None)


def test_sanitize_clips():
    x, clipped = sanitize(np.array([0.5, 1.5, -2.0], np.float32))
    assert clipped and x.tolist() == [0.5, 1.0, -1.0]
    assert sanitize(np.array([0.1], np.float64))[1] is False


def test_suite_non_finite_items_are_undefined():
    suite = MetricSuite(["sisdr", "pesq"])
    ref = speechlike(1.0, seed=5)
    bad = ref.copy()
    bad[100] = np.nan
    res = suite.compute([ref, bad], [ref, ref])
    assert res.values["SISDR"][0] > 100 and np.isnan(res.values["SISDR"][1]) and np.isnan(res.values["PESQ"][1])
    assert res.undefined["SISDR"] == [(1, "NaN or Inf samples in the estimate")]
