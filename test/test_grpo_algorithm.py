"""GRPO on a tiny DiT with a cheap mel-domain reward: on-policy ratio, advantages, learning, KL, DDP."""
import os
import socket

import numpy as np
import pytest
import torch

from flowse.models.dit import DiTConfig
from flowse.models.flowse_model import FlowConfig, FlowSE
from flowse.rl.advantages import group_advantages
from flowse.rl.config import GRPOConfig, LoRAConfig
from flowse.rl.lora import apply_lora, count_lora_parameters, lora_state_dict, merge_lora, reference_policy
from flowse.rl.loss import grpo_loss
from flowse.rl.prompts import PromptSet
from flowse.rl.rollout import transition_log_prob
from flowse.rl.task import GRPOTask
from flowse.sampling.ode import ode_sample
from flowse.utils.config import load_config
from flowse.train.trainer import Trainer
from flowse.utils.distributed import DistInfo

F = 16
FRAMES = 24


def tiny_model(seed: int = 0, dropout: float = 0.1) -> FlowSE:
    """A tiny DiT with random (not adaLN-zero) modulations, so LoRA on attention has an effect at once."""
    torch.manual_seed(seed)
    m = FlowSE(DiTConfig(n_mels=F, hidden=32, depth=2, heads=2, head_dim=16, ffn=64, conv_kernel=5, conv_groups=4,
                         time_freq_dim=16, dropout=dropout), FlowConfig(normalize=False, cfg_strength=1.0))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1 and torch.all(p == 0):
                p.normal_(0, 0.3)
    return m


class BandReward:
    """Mean log-mel value in bins 4..7 of the generated mel (no vocoder); ``other`` is only logged."""

    last_times: dict = {}

    def metrics(self, mel, prompts, judge=False):
        m = prompts.mask.to(mel.device)[..., None].float()
        band = (mel[..., 4:8] * m).sum((1, 2)) / (m.sum((1, 2)) * 4)
        return {"band": band.double().cpu().numpy(), "other": (mel * m).sum((1, 2)).double().cpu().numpy()}

    def rewarded_values(self, metrics):
        return {"band": metrics["band"]}

    def reward(self, metrics, stds=None):
        return metrics["band"]


def prompt_set(n: int, seed: int) -> PromptSet:
    rng = np.random.default_rng(seed)
    mels = {f"u{i:03d}": rng.standard_normal((FRAMES + int(rng.integers(-4, 8)), F)).astype(np.float32) for i in range(n)}
    return PromptSet(mels, hop=256)


def make_cfg(**over) -> GRPOConfig:
    base = dict(
        rollout=dict(group_size=4, prompts_per_round=2, rounds_per_iter=2, crop_seconds=FRAMES * 256 / 16000,
                     min_seconds=0.0, noise_level=0.7),
        train=dict(seed=3, max_steps=16, train_batch_size=3, updates_per_iter=2, lr=1e-2, clip_range=0.2, beta=0.0,
                   schedule="constant", eval_interval=0, progress=False),
        lora=dict(r=4, alpha=8), eval=dict(nfe=10),
    )
    for k, v in over.items():
        if isinstance(v, dict):
            base.setdefault(k, {}).update(v)
        else:
            base[k] = v
    return load_config(GRPOConfig, None, base)


def grpo(cfg: GRPOConfig, prompts: PromptSet, model: FlowSE | None = None, exp_dir: str | None = None,
         dist: DistInfo | None = None, eval_prompts: PromptSet | None = None) -> Trainer:
    """The training frame around a ``GRPOTask`` with the ``BandReward``."""
    task = GRPOTask(model if model is not None else tiny_model(), cfg, BandReward(), prompts, dist, eval_prompts)
    return Trainer(task, cfg.train, exp_dir, dist)


