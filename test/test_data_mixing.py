"""Mixing invariants, noise fitting, RIRs and synthetic noise families (values, not just 'it ran')."""
import numpy as np
import pytest

from flowse.data.mixing import crossfade_concat, fit_noise, mix, random_segment, rms, snr_db
from flowse.data.noise_synth import FAMILIES, colored, make_noise
from flowse.data.rir import RirSynthConfig, add_tail, reverberate, schroeder_rt60, synth_rir, target_rir

SR = 16000


def _speech_like(n, rng):
    t = np.arange(n) / SR
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    return (env * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("snr,level", [(-5.0, -35.0), (0.0, -25.0), (17.3, -15.0), (40.0, -20.0)])
def test_mix_invariants(snr, level):
    rng = np.random.default_rng(0)
    s = _speech_like(24000, rng) * 0.3
    n = rng.standard_normal(24000).astype(np.float32) * 3.0
    m = mix(s, n, snr, level)
    assert m.noisy.dtype == m.speech.dtype == m.noise.dtype == np.float32
    assert np.array_equal(m.noisy, m.speech + m.noise)  # exact, float32
    assert abs(snr_db(m.speech, m.noise) - snr) < 1e-3
    assert abs(snr_db(m.target, m.noisy - m.target) - snr) < 0.1  # what a checker recomputes from the files
    assert abs(m.snr_db - snr) < 1e-3
    assert abs(m.level_db - level) < 1e-3 and not m.clipped
    assert np.max(np.abs(m.noisy)) <= 0.99
    np.testing.assert_allclose(m.speech, s * m.gain, rtol=1e-5, atol=1e-7)  # one gain on the speech


def test_mix_peak_rescales_all_parts_together():
    rng = np.random.default_rng(1)
    s = np.zeros(16000, np.float32)
    s[8000] = 1.0  # a spike: at -15 dBFS RMS its peak is far above 0.99
    s += 0.001 * rng.standard_normal(16000).astype(np.float32)
    n = rng.standard_normal(16000).astype(np.float32)
    target = s * 0.5
    m = mix(s, n, 10.0, -15.0, target=target)
    assert m.clipped
    for part in (m.noisy, m.speech, m.noise, m.target):
        assert np.max(np.abs(part)) <= 0.99
    assert np.max(np.abs(np.concatenate([m.noisy, m.speech, m.noise, m.target]))) > 0.98
    assert m.level_db < -15.0
    assert abs(m.snr_db - 10.0) < 1e-3  # rescaling keeps the SNR
    np.testing.assert_allclose(m.target, 0.5 * m.speech, rtol=1e-5, atol=1e-8)  # same gain on the target
    assert np.array_equal(m.noisy, m.speech + m.noise)


def test_mix_rejects_bad_shapes_and_silence():
    with pytest.raises(ValueError, match="lengths differ"):
        mix(np.ones(10, np.float32), np.ones(11, np.float32), 0, -25)
    with pytest.raises(ValueError, match="silent"):
        mix(np.zeros(10, np.float32), np.ones(10, np.float32), 0, -25)


def test_fit_noise_segment_and_loop():
    rng = np.random.default_rng(2)
    noise = np.arange(1000, dtype=np.float32)
    seg = fit_noise(noise, 300, rng)
    assert len(seg) == 300 and np.all(np.diff(seg) == 1)  # a contiguous piece of the original
    white = rng.standard_normal(4000).astype(np.float32)
    long = fit_noise(white, 20000, rng, crossfade=400)
    assert len(long) == 20000
    # the equal-power crossfade keeps the level of uncorrelated noise at the joins
    assert abs(20 * np.log10(rms(long) / rms(white))) < 0.5
    first = long[:500]
    hits = [i for i in range(len(white) - 500) if np.array_equal(white[i : i + 500], first)]
    assert hits, "the loop starts inside the original noise"


def test_crossfade_concat_lengths_and_ends():
    a, b = np.ones(100), 2 * np.ones(50)
    c = crossfade_concat(a, b, 20)
    assert len(c) == 130 and c[0] == 1 and c[-1] == 2
    assert np.array_equal(crossfade_concat(a, b, 0), np.concatenate([a, b]))
    rng = np.random.default_rng(0)
    assert len(random_segment(np.arange(10), 4, rng)) == 4 and len(random_segment(np.arange(3), 4, rng)) == 3


def test_synthetic_rir_rt60_and_targets():
    cfg = RirSynthConfig()
    rng = np.random.default_rng(3)
    for _ in range(4):
        rir, info = synth_rir(cfg, rng)
        assert 0.3 <= info["rt60"] <= 1.3 and rir.dtype == np.float32
        assert np.max(np.abs(rir)) == pytest.approx(1.0)
        measured = schroeder_rt60(rir)
        assert measured == pytest.approx(info["rt60"], rel=0.12), (measured, info)
        direct = int(np.argmax(np.abs(rir)))
        early = target_rir(rir, "early", 50.0)
        assert len(early) == direct + 800 + 1 and np.array_equal(early, rir[: len(early)])
        dry = target_rir(rir, "dry")
        assert np.count_nonzero(dry) == 1 and dry[direct] == rir[direct]
    with pytest.raises(ValueError, match="early"):
        target_rir(rir, "late")


def test_add_tail_matches_requested_rt60():
    rng = np.random.default_rng(4)
    ism = np.zeros(2000)
    ism[100] = 1.0
    ism[300:1600] = 0.05 * rng.standard_normal(1300)
    out = add_tail(ism, 0.8, rng, 800)
    assert schroeder_rt60(out) == pytest.approx(0.8, rel=0.1)
    assert np.array_equal(out[:800], ism[:800])  # ISM part before the crossfade is untouched


def test_reverberate_is_truncated_convolution():
    rng = np.random.default_rng(5)
    x, h = rng.standard_normal(3000), rng.standard_normal(500)
    np.testing.assert_allclose(reverberate(x, h), np.convolve(x, h)[:3000], atol=1e-9)


def _slope_db_per_octave(x):
    f = np.fft.rfftfreq(len(x), 1 / SR)
    p = np.abs(np.fft.rfft(x)) ** 2
    band = (f > 100) & (f < 6000)
    return np.polyfit(np.log2(f[band]), 10 * np.log10(p[band] + 1e-20), 1)[0]


def test_noise_families_have_their_character():
    rng = np.random.default_rng(6)
    n = 4 * SR
    assert _slope_db_per_octave(rng.standard_normal(n)) == pytest.approx(0.0, abs=0.5)
    assert _slope_db_per_octave(colored(n, 1.0, rng)) == pytest.approx(-3.0, abs=0.5)
    assert _slope_db_per_octave(colored(n, 2.0, rng)) == pytest.approx(-6.0, abs=0.5)
    talkers = [np.sin(2 * np.pi * 150 * np.arange(8000) / SR) * (1 + rng.random()) for _ in range(3)]
    for fam in FAMILIES:
        x = make_noise(fam, n, rng, talkers)
        assert x.dtype == np.float32 and len(x) == n and np.all(np.isfinite(x))
        assert np.max(np.abs(x)) == pytest.approx(0.9, rel=1e-5)
        assert rms(x) > 1e-4
    hum = make_noise("hum", n, np.random.default_rng(7))
    spec = np.abs(np.fft.rfft(hum))
    f = np.fft.rfftfreq(n, 1 / SR)
    assert f[np.argmax(spec)] < 1000  # energy in the low harmonics
    with pytest.raises(ValueError, match="babble"):
        make_noise("babble", n, rng, [])
    with pytest.raises(ValueError, match="choose one of"):
        make_noise("rain", n, rng)
