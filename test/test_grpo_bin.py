"""Stage 5 CLI on a synthetic recipe: outputs, merged model export, resume, skip, config errors."""
import json
import os

import numpy as np
import pytest
import torch
import yaml

from flowse.features.audio import write_wav
from flowse.data.kaldi import ArkWriter
from flowse.features.mel import LogMel
from flowse.utils.config import ConfigError, load_config

from conftest import RECIPE

SR = 16000


def _speechlike(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / SR
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6))) ** 2
    x = sum(np.sin(k * ph) / k for k in range(1, 12)) * env
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def _make_set(root: str, name: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = os.path.join(root, "data", name)
    os.makedirs(data, exist_ok=True)
    logmel = LogMel()
    wav_lines, ref_lines = [], []
    with ArkWriter(os.path.join(root, "dump", name, "feats.ark"), os.path.join(root, "dump", name, "feats.scp")) as w:
        for i in range(n):
            key = f"{name}_{i:02d}"
            clean = _speechlike(rng, rng.uniform(1.0, 1.6))
            noisy = clean + 0.02 * rng.standard_normal(len(clean)).astype(np.float32)
            for kind, x, lines in (("noisy", noisy, wav_lines), ("clean", clean, ref_lines)):
                p = os.path.join(data, "wav", f"{key}_{kind}.wav")
                os.makedirs(os.path.dirname(p), exist_ok=True)
                write_wav(p, x)
                lines.append(f"{key} {p}\n")
            w[key] = logmel(torch.from_numpy(noisy)).numpy()
    open(os.path.join(data, "wav.scp"), "w").writelines(wav_lines)
    open(os.path.join(data, "spk1.scp"), "w").writelines(ref_lines)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from flowse.features.mel import MelConfig
    from flowse.models.io import save_model_dir
    from flowse.train.pretrain import PretrainConfig, build_model
    from flowse.utils.config import save_config
    from flowse.models.vocoders import VocoderConfig

    root = str(tmp_path_factory.mktemp("grpo_recipe"))
    _make_set(root, "train", 6, 0)
    _make_set(root, "valid", 2, 1)
    voc = os.path.join(root, "exp", "vocoder")
    save_config(VocoderConfig(type="melgain", mel=MelConfig()), os.path.join(voc, "vocoder.yaml"))
    cfg = load_config(PretrainConfig, os.path.join(RECIPE, "conf", "tiny", "pretrain.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and torch.all(p == 0):
                p.normal_(0, 0.2)
    save_model_dir(model, cfg, os.path.join(root, "exp", "pretrain"), voc)
    return root


def _grpo(root: str, exp: str, *extra: str) -> int:
    from flowse.bin import grpo

    os.chdir(root)
    return grpo.main(["--config", os.path.join(RECIPE, "conf", "tiny", "grpo.yaml"), "--init_dir", "exp/pretrain",
                      "--data_dir", "data", "--dump_dir", "dump", "--exp_dir", exp, "--device", "cpu",
                      "--reward.metrics", "[SISDR]", "--reward.log_metrics", "[SISDR, ESTOI]", *extra])


@pytest.mark.slow
def test_grpo_cli_outputs_export_and_resume(recipe):
    from flowse.models.io import load_model_dir
    from flowse.utils.stage import is_done

    cwd = os.getcwd()
    try:
        exp = os.path.join(recipe, "exp", "grpo_tiny")
        assert _grpo(recipe, exp) == 0
        for f in ["config.yaml", "train.log", "metrics.jsonl", "eval.jsonl", "train_curves.png", "eval_curves.png",
                  "checkpoint_2.pt", "model.pt", "model_config.yaml", "vocoder_dir", "summary.json", "export.json",
                  "last/model.pt", "lora/step_0.pt", "lora/step_2.pt"]:
            assert os.path.getsize(os.path.join(exp, f)) > 0, f
        assert is_done(exp, "grpo")
        rows = [json.loads(line) for line in open(os.path.join(exp, "metrics.jsonl"))]
        assert [r["iteration"] for r in rows] == [0] and rows[-1]["step"] == 2 and rows[0]["updates"] == 2
        for k in ["reward_mean", "reward_std", "train/SISDR", "train/ESTOI", "kl", "ratio_mean", "ratio_min",
                  "ratio_max", "clip_frac", "zero_std_frac", "time_rollout", "time_vocoder", "time_reward",
                  "time_update", "samples_per_s", "onpolicy_ratio_dev"]:
            assert k in rows[0], k
        assert rows[0]["onpolicy_ratio_dev"] < 1e-5
        evals = [json.loads(line) for line in open(os.path.join(exp, "eval.jsonl"))]
        assert [e["step"] for e in evals] == [0, 2] and "eval/ESTOI" in evals[0]
        assert len(evals[1]["utt_values"]["SISDR"]) == evals[1]["utts"] == 2
        export = json.load(open(os.path.join(exp, "export.json")))
        assert export["step"] in (0, 2) and export["last_step"] == 2 and export["summary"]
        assert json.load(open(os.path.join(exp, "summary.json")))["exported_step"] == export["step"]
        saved = yaml.safe_load(open(os.path.join(exp, "config.yaml")))
        assert saved["reward"]["metrics"] == ["SISDR"] and saved["train"]["max_steps"] == 2
        # the last step's merged model loads as a plain model dir and differs from the base model
        merged, _ = load_model_dir(os.path.join(exp, "last"))
        base, _ = load_model_dir(os.path.join(recipe, "exp", "pretrain"))
        diffs = [float((a - b).abs().max()) for (n, a), (_, b) in zip(merged.state_dict().items(), base.state_dict().items())
                 if "attn.to_" in n and n.endswith("weight")]
        assert max(diffs) > 0
        assert os.path.realpath(os.path.join(exp, open(os.path.join(exp, "vocoder_dir")).read().strip())) == \
            os.path.realpath(os.path.join(recipe, "exp", "vocoder"))
        # done: skipped
        assert _grpo(recipe, exp) == 0
        assert "already done" in open(os.path.join(exp, "train.log")).read()
        # more steps, the rest unchanged: resumes from checkpoint_2 and continues
        assert _grpo(recipe, exp, "--train.max_steps", "4") == 0
        log = open(os.path.join(exp, "train.log")).read()
        assert "resumed from" in log and "checkpoint_2.pt" in log
        rows = [json.loads(line) for line in open(os.path.join(exp, "metrics.jsonl"))]
        assert [r["iteration"] for r in rows] == [0, 1] and rows[-1]["step"] == 4
        assert os.path.exists(os.path.join(exp, "checkpoint_4.pt")) and not os.path.exists(os.path.join(exp, "checkpoint_2.pt"))
    finally:
        os.chdir(cwd)


def test_exported_model_dir_carries_the_rollout_cfg_strength(recipe, tmp_path):
    """``flowse-enhance`` on a GRPO exp dir uses the CFG weight GRPO optimised (``rollout.cfg_strength``)."""
    from flowse.rl.export import exported_config
    from flowse.enhance import Enhancer
    from flowse.models.io import load_model_dir
    from flowse.rl.config import GRPOConfig, LoRAConfig
    from flowse.rl.export import export_models
    from flowse.rl.lora import apply_lora

    base_dir = os.path.join(recipe, "exp", "pretrain")
    voc = os.path.join(recipe, "exp", "vocoder")
    for w, want in ((0.7, 0.7), (None, load_model_dir(base_dir)[1].flow.cfg_strength)):
        model, model_cfg = load_model_dir(base_dir)
        apply_lora(model, LoRAConfig(r=2, alpha=4))
        cfg = load_config(GRPOConfig, None, {"rollout": {"cfg_strength": w}})
        out = str(tmp_path / f"w{w}")
        assert export_models(model, exported_config(model_cfg, cfg), out, voc, 0, None) == 0
        for d in (out, os.path.join(out, "last")):
            assert Enhancer.from_model_dir(d, "cpu").cfg_strength == want
    assert want != 0.7


def test_grpo_configs_load_and_bad_values_are_named():
    from flowse.rl.config import GRPOConfig

    for c in ["tiny/grpo.yaml", "mini/grpo.yaml", "mini/grpo_multi.yaml", "paper/grpo.yaml",
              "paper/grpo_dnsmos_a0.2.yaml", "paper/grpo_a0.3.yaml", "paper/grpo_nonfast.yaml"]:
        cfg = load_config(GRPOConfig, os.path.join(RECIPE, "conf", c))
        assert cfg.train.max_steps >= 1
    paper = load_config(GRPOConfig, os.path.join(RECIPE, "conf", "paper", "grpo.yaml"))
    assert (paper.lora.r, paper.lora.alpha, paper.rollout.noise_level, paper.train.max_steps) == (32, 64, 0.4, 5000)
    assert (paper.rollout.group_size, paper.rollout.prompts_per_round, paper.rollout.rounds_per_iter) == (10, 6, 12)
    assert (paper.train.train_batch_size, paper.train.updates_per_iter, paper.train.lr) == (12, 4, 2e-4)
    assert paper.reward.metrics == ["OVRL", "SPK", "SBS"] and paper.reward.weights == [0.6, 1.0, 1.0]
    nonfast = load_config(GRPOConfig, os.path.join(RECIPE, "conf", "paper", "grpo_nonfast.yaml"))
    assert nonfast.rollout.window_start_range == [1, 1] and nonfast.rollout.window_size == 10
    with pytest.raises(ConfigError, match="fp32"):
        load_config(GRPOConfig, None, ["--rollout.precision", "fp8"])
    with pytest.raises(ConfigError, match="group_size"):
        load_config(GRPOConfig, None, ["--rollout.group_size", "1"])
    with pytest.raises(ConfigError, match="allowed keys"):
        load_config(GRPOConfig, None, ["--train.lrr", "1"])


def test_every_posttrain_config_loads_as_its_method():
    from flowse.rl.methods import load_posttrain_config, method_name

    found = {}
    for d in ("tiny", "mini", "paper"):
        for name in sorted(os.listdir(os.path.join(RECIPE, "conf", d))):
            if name.split("_")[0].split(".")[0] in ("grpo", "nft", "dpo"):
                path = os.path.join(RECIPE, "conf", d, name)
                cfg = load_posttrain_config(path)
                assert cfg.method == method_name(path) == name.split("_")[0].split(".")[0], path
                found[f"{d}/{name}"] = cfg
    assert {"mini/nft.yaml", "mini/dpo.yaml", "paper/nft.yaml", "paper/dpo.yaml", "tiny/nft.yaml"} <= set(found)
    nft, dpo = found["paper/nft.yaml"], found["paper/dpo.yaml"]
    assert (nft.train.beta, nft.train.kl_weight, nft.train.lr, nft.train.timesteps_per_sample) == (0.1, 1e-4, 3e-4, 9)
    assert dpo.train.max_steps == 20000 and dpo.reward.metrics == ["OVRL", "SPK", "SBS"]
    with pytest.raises(ConfigError, match="unknown method 'ppo'"):
        load_posttrain_config(os.path.join(RECIPE, "conf", "mini", "nft.yaml"), ["--method", "ppo"])
    with pytest.raises(ConfigError, match="same_init_noise"):
        load_posttrain_config(os.path.join(RECIPE, "conf", "mini", "nft.yaml"), ["--rollout.same_init_noise", "true"])
    with pytest.raises(ConfigError, match="allowed keys"):  # a GRPO key in an NFT yaml is an error
        load_posttrain_config(os.path.join(RECIPE, "conf", "mini", "nft.yaml"), ["--rollout.noise_level", "0.4"])


def test_grpo_snr_cli_writes_and_reuses_estimates(recipe, capsys):
    from flowse.bench import grpo_snr

    cwd = os.getcwd()
    try:
        os.chdir(recipe)
        out = os.path.join(recipe, "snr.pt")
        args = ["--config", os.path.join(RECIPE, "conf", "tiny", "grpo.yaml"), "--init_dir", "exp/pretrain",
                "--data_dir", "data", "--dump_dir", "dump", "--device", "cpu", "--reward.metrics", "[SISDR]",
                "--reward.log_metrics", "[SISDR]", "--out", out]
        assert grpo_snr.main(args + ["--estimates", "3"]) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        saved = torch.load(out, weights_only=True)
        assert len(saved["grads"]) == 3 and res["estimates"] == 3 and res["candidates"] == saved["candidates"] == 4
        assert all(float(g.norm()) > 0 for g in saved["grads"])  # SI-SDR differs between candidates
        assert abs(res["grad_norm"] - float(torch.stack(saved["grads"]).double().pow(2).sum(1).mean().sqrt())) < 1e-9
        assert grpo_snr.main(args + ["--estimates", "4"]) == 0  # three reused, one more collected
        assert len(torch.load(out, weights_only=True)["grads"]) == 4
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["estimates"] == 4
        with pytest.raises(ValueError, match="first_iteration"):  # estimates of other iterations are not reused
            grpo_snr.main(args + ["--estimates", "4", "--first_iteration", "5"])
        with pytest.raises(SystemExit):
            grpo_snr.main(args + ["--estimates", "2"])
    finally:
        os.chdir(cwd)