def ode_outputs(trainer: Trainer, prompts: PromptSet) -> torch.Tensor:
    col = trainer.task.collector
    b = prompts.batch(range(len(prompts)), col.crop_frames, pad_to=col.crop_frames)
    cond = col.model.normalize(b.mel, "noisy") * b.mask[..., None]
    x0 = torch.randn(cond.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return ode_sample(col.model, cond, b.mask, 10, None, x0=x0), b.mask


def test_lora_param_count_paper_and_reference_policy():
    model = FlowSE(DiTConfig(), FlowConfig())
    apply_lora(model, LoRAConfig(r=32, alpha=64))
    assert count_lora_parameters(model) == 1_572_864
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1_572_864
    tiny = tiny_model(dropout=0.0)
    ref = {k: v.clone() for k, v in tiny.state_dict().items()}
    apply_lora(tiny, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        for n, p in tiny.dit.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x, c = torch.randn(2, 10, F), torch.randn(2, 10, F)
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        v_lora = tiny.velocity(x, c, t)
        with reference_policy(tiny):
            v_ref = tiny.velocity(x, c, t)
    base = tiny_model(dropout=0.0)
    base.load_state_dict(ref)
    with torch.no_grad():
        torch.testing.assert_close(v_ref, base.velocity(x, c, t))
    assert (v_lora - v_ref).abs().max() > 1e-3
    merge_lora(tiny)
    assert set(tiny.state_dict()) == set(ref)  # plain DiT names again: loads as a pretrained model
    with torch.no_grad():
        torch.testing.assert_close(tiny.velocity(x, c, t), v_lora, rtol=1e-4, atol=1e-5)


def test_advantages_hand_made_groups():
    r = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.0, 0.0, 1.0])
    a = group_advantages(r, np.repeat([0, 1, 2], 3), clip=5.0, eps=0.0)
    s = np.sqrt(2 / 3)
    np.testing.assert_allclose(a.values[:3], [-1 / s, 0, 1 / s])
    np.testing.assert_allclose(a.values[3:6], 0)  # zero-std group: dropped
    np.testing.assert_allclose(a.values[6:], np.array([-1, -1, 2]) / np.sqrt(2))
    assert a.keep.tolist() == [True] * 3 + [False] * 3 + [True] * 3
    assert (a.num_groups, a.num_zero_std) == (3, 1) and a.zero_std_fraction == pytest.approx(1 / 3)
    big = group_advantages(np.array([0.0] * 99 + [1.0]), np.zeros(100, int), clip=5.0, eps=0.0)
    assert big.values.max() == 5.0  # (1 - 0.01) / 0.0995 = 9.95 clamped
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages(np.array([1.0, np.nan]), np.array([0, 0]))


def test_ppo_clip_loss_values():
    lp_old = torch.zeros(4)
    lp_new = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.5]))
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0])
    t = grpo_loss(lp_new, lp_old, adv, clip_range=0.2, kl=torch.tensor([0.0, 0.0, 0.0, 2.0]), beta=0.5)
    # max(-A r, -A clip(r)): [-1, -1.2 (clipped), -0.5 (unclipped is larger), 1.5] + 0.5 * kl
    torch.testing.assert_close(t.policy, torch.tensor([-1.0, -1.2, -0.5, 1.5]))
    torch.testing.assert_close(t.loss.detach(), torch.tensor([-1.0, -1.2, -0.5, 2.5]))
    assert t.clipped.tolist() == [False, True, True, True]


def test_recomputed_log_probs_equal_rollout_ones():
    """Before any update the ratio is 1 (eval mode: dropout off; other batch composition)."""
    tr = grpo(make_cfg(rollout=dict(window_start_range=[1, 1], window_size=3)), prompt_set(8, 0),
              tiny_model(dropout=0.1))
    rd, _, _ = tr.task.collector.rollout_round(0, 0)
    assert torch.isfinite(rd.tr.log_prob).all() and len(rd.tr) == 3 * 8
    perm = torch.randperm(len(rd.tr), generator=torch.Generator().manual_seed(0))
    n_cand = rd.cond.shape[0]
    for chunk in perm.split(5):
        sub = rd.tr.index(chunk)
        with torch.no_grad():
            lp, _, _ = transition_log_prob(tr.task.collector.velocity, sub, rd.cond[sub.sample], rd.mask[sub.sample], 0.7)
        assert (sub.sample == chunk % n_cand).all()
        assert float((lp - sub.log_prob).abs().max()) < 1e-5
        assert float((torch.exp(lp - sub.log_prob) - 1).abs().max()) < 1e-5
    rec = tr.run_unit().stats
    assert rec["onpolicy_ratio_dev"] < 1e-5 and rec["updates"] == 2


