"""End to end: the whole recipe (stages 0-6) on the tiny config, then a second GRPO exp; and the
same recipe with 24 kHz features (conf/tiny24k: CosyVoice2's mel, Griffin-Lim vocoder).

Runs ``run.sh`` in a copy of the recipe directory so the repository's own data/ dump/
exp/ stay untouched. Checks the outputs every stage promises and that results.json
holds every metric for every system and test set.
"""
import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import RECIPE, ROOT

SETS = ["test_no_reverb", "test_with_reverb"]
METRICS = ["SIG", "BAK", "OVRL", "P808", "SPK", "SBS", "PESQ", "ESTOI", "SISDR"]


def _run(recipe: str, *args: str, conf_dir: str = "conf/tiny") -> subprocess.CompletedProcess:
    env = dict(os.environ, FLOWSE_ROOT=ROOT)
    return subprocess.run(["bash", "run.sh", "--conf_dir", conf_dir, *args], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=1500)


def _copy_recipe(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("recipe") / "dns2020")
    os.makedirs(d)
    for name in ["run.sh", "path.sh", "cmd.sh"]:
        shutil.copy(os.path.join(RECIPE, name), d)
    shutil.copytree(os.path.join(RECIPE, "conf"), os.path.join(d, "conf"))
    os.symlink(os.path.join(ROOT, "utils"), os.path.join(d, "utils"))
    return d


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return _copy_recipe(tmp_path_factory)


@pytest.mark.slow
def test_whole_recipe_tiny(recipe):
    r = _run(recipe)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    for s in ["train", "valid", *SETS]:
        for f in ["wav.scp", "spk1.scp", "noise1.scp", "utt2spk", "spk2utt", "utt2dur", "utt2info"]:
            assert os.path.getsize(os.path.join(recipe, "data", s, f)) > 0, (s, f)
        assert os.path.exists(os.path.join(recipe, "dump", s, "feats.scp"))
    systems = sorted(os.listdir(os.path.join(recipe, "exp")))
    kinds = {s.split("_")[0] for s in systems}
    assert {"noisy", "vocoder", "pretrain", "grpo"} <= kinds, systems
    for s in systems:
        res = json.load(open(os.path.join(recipe, "exp", s, "results.json")))
        assert os.path.exists(os.path.join(recipe, "exp", s, "RESULTS.md"))
        for t in SETS:
            assert set(METRICS) <= set(res[t]), (s, t, res[t])
            for m in ["SIG", "BAK", "OVRL", "SPK", "PESQ", "ESTOI", "SISDR"]:
                assert isinstance(res[t][m], float), (s, t, m, res[t][m])
            assert 1.0 <= res[t]["OVRL"] <= 5.0
    table = open(os.path.join(recipe, "RESULTS.md")).read()
    for s in systems:
        assert s in table
    for pair in ("| pretrain_tiny - noisy_input | test_no_reverb |", "| grpo_tiny - pretrain_tiny | test_with_reverb |"):
        assert pair in table  # each training stage's paired effect
    # Simulation and scoring agree: the noisy input's SI-SDR against its clean reference is the mixing SNR.
    info = [json.loads(line.split(maxsplit=1)[1]) for line in open(os.path.join(recipe, "data", SETS[0], "utt2info"))]
    mean_snr = sum(i["snr"] for i in info) / len(info)
    noisy = json.load(open(os.path.join(recipe, "exp", "noisy_input", "results.json")))
    assert abs(noisy[SETS[0]]["SISDR"] - mean_snr) < 1.0, (noisy[SETS[0]]["SISDR"], mean_snr)
    assert "time per stage: stage0:" in r.stderr

    # A second GRPO exp from a modified config lands beside the first, reusing stages 0-4.
    r2 = _run(recipe, "--stage", "5", "--stop_stage", "6", "--grpo_args", "--train.max_steps 2")
    assert r2.returncode == 0, r2.stderr[-6000:]
    grpo = [s for s in os.listdir(os.path.join(recipe, "exp")) if s.startswith("grpo_")]
    assert len(grpo) == 2, grpo
    assert sorted(grpo) == ["grpo_tiny", "grpo_tiny_train.max_steps_2"], grpo
    table = open(os.path.join(recipe, "RESULTS.md")).read()
    assert all(g in table for g in grpo)

    # DiffusionNFT and DPO from the same base: stage 5 runs the yaml's method into exp/<method>_tiny, stage 6
    # scores it beside the others and RESULTS pairs every post-training exp with the base.
    for method in ("nft", "dpo"):
        r3 = _run(recipe, "--stage", "5", "--stop_stage", "6", "--posttrain_config", f"conf/tiny/{method}.yaml")
        assert r3.returncode == 0, r3.stderr[-6000:]
        exp = os.path.join(recipe, "exp", f"{method}_tiny")
        assert os.path.exists(os.path.join(exp, "model.pt")) and os.path.exists(os.path.join(exp, "export.json"))
        res = json.load(open(os.path.join(exp, "results.json")))
        assert all(isinstance(res[t]["OVRL"], float) for t in SETS)
        evals = [json.loads(ln) for ln in open(os.path.join(exp, "eval.jsonl"))]
        assert [e["step"] for e in evals] == [0, 2] and evals[-1]["train_cpu_seconds"] > 0
    assert len(open(os.path.join(recipe, "exp", "dpo_tiny", "pairs", "winner.scp")).readlines()) >= 1
    table = open(os.path.join(recipe, "RESULTS.md")).read()
    for pair in ("| grpo_tiny - pretrain_tiny |", "| nft_tiny - pretrain_tiny |", "| dpo_tiny - pretrain_tiny |"):
        assert pair in table


