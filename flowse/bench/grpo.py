"""Speed of GRPO: one iteration's time split, batched vs one-by-one candidates, paper-scale projection.

    python -m flowse.bench.grpo                                   # mini config on CPU
    python -m flowse.bench.grpo --init_dir exp/pretrain_mini      # with the trained mini model + its vocoder
    python -m flowse.bench.grpo --device cuda --threads 0

1. Mini iteration (``--config``, default conf/mini/grpo.yaml): one full GRPO iteration
   (rollouts, vocoder, reward metrics, policy update) of the model in ``--init_dir`` (else a
   randomly initialised network of ``--model_config``), on the prompts of ``--dump_dir`` /
   ``--data_dir`` when given, else on synthetic prompts (speed does not depend on content);
   the time split is the trainer's own log line.
2. Group batching: the G candidates of one prompt sampled in one batch vs one by one
   (G sampler calls of batch 1); the ratio is printed. And the shared ODE prefix: with x0
   shared per group the steps before the SDE window run once per group, not per candidate.
3. Paper projection (``--paper_config``, ``--paper_model_config``): forward and
   forward+backward times of the paper-size DiT (46.18M) are measured on ``--device`` at a
   small batch of ``crop_seconds`` crops and scaled linearly in batch to the paper's counts
   (12 rounds x 60 candidates x E[nfe] forwards for the rollouts; 1440 transitions in
   micro-batches of 12, forward+backward of the policy plus a forward of the reference
   for the update); vocoder and metric costs are measured per candidate and multiplied by
   720. SBS needs a WavLM-large dir (``--paper_config``'s reward.models.sbs.model_dir);
   without it its cost is left out and said so.
Prints readable lines and, last, one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the other bins: no spinning OpenMP threads

import numpy as np  # noqa: E402
import torch

from flowse.bench.model import timeit
from flowse.rl.config import GRPOConfig
from flowse.utils.config import load_config
from flowse.utils.distributed import DistInfo
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def synthetic_prompts(n: int, seconds: float, hop: int = 256, sr: int = 16000, seed: int = 0):
    """Prompts of noisy harmonic signals with their log-mels (for timing only)."""
    from flowse.features.mel import LogMel
    from flowse.rl.prompts import PromptSet

    rng = np.random.default_rng(seed)
    logmel = LogMel()
    mels, wavs, refs = {}, {}, {}
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        clean = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 200) * t) * (1 + np.sin(2 * np.pi * 3 * t))
        noisy = (clean + 0.03 * rng.standard_normal(len(t))).astype(np.float32)
        key = f"bench{i:03d}"
        wavs[key], refs[key] = noisy, clean.astype(np.float32)
        mels[key] = logmel(torch.from_numpy(noisy)).numpy()
    return PromptSet(mels, wavs, refs, hop, name="synthetic")


def build_reward(cfg: GRPOConfig, vocoder, device: torch.device):
    from flowse.rl.reward import RewardModel
    from flowse.rl.reward_fn import AudioReward

    return AudioReward(vocoder, RewardModel(cfg.reward, str(device)))


def load_or_build(init_dir: str | None, model_config: str, device: torch.device):
    from flowse.features.mel import MelConfig
    from flowse.models.io import load_model_dir, read_vocoder_dir
    from flowse.models.vocoders import VocoderConfig, build_vocoder, load_vocoder
    from flowse.train.pretrain import PretrainConfig, build_model

    if init_dir and os.path.exists(os.path.join(init_dir, "model.pt")):
        model, _ = load_model_dir(init_dir, device)
        vdir = read_vocoder_dir(init_dir)
        vocoder = load_vocoder(vdir, device) if vdir else build_vocoder(VocoderConfig(type="melgain", mel=MelConfig()), device)
        return model, vocoder, f"{init_dir} (vocoder {vdir or 'melgain'})"
    torch.manual_seed(0)
    model = build_model(load_config(PretrainConfig, model_config)).to(device).eval()
    vocoder = build_vocoder(VocoderConfig(type="melgain", mel=MelConfig()), device)
    return model, vocoder, f"random init of {model_config} (vocoder melgain)"


def bench_iteration(cfg: GRPOConfig, model, vocoder, prompts, device: torch.device) -> tuple[dict, object]:
    """Time one GRPO iteration (after a warm-up one); returns the timings and the ``GRPOTask``."""
    from flowse.rl.task import GRPOTask
    from flowse.train.trainer import Trainer

    dist = DistInfo(device=device)
    trainer = Trainer(GRPOTask(model, cfg, build_reward(cfg, vocoder, device), prompts, dist), cfg.train, None, dist)
    trainer.run_unit()  # warm-up (lazy model loads, allocator)
    rec = trainer.run_unit().stats
    return {k: rec[k] for k in ("candidates", "time_rollout", "time_vocoder", "time_reward", "time_update",
                                "time_total", "samples_per_s", "transitions", "updates", "nfe")}, trainer.task


def bench_group_batching(task, repeats: int) -> dict:
    """One prompt's G candidates: one batched rollout vs G rollouts of batch 1 (same nfe, window)."""
    from flowse.rl.rollout import mixed_rollout

    collector = task.collector
    ro = collector.cfg.rollout
    g = ro.group_size
    batch = collector.prompts.batch([0], collector.crop_frames, pad_to=collector.crop_frames)
    dev = collector.device
    mask = batch.mask.to(dev)
    cond = collector.model.normalize(batch.mel.to(dev), "noisy") * mask[..., None]
    nfe, window = ro.nfe_range[1], [0, 1][: ro.window_size]
    x0 = torch.randn(g, *cond.shape[1:], device=dev)
    eps = torch.randn(len(window), g, *cond.shape[1:], device=dev)

    def batched():
        mixed_rollout(collector.velocity, cond.expand(g, -1, -1), mask.expand(g, -1), nfe, window, ro.noise_level, x0, eps)

    def one_by_one():
        for i in range(g):
            mixed_rollout(collector.velocity, cond, mask, nfe, window, ro.noise_level, x0[i : i + 1], eps[:, i : i + 1])

    tb = timeit(batched, dev, repeats)
    ts = timeit(one_by_one, dev, repeats)
    return {"group_size": g, "nfe": nfe, "batched_s": tb, "one_by_one_s": ts, "speedup": ts / tb}