def test_candidates_of_a_prompt_differ_and_rounds_follow_schedule():
    col = grpo(make_cfg(), prompt_set(8, 0)).task.collector
    rd, rep, _ = col.rollout_round(0, 1)
    nfe, window = col.round_schedule(0, 1)
    assert 7 <= nfe <= 10 and window[0] in (0, 1, 2) and len(window) == 2
    assert rep.keys[0] == rep.keys[3] and rep.keys[3] != rep.keys[4]  # prompt-major groups of G = 4
    x1 = rd.x1
    assert (x1[0] - x1[1]).abs().mean() > 1e-2  # SDE noise makes the candidates differ
    # the same round again gives the same samples (per-prompt seeds)
    rd2, _, _ = col.rollout_round(0, 1)
    torch.testing.assert_close(rd2.x1, x1)


def _train(beta: float, steps: int = 16):
    tr = grpo(make_cfg(train=dict(max_steps=steps, beta=beta, lr=3e-2)), prompt_set(16, 0))
    held = prompt_set(8, 1)
    crop = tr.task.collector.crop_frames
    with reference_policy(tr.task.model):
        x_ref, mask = ode_outputs(tr, held)
    before = BandReward().metrics(x_ref, held.batch(range(8), crop, pad_to=crop))["band"].mean()
    tr.fit()
    assert tr.step == steps
    x_new, _ = ode_outputs(tr, held)
    after = BandReward().metrics(x_new, held.batch(range(8), crop, pad_to=crop))["band"].mean()
    dist_ref = float(((x_new - x_ref).abs() * mask[..., None]).sum() / (mask.sum() * F))
    return before, after, dist_ref, tr


