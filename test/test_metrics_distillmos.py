"""DistillMOS (DMOS): equal to the ``distillmos`` package's own inference, batched, located offline."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowse.metrics import distillmos as dm
from flowse.metrics.distillmos import DistillMOS, DistillMOSConfig, segment_starts, weights_available


def _weights_or_skip() -> str:
    try:
        return dm.distillmos_weights_path()
    except FileNotFoundError:
        pytest.skip("distillmos wheel not installed (pip install distillmos==0.9.1 --no-deps)")


def _clip(n: int, seed: int) -> np.ndarray:
    """A voiced-like test signal: a 3 Hz-modulated harmonic tone plus noise, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / dm.SR
    tone = sum(np.sin(2 * np.pi * k * (140 + 20 * seed) * t) / k for k in range(1, 6))
    wav = 0.2 * tone * (1 + 0.8 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(n)
    return wav.astype(np.float32)


# 1 segment (shorter than one), 2 (just over one), 3 (hops of 13561 and 13562 samples)
LENGTHS = [5000, 130001, 150003]


@pytest.fixture(scope="module")
def clips():
    return [_clip(n, i) for i, n in enumerate(LENGTHS)] + [np.zeros(20000, np.float32), np.zeros(0, np.float32)]


@pytest.fixture(scope="module")
def ours(clips):
    _weights_or_skip()
    torch.manual_seed(0)
    scorer = DistillMOS(DistillMOSConfig(batch_size=3))
    return scorer, scorer.score(clips)


def test_segments_follow_the_package_rule():
    assert segment_starts(5000) == [0] and segment_starts(dm.SEGMENT) == [0]
    assert segment_starts(dm.SEGMENT + 1) == [0, 1]
    starts = segment_starts(170001)  # over 47121 -> 4 segments
    assert starts[0] == 0 and starts[-1] == 170001 - dm.SEGMENT and len(starts) == 4
    assert max(np.diff(starts)) <= dm.MAX_HOP


def test_equal_to_package(clips, ours):
    pytest.importorskip("xls_r_sqa", reason="the reference needs xls-r-sqa==0.1.0 (pip install xls-r-sqa==0.1.0)")
    distillmos = pytest.importorskip("distillmos", reason="the reference needs distillmos==0.9.1")
    ref_model = distillmos.ConvTransformerSQAModel().eval()
    with torch.no_grad():
        ref = np.array([ref_model(torch.from_numpy(w)[None]).item() for w in clips])
    _, got = ours
    assert got.dtype == np.float64 and got.shape == (len(clips),)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert np.all((got > 1) & (got < 5))


def test_batch_equals_one_by_one(clips, ours):
    scorer, batched = ours
    single = np.array([scorer.score([w])[0] for w in clips])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    assert batched[-2] == batched[-1]  # silence and an empty clip are both one all-zero segment
    assert scorer(clips[:1], None, ("DMOS",))["DMOS"][0] == pytest.approx(batched[0], abs=1e-5)
    assert scorer.score([]).shape == (0,)


def test_bad_input_names_the_item(ours):
    scorer, _ = ours
    with pytest.raises(ValueError, match="item 1"):
        scorer.score([np.zeros(100, np.float32), np.zeros((2, 100), np.float32)])


def test_weights_located_without_importing_the_package():
    _weights_or_skip()
    code = (
        "import sys, numpy as np\n"
        "from flowse.metrics.distillmos import DistillMOS, distillmos_weights_path\n"
        "p = distillmos_weights_path()\n"
        "assert p.endswith(('distillmos/weights/distill_mos_v7.pt', 'distillmos\\\\weights\\\\distill_mos_v7.pt')), p\n"
        "DistillMOS()\n"
        "assert not {'distillmos', 'xls_r_sqa'} & set(sys.modules), 'package imported'\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_locator_and_availability(tmp_path, monkeypatch):
    monkeypatch.setattr(dm.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(dm.site, "getsitepackages", lambda: [])
    monkeypatch.setattr(dm.site, "getusersitepackages", lambda: str(tmp_path / "user"))
    monkeypatch.setattr(dm.sys, "path", [str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="pip install distillmos"):
        dm.distillmos_weights_path()
    assert not weights_available(DistillMOSConfig())
    assert weights_available(DistillMOSConfig(weights="/somewhere/distill_mos_v7.pt"))
    target = tmp_path / "distillmos" / "weights" / "distill_mos_v7.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert dm.distillmos_weights_path() == str(target)
    assert weights_available(DistillMOSConfig())
    with pytest.raises(FileNotFoundError, match="dmos.weights"):
        DistillMOS(DistillMOSConfig(weights=str(tmp_path / "missing.pt")))


def test_config_checks():
    from flowse.utils.config import ConfigError

    with pytest.raises(ConfigError, match="batch_size"):
        DistillMOSConfig(batch_size=0)
    assert dm.METRIC.key == "dmos" and dm.METRIC.output_names == ("DMOS",) and not dm.METRIC.needs_ref
