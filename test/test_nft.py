"""DiffusionNFT on a tiny DiT with the cheap mel-band reward: the loss's limits, learning, DDP equality."""
import os

import numpy as np
import pytest
import torch

from flowse.rl.lora import lora_state_dict, reference_policy
from flowse.rl.nft import NFTConfig, NFTTask, nft_loss, old_decay, optimality
from flowse.train.trainer import Trainer
from flowse.utils.config import load_config
from flowse.utils.distributed import DistInfo
from test_grpo_algorithm import FRAMES, BandReward, _free_port, ode_outputs, prompt_set, tiny_model


def make_cfg(**over) -> NFTConfig:
    base = dict(
        rollout=dict(group_size=4, prompts_per_round=2, rounds_per_iter=2, crop_seconds=FRAMES * 256 / 16000,
                     min_seconds=0.0, nfe=6),
        train=dict(seed=3, max_steps=12, train_batch_size=8, updates_per_iter=1, lr=3e-2, schedule="constant",
                   eval_interval=0, progress=False, timesteps_per_sample=2, kl_weight=0.0),
        lora=dict(r=4, alpha=8), eval=dict(nfe=6),
    )
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return load_config(NFTConfig, None, base)


def nft(cfg: NFTConfig, prompts, dist: DistInfo | None = None, exp_dir: str | None = None) -> Trainer:
    task = NFTTask(tiny_model(dropout=0.0), cfg, BandReward(), prompts, dist)
    return Trainer(task, cfg.train, exp_dir, dist)


def test_optimality_and_decay_values():
    r = optimality(torch.tensor([-7.0, -5.0, -2.5, 0.0, 2.5, 5.0, 9.0]), 5.0)
    assert r.tolist() == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [old_decay(s, 0, 0.001, 0.5) for s in (0, 100, 499, 2000)] == [0.0, 0.1, 0.499, 0.5]
    assert old_decay(74, 75, 0.0075, 0.999) == 0.0 and old_decay(175, 75, 0.0075, 0.999) == pytest.approx(0.75)


def _grad(beta: float, scale_kind: str, weighting: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """d loss / d v_theta at v_theta = v_old (the first update of an iteration) and the beta -> 0 limit."""
    g = torch.Generator().manual_seed(0)
    v_old, v_star = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    r = torch.tensor([0.1, 0.5, 0.9])
    v = v_old.clone().requires_grad_(True)
    scale = 5.0 / beta if scale_kind == "nvlabs" else 1.0
    loss, _ = nft_loss(v, v_old, v_star, torch.full((3,), 0.3), mask, r, beta, weighting, scale)
    loss.sum().backward()
    limit = 2 * 5.0 * (2 * r - 1)[:, None, None] * (v_old - v_star) / 20  # mean over 5 x 4 elements
    return v.grad, limit


def test_update_vanishes_with_beta_unless_scaled_by_one_over_beta():
    # the loss as the method writes it: the gradient is O(beta), so the update vanishes as beta -> 0
    norms = [float(_grad(b, "one")[0].norm()) for b in (1e-1, 1e-2, 1e-3)]
    assert norms[1] / norms[0] == pytest.approx(0.1, rel=1e-4) and norms[2] / norms[1] == pytest.approx(0.1, rel=1e-4)
    # NVlabs' c / beta scaling: 2 c (2r - 1)(v_old - v*) / elements at v_theta = v_old whatever beta, zero for r = 1/2
    for b in (1e-2, 1e-4):
        g, limit = _grad(b, "nvlabs")
        assert torch.allclose(g, limit, atol=1e-6), (b, float((g - limit).abs().max()))
    assert float(_grad(1e-4, "nvlabs")[0][1].abs().max()) < 1e-6
    # the adaptive weighting changes the size, not the sign pattern, of the limit
    g, limit = _grad(1e-4, "nvlabs", "adaptive")
    assert torch.equal(torch.sign(g[[0, 2]]), torch.sign(limit[[0, 2]]))


def test_loss_at_old_policy_is_the_flow_matching_loss():
    g = torch.Generator().manual_seed(1)
    v_old, v_star = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    loss, st = nft_loss(v_old.clone(), v_old, v_star, torch.zeros(2), mask, torch.tensor([0.3, 1.0]), 1.0, "none")
    fm = [float(((v_old[0] - v_star[0]) ** 2).mean()), float(((v_old[1, :4] - v_star[1, :4]) ** 2).mean())]
    assert loss.tolist() == pytest.approx(fm, rel=1e-6)  # v+ = v- = v_old: padded frames left out
    assert st["old_dev"].tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_nft_raises_held_out_reward_of_ode_outputs():
    tr = nft(make_cfg(), prompt_set(16, 0))
    held = prompt_set(8, 1)
    crop = tr.task.collector.crop_frames
    batch = held.batch(range(8), crop, pad_to=crop)
    with reference_policy(tr.task.model):
        x_ref, _ = ode_outputs(tr, held)
    before = BandReward().metrics(x_ref, batch)["band"].mean()
    tr.fit()
    assert tr.step == 12 and tr.task.progress.iteration == 12
    x_new, _ = ode_outputs(tr, held)
    after = BandReward().metrics(x_new, batch)["band"].mean()
    assert after > before + 0.1, (before, after)  # measured +0.93
    assert tr.history[-1]["old_decay"] == pytest.approx(0.012)
    assert 0.0 < tr.history[-1]["r_mean"] < 1.0


def _dist_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tr = nft(make_cfg(train=dict(max_steps=1, updates_per_iter=1)), prompt_set(16, 0),
                 DistInfo(rank, world, rank, torch.device("cpu")))
        tr.run_unit()
        if rank == 0:
            torch.save({"lora": lora_state_dict(tr.task.model), "grads": [p.grad.clone() for p in tr.task.params],
                        "rewards": torch.from_numpy(tr.task.last_collection.rewards), "loss": tr.task.last_loss},
                       os.path.join(out_dir, "dist.pt"))
        dist.barrier()  # no rank tears its gloo connections down while the other still saves (SIGABRT)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_one_process_update(tmp_path):
    import torch.multiprocessing as mp

    one = nft(make_cfg(train=dict(max_steps=1, updates_per_iter=1)), prompt_set(16, 0))
    one.run_unit()
    mp.spawn(_dist_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "dist.pt", weights_only=True)
    np.testing.assert_allclose(two["rewards"].numpy(), one.task.last_collection.rewards, rtol=0, atol=1e-9)
    assert two["loss"] == pytest.approx(one.task.last_loss, rel=1e-5)
    g_max = max(float(p.grad.abs().max()) for p in one.task.params)
    assert g_max > 0
    for g2, p in zip(two["grads"], one.task.params):
        assert float((g2 - p.grad).abs().max()) <= 1e-5 * g_max
    # Adam's first step moves each weight by about lr sign(g): float noise on near-zero gradients shows
    for k, v in lora_state_dict(one.task.model).items():
        assert float((two["lora"][k] - v).abs().max()) < 1e-3 * one.task.cfg.train.lr, k
