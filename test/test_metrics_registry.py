"""A new metric is one module plus one registry line: it shows up in scoring, RESULTS and the GRPO reward."""
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf

from signals import speechlike
from flowse.bin import make_results, score
from flowse.metrics import registry
from flowse.metrics.config import build_models_config
from flowse.metrics.suite import MetricSuite
from flowse.rl.reward import RewardConfig, RewardModel
from flowse.utils.config import ConfigError, load_config
from flowse.utils.fileio import read_kv


def rms_db(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12)


@pytest.fixture()
def toy(monkeypatch):
    monkeypatch.setitem(registry.METRICS, "rms", "toy_metric:METRIC")  # the one registry line


def test_registry_order_and_declarations():
    assert registry.all_outputs() == ("SIG", "BAK", "OVRL", "P808", "SPK", "SBS", "PESQ", "ESTOI", "SISDR", "DMOS",
                                      "WER", "CER", "REF_WORDS", "REF_CHARS")
    assert registry.expand_metrics("sisdr, dnsmos,SPK") == ["SIG", "BAK", "OVRL", "P808", "SPK", "SISDR"]
    assert [registry.needs_ref(m) for m in ("OVRL", "SPK", "SISDR")] == [False, True, True]
    assert registry.output_spec("SISDR").column == "SI-SDR" and registry.output_spec("P808").column is None
    assert registry.unavailable_outputs(["SBS", "OVRL"], build_models_config()())["SBS"].startswith("SBS is n/a")
    with pytest.raises(ConfigError, match="unknown metric 'mos'; allowed: groups"):
        registry.expand_metrics("mos")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("pesq", "x:Y")


def test_toy_metric_in_suite_score_results_and_reward(toy, tmp_path):
    wavs = {f"utt{i}": speechlike(1.0, seed=i, noise=0.0) * (0.5 * (i + 1)) for i in range(3)}
    est_dir = tmp_path / "est"
    est_dir.mkdir()
    for k, w in wavs.items():
        sf.write(est_dir / f"{k}.wav", w, 16000, subtype="FLOAT")
    want = {k: rms_db(w) for k, w in wavs.items()}

    suite = MetricSuite(["rms", "sisdr"])
    res = suite.compute(list(wavs.values()), list(wavs.values()))
    np.testing.assert_allclose(res.values["RMS"], list(want.values()), rtol=1e-12)

    exp = tmp_path / "exp" / "toy"
    assert score.main(["--est", str(est_dir), "--metrics", "rms,sisdr", "--out_dir", str(exp / "scores_test"),
                       "--progress", "false"]) == 0  # no --ref: SI-SDR dropped, RMS kept
    got = {k: float(v) for k, v in read_kv(str(exp / "scores_test" / "RMS")).items()}
    assert got == pytest.approx(want, abs=1e-9)
    summ = json.load(open(exp / "scores_test" / "summary.json"))
    assert list(summ["metrics"]) == ["RMS"]
    assert summ["metrics"]["RMS"]["mean"] == pytest.approx(np.mean(list(want.values())))
    assert make_results.main(["--exp_dir", str(exp), "--sets", "test"]) == 0
    md = (exp / "RESULTS.md").read_text()
    assert "| RMS dB |" in md and f"| {np.mean(list(want.values())):.1f} |" in md
    assert json.load(open(exp / "results.json"))["test"]["RMS"] == pytest.approx(np.mean(list(want.values())))

    cfg = load_config(RewardConfig, None, ["--metrics", "[RMS, SISDR]", "--weights", "[1.0, 2.0]",
                                           "--std_normalize", "false", "--log_metrics", "[]"])
    rm = RewardModel(cfg)
    assert cfg.scale("RMS") == 0.1 and rm.metrics == ["SISDR", "RMS"]  # registry order
    r, m = rm(list(wavs.values()), list(wavs.values()))
    np.testing.assert_allclose(r, 0.1 * np.array(list(want.values())) + 2.0 * m["SISDR"], rtol=1e-12)


def test_models_config_is_built_from_the_registry(monkeypatch):
    @dataclasses.dataclass
    class LevelConfig:
        floor_db: float = -60.0

    spec = registry.Metric(key="lvl", outputs=(registry.Output("LVL"),), needs_ref=False, build=lambda c, d: None,
                           config_key="level", config=LevelConfig, available=lambda c: c.floor_db > -100, hint="no")
    monkeypatch.setattr(registry, "metric", lambda key: spec if key == "lvl" else registry_metric(key))
    monkeypatch.setitem(registry.METRICS, "lvl", "unused:SPEC")
    cls = build_models_config()
    assert [f.name for f in dataclasses.fields(cls)] == ["dnsmos", "speaker", "sbs", "dmos", "wer", "level"]
    cfg = load_config(cls, None, ["--level.floor_db", "-120", "--dnsmos.threads", "1"])
    assert cfg.level.floor_db == -120.0 and cfg.dnsmos.threads == 1
    assert registry.unavailable_outputs(["LVL"], cfg) == {"LVL": "no"}
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(cls, None, ["--levels.floor_db", "1"])


registry_metric = registry.metric