def bench_shared_prefix(task, repeats: int) -> dict:
    """A round (``prompts_per_round`` x G, x0 shared per group) with the ODE steps before the SDE window
    run once per group vs once per candidate; nfe and window start at the middle of their ranges."""
    from flowse.rl.rollout import mixed_rollout, window_steps

    collector = task.collector
    ro = collector.cfg.rollout
    g, p = ro.group_size, ro.prompts_per_round
    nfe = (ro.nfe_range[0] + ro.nfe_range[1] + 1) // 2
    window = window_steps(nfe, (ro.window_start_range[0] + ro.window_start_range[1] + 1) // 2, ro.window_size)
    batch = collector.prompts.batch(list(range(p)), collector.crop_frames, pad_to=collector.crop_frames)
    dev = collector.device
    mask = batch.mask.to(dev).repeat_interleave(g, 0)
    cond = collector.model.normalize(batch.mel.to(dev), "noisy").repeat_interleave(g, 0) * mask[..., None]
    x0 = torch.randn(p, *cond.shape[1:], device=dev).repeat_interleave(g, 0)
    eps = torch.randn(len(window), p * g, *cond.shape[1:], device=dev)

    def run(group_size):
        return lambda: mixed_rollout(collector.velocity, cond, mask, nfe, window, ro.noise_level, x0, eps,
                                     group_size=group_size)

    t_every = timeit(run(1), dev, repeats)
    t_shared = timeit(run(g), dev, repeats)
    return {"candidates": p * g, "nfe": nfe, "first_sde_step": window[0], "every_candidate_s": t_every,
            "shared_prefix_s": t_shared, "speedup": t_every / t_shared}


def bench_paper(paper_cfg: GRPOConfig, model_config: str, device: torch.device, batch: int, repeats: int,
                vocoder, reward_fn) -> dict:
    """Measure the paper-size DiT at ``batch`` crops and project one paper iteration and 5k steps."""
    from flowse.rl.lora import apply_lora
    from flowse.rl.rollout import Transitions, transition_log_prob
    from flowse.train.pretrain import PretrainConfig, build_model

    ro, tc = paper_cfg.rollout, paper_cfg.train
    mcfg = load_config(PretrainConfig, model_config)
    torch.manual_seed(0)
    model = build_model(mcfg).to(device).eval()
    apply_lora(model, paper_cfg.lora)
    frames = int(round(ro.crop_seconds * 16000 / 256))
    f = mcfg.model.n_mels
    w = mcfg.flow.cfg_strength if ro.cfg_strength is None else ro.cfg_strength
    cfg_factor = 1 if w in (0.0, 1.0) else 2
    x = torch.randn(batch, frames, f, device=device)
    cond = torch.randn(batch, frames, f, device=device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    t = torch.rand(batch, device=device)

    def vel(x_, c_, t_, m_):
        return model.velocity(x_, c_, t_, m_, w).float()

    def fwd():
        with torch.no_grad():
            vel(x, cond, t, mask)

    tr = Transitions(x, x + 0.1, t * 0.5, torch.full((batch,), 0.1, device=device), torch.full((batch,), 0.1, device=device),
                     torch.zeros(batch, device=device), torch.arange(batch, device=device), torch.zeros(batch, dtype=torch.long, device=device))

    def fwd_bwd():
        lp, _, _ = transition_log_prob(vel, tr, cond, mask, ro.noise_level)
        lp.sum().backward()

    t_fwd = timeit(fwd, device, repeats)
    t_fb = timeit(fwd_bwd, device, repeats)
    n_cand = ro.prompts_per_round * ro.group_size * ro.rounds_per_iter
    mean_nfe = (ro.nfe_range[0] + ro.nfe_range[1]) / 2
    mean_window = np.mean([min(ro.window_size, n - s) for n in range(ro.nfe_range[0], ro.nfe_range[1] + 1)
                           for s in range(ro.window_start_range[0], ro.window_start_range[1] + 1)])
    per_row_fwd = t_fwd / batch  # includes the CFG factor (velocity does 2B rows when w != 0, 1)
    rollout_s = n_cand * mean_nfe * per_row_fwd
    transitions = n_cand * mean_window
    update_s = transitions * (t_fb + (t_fwd if tc.beta > 0 else 0.0)) / batch
    # vocoder + metrics per candidate, measured on crop-length random mels (content does not matter for speed)
    prompts = synthetic_prompts(2, ro.crop_seconds)
    pb = prompts.batch([0, 1], frames, pad_to=frames)
    mel = pb.mel.to(device)
    t0 = time.perf_counter()
    wavs = reward_fn.decode(mel, pb)
    voc_per = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    reward_fn.reward_model.compute(wavs, pb.ref_wav)
    met_per = (time.perf_counter() - t0) / 2
    vocoder_s, reward_s = voc_per * n_cand, met_per * n_cand
    total = rollout_s + update_s + vocoder_s + reward_s
    iters = paper_cfg.train.max_steps / tc.updates_per_iter
    return {
        "model_params": sum(p.numel() for p in model.parameters()), "frames": frames, "measured_batch": batch,
        "cfg_forward_factor": cfg_factor, "forward_s": t_fwd, "forward_backward_s": t_fb,
        "candidates_per_iter": n_cand, "transitions_per_iter": transitions, "mean_nfe": mean_nfe,
        "rollout_s": rollout_s, "update_s": update_s, "vocoder_s": vocoder_s, "reward_s": reward_s,
        "reward_metrics": reward_fn.reward_model.metrics, "iteration_s": total,
        "iterations": iters, "total_hours": total * iters / 3600,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/mini/grpo.yaml")
    p.add_argument("--init_dir", default="exp/pretrain_mini", help="model dir (used when it exists)")
    p.add_argument("--model_config", default="conf/mini/pretrain.yaml", help="network when no init_dir model exists")
    p.add_argument("--data_dir", default=None, help="with --dump_dir: real prompts (train set)")
    p.add_argument("--dump_dir", default=None)
    p.add_argument("--paper_config", default="conf/paper/grpo.yaml")
    p.add_argument("--paper_model_config", default="conf/paper/pretrain.yaml")
    p.add_argument("--paper_batch", type=int, default=2, help="crops per measured paper-size forward/backward")
    p.add_argument("--skip_paper", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--repeats", type=int, default=2)
    args, overrides = p.parse_known_args(argv)
    setup_logging()
    torch.set_num_threads(args.threads or (os.cpu_count() or 1))
    device = torch.device(args.device)
    cfg = load_config(GRPOConfig, args.config, overrides)
    model, vocoder, what = load_or_build(args.init_dir, args.model_config, device)
    if args.data_dir and args.dump_dir:
        from flowse.rl.prompts import PromptSet

        prompts = PromptSet.from_dirs(os.path.join(args.dump_dir, "train"), os.path.join(args.data_dir, "train"), True)
    else:
        prompts = synthetic_prompts(max(8, cfg.rollout.prompts_per_round * cfg.rollout.rounds_per_iter),
                                    cfg.rollout.crop_seconds + 0.5)
    out: dict = {"device": str(device), "threads": torch.get_num_threads(), "model": what, "config": args.config}
    it, task = bench_iteration(cfg, model, vocoder, prompts, device)
    out["mini_iteration"] = it
    print(f"[{args.config}] one GRPO iteration on {device} ({torch.get_num_threads()} threads), model {what}:")
    print(f"  {it['candidates']} candidates, {it['transitions']} transitions, {it['updates']} updates, nfe {it['nfe']}")
    print("  time split: rollout {time_rollout:.2f}s  vocoder {time_vocoder:.2f}s  reward {time_reward:.2f}s  "
          "update {time_update:.2f}s  total {time_total:.2f}s  ({samples_per_s:.2f} candidates/s)".format(**it))
    gb = bench_group_batching(task, args.repeats)
    out["group_batching"] = gb
    print(f"  G = {gb['group_size']} candidates of one prompt, nfe {gb['nfe']}: batched {gb['batched_s']:.3f}s, "
          f"one by one {gb['one_by_one_s']:.3f}s -> batching is {gb['speedup']:.2f}x faster")
    sp = bench_shared_prefix(task, args.repeats)
    out["shared_prefix"] = sp
    print(f"  a round of {sp['candidates']} candidates, nfe {sp['nfe']}, first SDE step {sp['first_sde_step']}: ODE prefix "
          f"per candidate {sp['every_candidate_s']:.3f}s, once per group {sp['shared_prefix_s']:.3f}s -> "
          f"{sp['speedup']:.2f}x")
    if not args.skip_paper:
        pcfg = load_config(GRPOConfig, args.paper_config)
        from flowse.rl.reward import drop_unavailable

        for m, hint in drop_unavailable(pcfg.reward).items():
            print(f"  paper reward: {m} left out of the projection ({hint})")
        pr = bench_paper(pcfg, args.paper_model_config, device, args.paper_batch, args.repeats, vocoder,
                         build_reward(pcfg, vocoder, device))
        out["paper_projection"] = pr
        print(f"[{args.paper_config}] paper-size DiT ({pr['model_params'] / 1e6:.2f}M incl. LoRA) on {device}, "
              f"{pr['frames']} frames x batch {pr['measured_batch']}: forward {pr['forward_s']:.3f}s "
              f"(CFG x{pr['cfg_forward_factor']}), forward+backward {pr['forward_backward_s']:.3f}s")
        print(f"  projected iteration ({pr['candidates_per_iter']} candidates, {pr['transitions_per_iter']:.0f} transitions): "
              f"rollout {pr['rollout_s']:.0f}s  vocoder {pr['vocoder_s']:.0f}s  reward {pr['reward_s']:.0f}s "
              f"({'+'.join(pr['reward_metrics'])})  update {pr['update_s']:.0f}s  total {pr['iteration_s']:.0f}s; "
              f"{pr['iterations']:.0f} iterations = {pr['total_hours']:.1f} h on this device (one rank)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
