"""Stages 0-2 through their CLIs on conf/tiny (the mini corpus, a dozen utterances), in a temp recipe dir.

Checks the data-dir invariants (sorted identical keys, counts, exact mixing, SNR, level, peak),
the features (frames == utt2num_frames == len(wav) // 256, stats), skipping of finished stages,
redoing a stage whose config changed, and that a stage killed with SIGKILL and rerun ends with
complete outputs identical to an uninterrupted run.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import RECIPE, ROOT
from flowse.data.datadir import check_data_dir, read_utt2info
from flowse.data.kaldi import ScpReader
from flowse.utils.fileio import read_kv

pytestmark = pytest.mark.slow

SETS = ["train", "valid", "test_no_reverb", "test_with_reverb"]
COUNTS = {"train": 12, "valid": 4, "test_no_reverb": 4, "test_with_reverb": 4}


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", LC_ALL="C")


def stage0(d):
    """Stage 0 with a user noise dir (one good file at 44.1 kHz stereo, one broken) given as a CLI override."""
    return [sys.executable, "-m", "flowse.bin.prepare_corpus", "--corpus", "mini", "--config", "conf/tiny/corpus.yaml",
            "--dns_root", "", "--out_dir", "data/local", "--nj", "2", "--force", "false",
            "--mini.noise_dirs.train", f"[{os.path.join(d, 'my_noises')}]"]


def stage1(data="data", nj="2", *extra):
    return [sys.executable, "-m", "flowse.bin.simulate", "--config", "conf/tiny/simulate.yaml", "--local_dir", "data/local",
            "--data_dir", data, "--nj", nj, "--cmd", "local", "--force", "false", *extra]


def stage2(*extra):
    return [sys.executable, "-m", "flowse.bin.dump_mel", "--config", "conf/tiny/mel.yaml", "--data_dir", "data",
            "--dump_dir", "dump", "--sets", " ".join(SETS), "--nj", "2", "--cmd", "local", "--force", "false", *extra]


def run(d, argv):
    r = subprocess.run(argv, cwd=d, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("recipe") / "dns2020")
    os.makedirs(d)
    shutil.copytree(os.path.join(RECIPE, "conf"), os.path.join(d, "conf"))
    user = os.path.join(d, "my_noises")
    os.makedirs(os.path.join(user, "sub"))
    t = np.arange(44100) / 44100
    sf.write(os.path.join(user, "sub", "hum 50.wav"), np.stack([np.sin(2 * np.pi * 50 * t)] * 2, 1) * 0.1, 44100)
    with open(os.path.join(user, "broken.wav"), "wb") as f:
        f.write(b"not a wav")
    run(d, stage0(d))
    run(d, stage1())
    run(d, stage2())
    return d


def _arrays(d, data, name, stream):
    return {k: v for k, v in ScpReader(os.path.join(d, data, name, f"{stream}.scp")).items()}


def test_stage0_mini_lists(recipe):
    loc = os.path.join(recipe, "data", "local")
    utt2spk = read_kv(os.path.join(loc, "utt2spk"))
    speakers = {}
    for split, n in [("train", 12), ("valid", 4), ("test", 8)]:
        scp = read_kv(os.path.join(loc, f"{split}_clean.scp"))
        assert len(scp) == n
        speakers[split] = {utt2spk[u] for u in scp}
        for path in scp.values():
            info = sf.info(path)
            assert info.samplerate == 16000 and info.channels == 1 and 1.0 <= info.duration <= 2.0
    assert not (speakers["train"] & speakers["valid"]) and not (speakers["train"] & speakers["test"])
    assert not (speakers["valid"] & speakers["test"])
    assert len(speakers["train"]) == 3 and len(speakers["test"]) == 2  # 1 flite voice + espeak-ng talkers
    babble = {u.rsplit("-", 1)[0] for s in ("train", "valid", "test") for u in read_kv(os.path.join(loc, f"babble_{s}.scp"))}
    assert not babble & set(utt2spk.values())  # babble talkers are never targets
    noise = read_kv(os.path.join(loc, "noise_train.scp"))
    assert len(noise) == 4 + 2 and len(read_kv(os.path.join(loc, "rir_test.scp"))) == 2
    assert {k for k in noise if k.startswith("user-")} == {"user-my_noises-broken", "user-my_noises-sub_hum_50"}
    assert json.loads(read_kv(os.path.join(loc, "noise_info"))["user-my_noises-sub_hum_50"])["family"] == "user"
    rir_info = {k: json.loads(v) for k, v in read_kv(os.path.join(loc, "rir_info")).items()}
    assert all(0.3 <= v["rt60"] <= 1.3 for v in rir_info.values()) and len(rir_info) == 6
    assert set(read_kv(os.path.join(loc, "text"))) == set(utt2spk)
    assert os.path.exists(os.path.join(loc, "corpus.yaml"))


def test_stage1_data_dirs(recipe):
    for name in SETS:
        d = os.path.join(recipe, "data", name)
        keys = check_data_dir(d, ("wav.scp", "spk1.scp", "noise1.scp", "utt2spk", "spk2utt", "utt2dur", "utt2info"))
        assert len(keys) == COUNTS[name]
        wav, spk1, noise = (_arrays(recipe, "data", name, s) for s in ("wav", "spk1", "noise1"))
        info = read_utt2info(os.path.join(d, "utt2info"))
        dur = read_kv(os.path.join(d, "utt2dur"))
        for k in keys:
            x, s, n, i = wav[k], spk1[k], noise[k], info[k]
            assert x.dtype == s.dtype == n.dtype == np.float32 and len(x) == len(s) == len(n)
            assert float(dur[k]) == pytest.approx(len(x) / 16000, abs=1e-4)
            assert np.max(np.abs(x)) <= 0.99
            level = 10 * np.log10(np.mean(x.astype(np.float64) ** 2))
            assert level == pytest.approx(i["level_db"], abs=0.01)
            assert -35.0 - 1e-3 <= i["target_level_db"] <= -15.0 + 1e-3
            assert i["clipped"] or abs(level - i["target_level_db"]) < 0.01
            lo, hi = (0, 30) if name == "train" else (0, 20)
            assert lo - 0.01 <= i["snr"] <= hi + 0.01 and i["clean"] in k
            if i["rir"] is None:
                assert i["target"] == "clean" and i["rt60"] is None
                assert np.array_equal(x, s + n)  # exact, float32
                snr = 10 * np.log10(np.sum(s.astype(np.float64) ** 2) / np.sum((x - s).astype(np.float64) ** 2))
                assert snr == pytest.approx(i["snr"], abs=0.1)
            else:
                assert i["target"] == "early" and 0.3 <= i["rt60"] <= 1.3
                assert not np.array_equal(x, s + n)  # the early target is not the reverberant speech in the mix
        rev = [i["rir"] is not None for i in info.values()]
        if name == "test_with_reverb":
            assert all(rev)
        if name == "test_no_reverb":
            assert not any(rev)
        assert os.path.exists(os.path.join(d, "simulate.yaml"))
    spk = read_kv(os.path.join(recipe, "data", "test_no_reverb", "utt2spk"))
    assert set(spk.values()) == set(read_kv(os.path.join(recipe, "data", "test_with_reverb", "utt2spk")).values())


def test_stage2_features(recipe):
    import torch

    from flowse.features.mel import LogMel, MelConfig
    from flowse.utils.config import load_config

    mel_cfg = load_config(MelConfig, os.path.join(recipe, "dump", "mel.yaml"))
    assert mel_cfg == MelConfig()
    logmel = LogMel(mel_cfg)
    for name in SETS:
        d = os.path.join(recipe, "dump", name)
        n2f = {k: int(v) for k, v in read_kv(os.path.join(d, "utt2num_frames")).items()}
        feats, clean = ScpReader(os.path.join(d, "feats.scp")), ScpReader(os.path.join(d, "spk1_feats.scp"))
        wav = ScpReader(os.path.join(recipe, "data", name, "wav.scp"))
        assert list(n2f) == list(feats) == list(clean) == list(wav)
        for k in n2f:
            x = wav[k]
            assert feats[k].shape == clean[k].shape == (n2f[k], 80) == (len(x) // 256, 80)
            assert feats[k].dtype == np.float32
        k = next(iter(n2f))
        ref = logmel(torch.from_numpy(wav[k].copy())).numpy()
        np.testing.assert_allclose(feats[k], ref, atol=1e-4)
    stats = json.load(open(os.path.join(recipe, "dump", "train", "stats.json")))
    train = os.path.join(recipe, "dump", "train")
    for stream in ("feats", "spk1_feats"):
        allf = np.concatenate(list(ScpReader(os.path.join(train, f"{stream}.scp")).values())).astype(np.float64)
        s = stats[stream]
        assert len(s["mean"]) == len(s["std"]) == 80
        assert s["frames"] == sum(int(v) for v in read_kv(os.path.join(train, "utt2num_frames")).values()) == len(allf)
        np.testing.assert_allclose(s["mean"], allf.mean(0), atol=1e-6)
        np.testing.assert_allclose(s["std"], allf.std(0), atol=1e-5)
    assert not os.path.exists(os.path.join(recipe, "dump", "valid", "stats.json"))


def test_rerun_skips_finished_stages(recipe):
    files = [os.path.join(recipe, p) for p in ("data/local/train_clean.scp", "data/train/wav.scp", "dump/train/feats.scp")]
    before = [os.path.getmtime(f) for f in files]
    r0, r1, r2 = run(recipe, stage0(recipe)), run(recipe, stage1()), run(recipe, stage2())
    assert "already done, skipping" in r0.stderr
    assert r1.stderr.count("already simulated, skipping") == 4 and r2.stderr.count("already dumped, skipping") == 4
    assert [os.path.getmtime(f) for f in files] == before


def test_changed_config_redoes_only_that_set(recipe):
    shutil.copytree(os.path.join(recipe, "data"), os.path.join(recipe, "data_c"), ignore=shutil.ignore_patterns("local"),
                    symlinks=True)
    os.symlink(os.path.join(recipe, "data", "local"), os.path.join(recipe, "data_c", "local"))
    r = run(recipe, stage1("data_c", "2", "--sets.valid.snr_range", "[5,5]"))
    assert r.stderr.count("already simulated, skipping") == 3 and "config changed" in r.stderr
    info = read_utt2info(os.path.join(recipe, "data_c", "valid", "utt2info"))
    assert len(info) == 4 and all(abs(i["snr"] - 5) < 1e-3 for i in info.values())


def test_stage1_killed_and_rerun_matches_uninterrupted(recipe):
    """SIGKILL the whole stage-1 process group right after its first job finishes, rerun, compare."""
    p = subprocess.Popen(stage1("data_k", "3"), cwd=recipe, env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if glob.glob(os.path.join(recipe, "data_k", "*", "split3", "*", ".job.done")):
            break
        time.sleep(0.01)
    finished_early = p.poll() is not None
    if not finished_early:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done_before = {f: os.path.getmtime(f) for f in glob.glob(os.path.join(recipe, "data_k", "*", "split3", "*", ".job.done"))}
    assert not finished_early and 1 <= len(done_before) < 12  # killed midway: some jobs finished, not all
    assert not glob.glob(os.path.join(recipe, "data_k", "*", ".simulate.done"))
    run(recipe, stage1("data_k", "3"))
    for f, t in done_before.items():
        assert os.path.getmtime(f) == t  # jobs finished before the kill were not redone
    assert not [f for f in glob.glob(os.path.join(recipe, "data_k", "**", "*"), recursive=True) if ".tmp" in f]
    for name in SETS:
        keys = check_data_dir(os.path.join(recipe, "data_k", name))
        assert keys == check_data_dir(os.path.join(recipe, "data", name))
        for stream in ("wav", "spk1", "noise1"):  # nj=3 after a kill == nj=2 uninterrupted, bit for bit
            a, b = _arrays(recipe, "data_k", name, stream), _arrays(recipe, "data", name, stream)
            assert all(np.array_equal(a[k], b[k]) for k in keys)
        assert read_kv(os.path.join(recipe, "data_k", name, "utt2info")) == read_kv(os.path.join(recipe, "data", name, "utt2info"))


def test_stage2_partial_job_is_redone(recipe):
    """A dump job that died midway (no marker, truncated temp ark, stage marker gone) is redone alone."""
    train = os.path.join(recipe, "dump", "train")
    before = {k: v.copy() for k, v in ScpReader(os.path.join(train, "feats.scp")).items()}
    job1, job2 = os.path.join(train, "split2", "1"), os.path.join(train, "split2", "2")
    t1 = os.path.getmtime(os.path.join(job1, "feats.ark"))
    os.unlink(os.path.join(job2, ".job.done"))
    os.unlink(os.path.join(train, ".dump_mel.done"))
    with open(os.path.join(job2, "feats.ark"), "r+b") as f:
        f.truncate(100)
    with open(os.path.join(job2, "feats.ark.tmp4242"), "wb") as f:
        f.write(b"partial")
    r = run(recipe, stage2())
    assert r.stderr.count("already dumped, skipping") == 3 and "1/2 jobs already finished" in r.stderr
    assert os.path.getmtime(os.path.join(job1, "feats.ark")) == t1
    assert not os.path.exists(os.path.join(job2, "feats.ark.tmp4242"))
    after = ScpReader(os.path.join(train, "feats.scp"))
    assert list(after) == list(before) and all(np.array_equal(after[k], before[k]) for k in before)