@pytest.mark.slow
def test_grpo_raises_held_out_reward_and_kl_keeps_close():
    before, after0, d0, tr0 = _train(beta=0.0)
    assert after0 > before + 0.1, (before, after0)  # measured +0.185
    assert tr0.history[-1]["train/other"] == tr0.history[-1]["train/other"]  # unrewarded metrics are logged too
    _, after_kl, d_kl, tr_kl = _train(beta=1.0)
    assert d_kl < 0.3 * d0, (d_kl, d0)  # measured 0.045 vs 0.45
    assert tr_kl.history[-1]["kl"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_cfg() -> GRPOConfig:
    return make_cfg(train=dict(max_steps=1, updates_per_iter=1))


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tr = grpo(_dist_cfg(), prompt_set(16, 0), dist=DistInfo(rank, world, rank, torch.device("cpu")))
        tr.run_unit()
        task = tr.task
        if rank == 0:
            torch.save({"lora": lora_state_dict(task.model), "adv": torch.from_numpy(task.last_collection.adv.values),
                        "grads": [p.grad.clone() for p in task.params],
                        "rewards": torch.from_numpy(task.last_collection.rewards), "step": tr.step},
                       os.path.join(out_dir, "dist.pt"))
        dist.barrier()  # no rank tears its gloo connections down while the other still saves (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    one = grpo(_dist_cfg(), prompt_set(16, 0))
    one.run_unit()
    col = one.task.last_collection
    mp.spawn(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "dist.pt", weights_only=True)
    assert two["step"] == one.step == 1
    np.testing.assert_allclose(two["rewards"].numpy(), col.rewards, rtol=0, atol=1e-9)
    np.testing.assert_allclose(two["adv"].numpy(), col.adv.values, rtol=0, atol=1e-9)
    ref = lora_state_dict(one.task.model)
    moved = 0.0
    for k, v in ref.items():
        assert float((two["lora"][k] - v).abs().max()) < 1e-6, k
        moved = max(moved, float(v.abs().max()))
    assert moved > 1e-3  # the update did change the adapter
    g_max = max(float(p.grad.abs().max()) for p in one.task.params)
    for g2, p in zip(two["grads"], one.task.params):
        assert float((g2 - p.grad).abs().max()) <= 1e-6 * g_max  # the all-reduced gradient is the 1-process one


def test_resume_continues_exactly(tmp_path):
    """The frame stops after iteration 0 (stop_at) and a new process-like trainer resumes from the checkpoint:
    the same adapter, LR and logs as one uninterrupted run."""
    cfg = make_cfg(train=dict(max_steps=4, schedule="linear"))
    straight = grpo(cfg, prompt_set(16, 0))
    straight.fit()
    first = grpo(cfg, prompt_set(16, 0), exp_dir=str(tmp_path))
    first.fit(stop_at=2)
    assert first.step == 2 and os.path.exists(tmp_path / "checkpoint_2.pt")
    again = grpo(cfg, prompt_set(16, 0), exp_dir=str(tmp_path))
    again.fit()
    assert (again.step, again.task.progress.iteration) == (4, 2)
    for k, v in lora_state_dict(straight.task.model).items():
        assert torch.equal(lora_state_dict(again.task.model)[k], v), k
    assert again.task.scheduler.get_last_lr() == straight.task.scheduler.get_last_lr()
    assert [r["iteration"] for r in again.history] == [0, 1]
    assert [r["reward_mean"] for r in again.history] == [r["reward_mean"] for r in straight.history]


def test_prompt_crop_keeps_wav_and_mel_aligned():
    hop = 4
    n = 50
    mels = {"a": np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, 1), "b": np.zeros((5, 3), np.float32)}
    wavs = {"a": np.arange(n * hop, dtype=np.float32) / hop, "b": np.ones(5 * hop, np.float32)}
    ps = PromptSet(mels, wavs, wavs, hop=hop)
    rng = np.random.default_rng(0)
    for _ in range(5):
        key, mel, wav, ref = ps.get(0, crop_frames=8, rng=rng)
        f0 = int(mel[0, 0])
        assert mel[:, 0].tolist() == list(range(f0, f0 + 8))
        np.testing.assert_array_equal(np.floor(wav), np.repeat(np.arange(f0, f0 + 8), hop))  # sample s of frame s // hop
    b = ps.batch([0, 1], crop_frames=8, rngs=[rng, rng], pad_to=8)
    assert b.mel.shape == (2, 8, 3) and b.mask.sum(1).tolist() == [8, 5]
    assert [len(w) for w in b.noisy_wav] == [8 * hop, 5 * hop]
    assert b.noisy_tensor(hop).shape == (2, 8 * hop)
    g = b.repeat(3)
    assert g.keys == ["a"] * 3 + ["b"] * 3 and g.mask.shape == (6, 8)


def test_same_init_noise_shares_x0_within_groups():
    cfg = make_cfg(rollout=dict(window_start_range=[1, 1], same_init_noise=True))
    rd, _, _ = grpo(cfg, prompt_set(8, 0)).task.collector.rollout_round(0, 0)
    first = rd.tr.index(torch.nonzero(rd.tr.step == 0).flatten())  # x_t of step 0 is x0 (masked)
    g = cfg.rollout.group_size
    torch.testing.assert_close(first.x_t[:g], first.x_t[:1].expand(g, -1, -1))
    assert (first.x_t[0] - first.x_t[g]).abs().max() > 0.1  # another prompt, another x0
    assert (rd.x1[0] - rd.x1[1]).abs().mean() > 1e-2  # the SDE noise still makes candidates differ


def test_bad_prompts_are_skipped_with_a_warning(caplog):
    good = prompt_set(8, 0)
    mels = dict(good.mels)
    mels["u003"] = mels["u003"].copy()
    mels["u003"][2, 1] = np.nan
    bad = PromptSet(mels, hop=256)
    held = dict(prompt_set(3, 1).mels)
    held["u001"] = np.full((10, F), np.inf, np.float32)
    tr = grpo(make_cfg(rollout=dict(prompts_per_round=4)), bad, eval_prompts=PromptSet(held, hop=256))
    rec = tr.run_unit().stats
    ev = tr.evaluate()
    assert np.isfinite(rec["reward_mean"]) and rec["updates"] == 2
    assert "u003" in caplog.text and "skipping prompt" in caplog.text
    assert ev["utts"] == 2 and "u001" in caplog.text


