"""Job splitting and running (flowse.utils.jobs), the resumable split jobs (flowse.utils.jobdirs) and the
completion markers keyed on a step's inputs (flowse.utils.stage)."""
import json
import os
import sys

import pytest

from flowse.utils import jobdirs
from flowse.utils import stage
from flowse.utils.jobs import run_jobs, split_list


def test_split_list_contiguous_near_equal():
    parts = split_list(list(range(10)), 3)
    assert parts == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert sum(parts, []) == list(range(10))
    assert split_list([1, 2], 4) == [[], [1], [2], []]
    with pytest.raises(ValueError):
        split_list([1], 0)


def test_run_jobs_local_logs_and_failures(tmp_path):
    out = str(tmp_path / "o.JOB")
    run_jobs([sys.executable, "-c", f"open({out!r}, 'w').write('JOB')"], 3, str(tmp_path / "log"), "demo")
    assert [open(str(tmp_path / f"o.{j}")).read() for j in (1, 2, 3)] == ["1", "2", "3"]
    assert open(tmp_path / "log" / "demo.2.log").readline().startswith("# ")
    with pytest.raises(RuntimeError, match=r"(?s)1/2 bad jobs failed: job 2 exit 3.*boom"):
        run_jobs([sys.executable, "-c", "import sys; print('boom'); sys.exit(3 if JOB == 2 else 0)"], 2,
                 str(tmp_path / "log"), "bad")
    with pytest.raises(ValueError, match="unknown job backend"):
        run_jobs(["true"], 1, str(tmp_path / "log"), "x", cmd="sge")


NOISE = "flowse.data.corpus_mini:synth_noise_rir_job"


def _noise_items(tmp_path, n=5):
    """A tiny synthesis split (white noise): a real worker kind that starts fast."""
    return [{"kind": "noise", "id": f"n{i}", "split": "train", "family": "white", "seconds": 0.05 * (i + 1),
             "path": str(tmp_path / "audio" / f"n{i}.wav")} for i in range(n)], {"seed": 1, "rir": {}, "babble": {}}


def test_split_jobs_resume_only_unfinished(tmp_path):
    import soundfile as sf

    items, ctx = _noise_items(tmp_path)
    work = str(tmp_path / "jobs")
    dirs = jobdirs.run_split(NOISE, items, ctx, work, 2)
    assert [os.path.basename(d) for d in dirs] == ["1", "2"]
    results = jobdirs.read_job_json(dirs, "results.json")
    assert [r["id"] for r in results] == [f"n{i}" for i in range(5)]
    assert [sf.info(r["path"]).frames for r in results] == [800 * (i + 1) for i in range(5)]
    res1 = os.path.join(dirs[0], "results.json")
    t1 = os.path.getmtime(res1)
    # job 2 "killed": no marker, a partial temp file left behind
    stage.clear(dirs[1], jobdirs.DONE)
    with open(os.path.join(dirs[1], "results.json.tmp999"), "w") as f:
        f.write("garbage")
    os.unlink(os.path.join(dirs[1], "results.json"))
    dirs2 = jobdirs.run_split(NOISE, items, ctx, work, 2)
    assert dirs2 == dirs and os.path.getmtime(res1) == t1  # the finished job is not redone
    assert not os.path.exists(os.path.join(dirs[1], "results.json.tmp999"))
    assert stage.is_done(dirs[1], jobdirs.DONE) and len(jobdirs.read_job_json(dirs, "results.json")) == 5
    # other work for a job resets only that job; another nj replaces the old split
    dirs3 = jobdirs.run_split(NOISE, items[:4], ctx, work, 2)
    assert os.path.getmtime(res1) == t1 and len(jobdirs.read_job_json(dirs3, "results.json")) == 4
    dirs4 = jobdirs.run_splits([(NOISE, items, ctx, work), (NOISE, items[:1], ctx, str(tmp_path / "b"))],
                               3, str(tmp_path / "log"), "two")
    assert sorted(os.listdir(work)) == ["log", "split3"] and [len(d) for d in dirs4] == [3, 3]
    assert len(jobdirs.read_job_json(dirs4[1], "results.json")) == 1  # empty jobs are fine
    with open(os.path.join(dirs4[0][0], "job.json")) as f:
        assert json.load(f)["worker"] == NOISE
    for bad in ("nope", "flowse.data.corpus_mini:nope", "flowse.no_such_module:f"):
        with pytest.raises(ValueError, match="unknown job worker"):
            jobdirs.run_split(bad, items, ctx, work, 1)


def test_key_rng_depends_on_keys_only():
    assert jobdirs.key_rng(1, "set", "utt").random() == jobdirs.key_rng(1, "set", "utt").random()
    assert jobdirs.key_rng(1, "set", "utt").random() != jobdirs.key_rng(1, "set", "utt2").random()


def test_stage_marker_keyed_on_config_and_inputs(tmp_path, caplog):
    d, lst = str(tmp_path / "out"), tmp_path / "wav.scp"
    lst.write_text("u1 a.wav\n")
    key = stage.step_key(config={"a": 1}, files=[str(lst)], stats=True)
    assert not stage.is_done(d, "step", key)
    stage.mark_done(d, "step", key)
    assert stage.read_key(d, "step") == key
    assert stage.is_done(d, "step", stage.step_key(config={"a": 1}, files=[str(lst)], stats=True))
    assert stage.is_done(d, "step")  # any finished run, when no key is given
    assert not stage.is_done(d, "step", key, force=True)
    with caplog.at_level("INFO"):
        assert not stage.is_done(d, "step", stage.step_key(config={"a": 2}, files=[str(lst)], stats=True))
        assert "config changed" in caplog.text
        assert not stage.is_done(d, "step", stage.step_key(config={"a": 1}, files=[str(lst)], stats=False))
        assert "stats changed" in caplog.text
        os.utime(lst, ns=(0, 12345))  # the list rewritten (e.g. an upstream stage redone): same text, new audio
        assert not stage.is_done(d, "step", stage.step_key(config={"a": 1}, files=[str(lst)], stats=True))
        assert f"input {lst} changed" in caplog.text
    stage.clear(d, "step")
    assert not stage.is_done(d, "step") and stage.read_key(d, "step") is None
    with open(stage.marker_path(d, "step"), "w") as f:
        f.write("2024-01-01 00:00:00\n")  # a marker of the old format (no key): redone
    assert stage.is_done(d, "step") and not stage.is_done(d, "step", key)


def test_config_digest_of_dataclass_equals_its_mapping():
    from flowse.features.mel import MelConfig
    from flowse.utils.config import to_dict

    assert stage.config_digest(MelConfig()) == stage.config_digest(to_dict(MelConfig()))
    assert stage.config_digest(MelConfig()) != stage.config_digest(MelConfig(n_mels=64))