@pytest.mark.slow
def test_whole_recipe_tiny_24k(tmp_path_factory):
    from flowse.data.kaldi import ScpReader
    from flowse.features.audio import resample

    import torch

    from flowse.models.vocoders.hift import HiFTConfig, HiFTGenerator

    recipe = _copy_recipe(tmp_path_factory)
    ckpt = os.path.join(recipe, "hift_random.pt")  # a random-weight HiFT stands in for CosyVoice2's hift.pt
    torch.manual_seed(0)
    torch.save(HiFTGenerator(HiFTConfig(base_channels=32, f0_cond_channels=32)).state_dict(), ckpt)
    r = _run(recipe, "--vocoder_args", f"--hift.checkpoint {ckpt}", conf_dir="conf/tiny24k")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    mel = open(os.path.join(recipe, "dump", "mel.yaml")).read()
    assert "sample_rate: 24000" in mel and "hop_length: 480" in mel
    # stage 1 at 16 kHz, stage 2 at 24 kHz: frames = samples resampled to 24 kHz // 480
    n24 = {}
    for s in ["train", "valid", *SETS]:
        assert open(os.path.join(recipe, "data", s, "sample_rate")).read().strip() == "16000"
        noisy = ScpReader(os.path.join(recipe, "data", s, "wav.scp"), 16000)
        frames = {k: int(v) for k, v in (ln.split() for ln in open(os.path.join(recipe, "dump", s, "utt2num_frames")))}
        feats = ScpReader(os.path.join(recipe, "dump", s, "feats.scp"))
        assert sorted(frames) == sorted(noisy) and len(frames) > 0, s
        for k, x in noisy.items():
            n24[k] = len(resample(x, 16000, 24000))
            assert n24[k] == len(ScpReader(os.path.join(recipe, "data", s, "wav.scp"), 24000)[k])
            assert frames[k] == n24[k] // 480 and feats[k].shape == (frames[k], 80), (s, k)
    systems = sorted(os.listdir(os.path.join(recipe, "exp")))
    assert {"noisy", "vocoder", "pretrain", "grpo"} <= {x.split("_")[0] for x in systems}, systems
    assert all("tiny24k" in x for x in systems if x != "noisy_input"), systems
    for system in systems:
        res = json.load(open(os.path.join(recipe, "exp", system, "results.json")))
        for t in SETS:
            for m in ["SIG", "BAK", "OVRL", "SPK", "PESQ", "ESTOI", "SISDR"]:
                assert isinstance(res[t][m], float) and math.isfinite(res[t][m]), (system, t, m, res[t][m])
            if system == "noisy_input":
                continue
            scp = os.path.join(recipe, "exp", system, f"enhanced_{t}", "wav.scp")
            entries = dict(ln.split() for ln in open(scp))
            assert entries and set(entries) <= set(n24), (system, t)
            for k, path in entries.items():
                y, sr = sf.read(path)
                assert sr == 24000 and len(y) == n24[k] and np.abs(y).max() > 0, (system, t, k, sr, len(y))