def test_nonfast_window_leaves_the_last_step_and_eq9_weighs_candidates_equally():
    from flowse.rl.rollout import window_steps

    assert window_steps(7, 1, 10) == [0, 1, 2, 3, 4, 5] and window_steps(10, 1, 10) == list(range(9))
    assert window_steps(4, 3, 2) == [2]
    with pytest.raises(ValueError, match="ODE step"):
        window_steps(4, 4, 2)
    cfg = make_cfg(rollout=dict(nfe_range=[3, 6], window_start_range=[1, 1], window_size=10), train=dict(beta=0.0))
    task = GRPOTask(tiny_model(dropout=0.0), cfg, BandReward(), prompt_set(16, 0))
    col_ = task.collector
    it = next(i for i in range(50) if col_.round_schedule(i, 0)[0] != col_.round_schedule(i, 1)[0])
    col = col_.collect(it)
    sizes = {rd.index: len(rd.window) for rd in col.rounds}
    assert all(len(rd.window) == rd.nfe - 1 for rd in col.rounds) and len(set(sizes.values())) == 2
    grad = task.update.policy_gradient(col)
    # Eq. 9 by hand: a candidate's loss is the mean over its own window steps, then the mean over candidates
    per_candidate, per_transition = [], []
    for rd in col.rounds:
        n_cand = rd.cond.shape[0]
        for c in range(n_cand):
            if not col.adv.keep[rd.index * n_cand + c]:
                continue
            sub = rd.tr.index(torch.nonzero(rd.tr.sample == c).flatten())
            logp, _, _ = transition_log_prob(col_.velocity, sub, rd.cond[sub.sample], rd.mask[sub.sample],
                                             cfg.rollout.noise_level)
            adv = torch.full((len(sub),), float(col.adv.values[rd.index * n_cand + c]))
            loss = grpo_loss(logp, sub.log_prob, adv, cfg.train.clip_range).loss
            per_candidate.append(loss.mean())
            per_transition.append(loss)
    want = torch.autograd.grad(torch.stack(per_candidate).mean(), task.params, retain_graph=True)
    want = torch.cat([g.flatten() for g in want])
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))
    flat = torch.autograd.grad(torch.cat(per_transition).mean(), task.params)
    flat = torch.cat([g.flatten() for g in flat])
    assert float((flat - want).norm()) > 1e-3 * float(want.norm())  # the per-transition mean is another estimate


def test_shared_ode_prefix_runs_once_per_group_with_the_same_samples():
    """With x0 shared per group the ODE steps before the window run on one row per group; the
    rollout (transitions, log-probs, final samples) equals the one computed on every row."""
    from flowse.rl.rollout import mixed_rollout

    model = tiny_model().eval()
    g, p, nfe, window = 3, 2, 8, [3, 4]
    rng = torch.Generator().manual_seed(0)
    cond = torch.randn(p, FRAMES, F, generator=rng).repeat_interleave(g, 0)
    mask = torch.ones(p * g, FRAMES, dtype=torch.bool)
    mask[g:, FRAMES - 5:] = False
    x0 = torch.randn(p, FRAMES, F, generator=rng).repeat_interleave(g, 0)
    eps = torch.randn(len(window), p * g, FRAMES, F, generator=rng)
    calls = []

    def velocity(x, c, t, m):
        calls.append(x.shape[0])
        return model.velocity(x, c, t, m, 1.0)

    full = mixed_rollout(velocity, cond, mask, nfe, window, 0.7, x0, eps)
    n_full = sum(calls)
    calls.clear()
    shared = mixed_rollout(velocity, cond, mask, nfe, window, 0.7, x0, eps, group_size=g)
    assert n_full == nfe * p * g and sum(calls) == window[0] * p + (nfe - window[0]) * p * g
    torch.testing.assert_close(shared.x1, full.x1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.transitions.log_prob, full.transitions.log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.transitions.x_next, full.transitions.x_next, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="groups of 4"):
        mixed_rollout(velocity, cond, mask, nfe, window, 0.7, x0, eps, group_size=4)
