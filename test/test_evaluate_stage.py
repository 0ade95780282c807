"""Stage 6 (flowse.evaluate): which exp dirs are scored, and that markers keyed on the score config,
the enhancement settings and the lists redo exactly the changed steps. Also the stage-3 ceiling
(flowse.vocode.vocoder_ceiling) redone when the vocoder's key changes. Except in the rescoring
test, enhancement and scoring are replaced by recorders (they are tested in their own files)."""
import os
import types

import pytest

from flowse import evaluate
from flowse.enhance import EnhanceConfig
from flowse.metrics.config import ScoreConfig
from flowse.utils.fileio import read_kv, write_kv


def _touch(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_find_systems_adds_every_model_dir_whatever_its_prefix(tmp_path):
    exp = tmp_path / "exp"
    for name in ["pretrain_a", "grpo_a", "nft_b", "dpo_c"]:
        _touch(str(exp / name / "model.pt"))
    for name in ["vocoder_a", "noisy_input", "empty"]:
        os.makedirs(exp / name)
    _touch(str(exp / "notes.txt"))
    named = [str(exp / n) for n in ["noisy_input", "vocoder_a", "pretrain_a", "grpo_a"]]
    assert evaluate.find_systems(named, str(exp)) == named + [str(exp / "dpo_c"), str(exp / "nft_b")]
    assert evaluate.find_systems(named + [named[0]]) == named
    assert evaluate.find_systems([], str(tmp_path / "no_exp")) == []


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A test set (wav.scp + spk1.scp) and recorders in place of enhancement, scoring and RESULTS."""
    import flowse.enhance
    import flowse.metrics.results
    import flowse.metrics.scoring

    calls = {"score": [], "enhance": [], "load": 0}
    data = tmp_path / "data"
    write_kv(str(data / "test" / "wav.scp"), {"u1": "/n/u1.wav"})
    write_kv(str(data / "test" / "spk1.scp"), {"u1": "/c/u1.wav"})

    def score_sets(lists, config=None, nj=1, cmd="local", device="cpu", force=False):
        calls["score"] += [(job.est, job.ref, list(config.metrics)) for job in lists]

    def enhance_files(enhancer, inputs, out_dir, out_sr=None):
        calls["enhance"].append((enhancer.cfg.nfe, list(inputs)))
        write_kv(os.path.join(out_dir, "wav.scp"), {"u1": os.path.join(out_dir, "u1.wav")})

    def from_model_dir(model_dir, device="auto", vocoder_dir=None, cfg=None):
        calls["load"] += 1
        return types.SimpleNamespace(cfg=cfg)

    monkeypatch.setattr(flowse.metrics.scoring, "score_sets", score_sets, raising=False)
    monkeypatch.setattr(flowse.metrics.results, "make_results", lambda exp_dir, sets, title=None: ("", {}))
    monkeypatch.setattr(flowse.enhance, "enhance_files", enhance_files)
    monkeypatch.setattr(flowse.enhance.Enhancer, "from_model_dir", staticmethod(from_model_dir))
    return calls, str(data)


def test_edited_score_config_rescores_and_unchanged_rerun_skips(tmp_path):
    """The real scoring (SI-SDR / ESTOI of 1 s of noise), driven through stage 6 on the noisy-input system."""
    import json

    import numpy as np
    import soundfile as sf

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in ("wav", "spk1"):
        path = str(tmp_path / "audio" / f"{name}_u1.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, 0.1 * rng.standard_normal(16000), 16000)
        write_kv(str(data / "test" / f"{name}.scp"), {"u1": path})
    noisy = str(tmp_path / "exp" / "noisy_input")
    summary = os.path.join(noisy, "scores_test", "summary.json")

    def run(metrics, **kw):
        evaluate.evaluate_system(noisy, str(data), ["test"], ScoreConfig(metrics=metrics), **kw)
        return sorted(json.load(open(summary))["metrics"]), os.stat(summary).st_mtime_ns

    names, t1 = run(["sisdr"])
    assert names == ["SISDR"] and json.load(open(os.path.join(noisy, "results.json")))["test"]["SISDR"] is not None
    assert run(["sisdr"]) == (["SISDR"], t1)  # same config and lists: skipped
    names, t2 = run(["sisdr", "estoi"])  # an edited score.yaml metric list: rescored
    assert names == ["ESTOI", "SISDR"] and t2 != t1
    assert run(["sisdr", "estoi"], force=True)[1] != t2


def test_model_system_is_enhanced_once_and_redone_when_settings_change(tmp_path, recorded):
    calls, data = recorded
    model = str(tmp_path / "exp" / "nft_x")
    _touch(os.path.join(model, "model.pt"), "weights")
    cfg = ScoreConfig(metrics=["sisdr"])
    evaluate.evaluate_system(model, data, ["test"], cfg, EnhanceConfig(nfe=4))
    est = os.path.join(model, "enhanced_test", "wav.scp")
    assert calls["enhance"] == [(4, [os.path.join(data, "test", "wav.scp")])] and calls["score"][-1][0] == est
    evaluate.evaluate_system(model, data, ["test"], cfg, EnhanceConfig(nfe=4))
    assert len(calls["enhance"]) == 1 and calls["load"] == 1  # not enhanced again, the model not even loaded
    evaluate.evaluate_system(model, data, ["test"], cfg, EnhanceConfig(nfe=8))
    assert [c[0] for c in calls["enhance"]] == [4, 8]
    _touch(os.path.join(model, "model.pt"), "retrained weights")
    evaluate.evaluate_system(model, data, ["test"], cfg, EnhanceConfig(nfe=8))
    assert len(calls["enhance"]) == 3


def test_vocoder_system_without_output_or_reference_is_skipped(tmp_path, recorded):
    calls, data = recorded
    write_kv(os.path.join(data, "real", "wav.scp"), {"r1": "/n/r1.wav"})
    voc = str(tmp_path / "exp" / "vocoder_x")
    write_kv(os.path.join(voc, "enhanced_test", "wav.scp"), {"u1": "/v/u1.wav"})
    assert evaluate.evaluate_system(voc, data, ["test", "real"], ScoreConfig(metrics=["pesq"])) == ["test"]
    with pytest.raises(FileNotFoundError, match="no enhanced output"):
        evaluate.evaluate_system(str(tmp_path / "exp" / "vocoder_y"), data, ["test"], ScoreConfig(metrics=["pesq"]))


def test_vocoder_ceiling_redone_when_the_vocoder_key_changes(tmp_path, monkeypatch):
    import flowse.vocode

    decoded = []

    def decode_scp(vocoder, feats, out_dir, noisy=None, batch_size=4):
        decoded.append(out_dir)
        write_kv(os.path.join(out_dir, "wav.scp"), {"u1": "u1.wav"})
        return 1

    monkeypatch.setattr(flowse.vocode, "decode_scp", decode_scp)
    _touch(str(tmp_path / "dump" / "test" / "spk1_feats.scp"), "u1 x.ark:1\n")
    _touch(str(tmp_path / "data" / "test" / "wav.scp"), "u1 y.ark:1\n")
    voc = types.SimpleNamespace(needs_noisy=False, name="griffinlim")
    args = (voc, str(tmp_path / "data"), str(tmp_path / "dump"), str(tmp_path / "exp"), ["test"])
    assert flowse.vocode.vocoder_ceiling(*args, vocoder_key={"config": "a"}) == ["test"] and len(decoded) == 1
    flowse.vocode.vocoder_ceiling(*args, vocoder_key={"config": "a"})
    assert len(decoded) == 1
    flowse.vocode.vocoder_ceiling(*args, vocoder_key={"config": "b"})  # an edited vocoder.yaml
    assert len(decoded) == 2
    flowse.vocode.vocoder_ceiling(*args, force=True, vocoder_key={"config": "b"})
    assert len(decoded) == 3


def test_all_sets_of_a_system_scored_by_one_set_of_jobs_equal_one_by_one(tmp_path):
    """``score_sets`` with nj 2 over two lists: the same per-utterance values as ``score_set`` of each list
    in this process, from one pair of job processes (each job works through both lists)."""
    import numpy as np
    import soundfile as sf

    from flowse.metrics.scoring import ScoreList, score_set, score_sets

    rng = np.random.default_rng(1)
    lists = []
    for s in ("a", "b"):
        scp = {}
        for name in ("wav", "spk1"):
            for u in range(3):
                path = str(tmp_path / "audio" / f"{s}_{name}_u{u}.wav")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sf.write(path, 0.1 * rng.standard_normal(16000 + 1000 * u), 16000)
                scp.setdefault(name, {})[f"u{u}"] = path
            write_kv(str(tmp_path / s / f"{name}.scp"), scp[name])
        lists.append(ScoreList(str(tmp_path / s / "wav.scp"), str(tmp_path / "par" / s), str(tmp_path / s / "spk1.scp")))
    cfg = ScoreConfig(metrics=["sisdr", "estoi"])
    import flowse.metrics.scoring as scoring

    built = []

    class CountingSuite(scoring.MetricSuite):
        def __init__(self, *a, **kw):
            built.append(1)
            super().__init__(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:  # in one process, the metric models load once for both lists
        mp.setattr(scoring, "MetricSuite", CountingSuite)
        mp.setattr(scoring, "_SUITES", {})
        here = score_sets([ScoreList(j.est, j.out_dir + "_here", j.ref) for j in lists], cfg, nj=1, progress=False)
    assert len(built) == 1 and [h["num_scored"] for h in here] == [3, 3]
    together = score_sets(lists, cfg, nj=2)
    logs = sorted(os.listdir(tmp_path / "par" / "a" / "log"))
    assert logs == ["score.1.log", "score.2.log"] and not os.path.exists(tmp_path / "par" / "b" / "log")
    for job, summary in zip(lists, together):
        alone = score_set(job.est, str(tmp_path / "one" / os.path.basename(job.out_dir)), job.ref, cfg)
        assert summary["num_scored"] == 3
        for m in ("SISDR", "ESTOI"):
            assert summary["metrics"][m]["mean"] == pytest.approx(alone["metrics"][m]["mean"], abs=1e-9)
            par = read_kv(os.path.join(job.out_dir, m))
            one = read_kv(str(tmp_path / "one" / os.path.basename(job.out_dir) / m))
            assert sorted(par) == sorted(one) == ["u0", "u1", "u2"]
            for u in par:  # last-digit differences: ESTOI's sums depend on the thread count
                assert float(par[u]) == pytest.approx(float(one[u]), rel=1e-9, abs=1e-12)
