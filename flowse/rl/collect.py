"""GRPO collection (paper Sec. 2.2-3.2): prompt schedule -> rollouts -> rewards -> advantages.

One iteration collects ``rounds_per_iter x prompts_per_round`` training utterances, drawn
from a per-epoch permutation of the prompt set (seeded: the same on every rank), each
randomly cropped to ``crop_seconds`` and padded to it. Per round one batched call of the
mixed ODE-SDE sampler runs all its prompts' G candidates (prompt-major order), with nfe and
window start drawn per round; the initial and SDE noise of a prompt's candidates come from a
per-prompt seed ``(seed, iteration, global prompt index)``. Every candidate's metrics come
from the reward function (vocoder + metric models); the rewards from the metrics of all
candidates (gathered across ranks); advantages per prompt (Eq. 8), zero-std groups dropped.
With ``reward.std_normalize: frozen`` the stds of the rewarded metrics are those of the first
collection (``frozen_stds``, measured before the first update; the task stores and restores
them); every collection reports each rewarded metric's std and within-group share of variance.

Distributed (torchrun): rounds are assigned to ranks round-robin (round r -> rank r mod
world), so a prompt's G candidates and their advantage live on one rank and are the same
whatever the number of ranks. The network runs in eval mode (dropout off) with the
rollout CFG weight, in rollouts and training log-probs alike (``velocity``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from flowse.rl.advantages import Advantages, group_advantages, within_group_share
from flowse.rl.config import GRPOConfig
from flowse.rl.prompts import PromptBatch, PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.rl.rollout import Transitions, mixed_rollout, window_steps
from flowse.sampling.ode import time_grid
from flowse.sampling.sde import ode_step
from flowse.utils.distributed import DistInfo, all_gather_object
from flowse.utils.log import get_logger

logger = get_logger(__name__)

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from integers (independent streams per (seed, iteration, item))."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class Round:
    """One rollout round held by this rank."""

    index: int
    nfe: int
    window: list[int]
    cond: torch.Tensor  # [N, T, F] normalised noisy mel per candidate
    mask: torch.Tensor  # [N, T]
    tr: Transitions | None  # the SDE transitions (GRPO); None for ODE collections
    metrics: dict[str, np.ndarray]
    x1: torch.Tensor  # [N, T, F] normalised final estimates
    keys: list[str]  # [N] the candidates' prompt utterances


@dataclass
class Collection:
    """An iteration's collection: this rank's rounds, every candidate's metrics / rewards / advantages
    (all ranks, round-major), and this rank's rollout / vocoder / reward / score / exchange seconds."""

    iteration: int
    rounds: list[Round]
    metrics: dict[str, np.ndarray]
    rewards: np.ndarray
    adv: Advantages
    times: dict[str, float]
    spread: dict[str, tuple[float, float]]  # rewarded metric -> (std of s_i m_i, within-group share of variance)


class Collector:
    """Rollouts of a ``FlowSE``-like model (``velocity``, ``normalize``, ``denormalize``) on ``prompts``,
    scored by ``reward_fn`` (``flowse.rl.reward_fn.RewardFn``)."""

    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo, hop: int = 256, sample_rate: int = 16000):
        self.model, self.cfg, self.reward_fn, self.prompts, self.dist = model, cfg, reward_fn, prompts, dist
        self.device = dist.device
        self.seed = cfg.train.seed
        self.crop_frames = max(1, int(round(cfg.rollout.crop_seconds * sample_rate / hop)))
        self._bad_prompts: set[int] = set()
        self._good_prompts: set[int] = set()
        self.frozen_stds: dict[str, float] | None = None

    def velocity(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The policy's guided velocity (same CFG form in rollouts and training), fp32 out."""
        dtype = _DTYPES[self.cfg.rollout.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.model.velocity(x, cond, t, mask, self.cfg.rollout.cfg_strength).float()

    # ------------------------------------------------------------------ schedule
    @property
    def prompts_per_iter(self) -> int:
        return self.cfg.rollout.rounds_per_iter * self.cfg.rollout.prompts_per_round

    def prompt_indices(self, iteration: int) -> list[int]:
        """Global prompt indices of an iteration: consecutive slices of seeded per-epoch permutations."""
        n = len(self.prompts)
        start = iteration * self.prompts_per_iter
        out: list[int] = []
        pos = start
        while len(out) < self.prompts_per_iter:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng(stream_seed(self.seed, 1, epoch)).permutation(n)
            take = perm[off : off + self.prompts_per_iter - len(out)]
            out += take.tolist()
            pos += len(take)
        return out

    def round_schedule(self, iteration: int, r: int) -> tuple[int, list[int]]:
        """(nfe, 0-based window steps) of round ``r``: nfe and S_min drawn uniformly (inclusive ranges)."""
        ro = self.cfg.rollout
        rng = np.random.default_rng(stream_seed(self.seed, 2, iteration, r))
        nfe = int(rng.integers(ro.nfe_range[0], ro.nfe_range[1] + 1))
        start = int(rng.integers(ro.window_start_range[0], min(ro.window_start_range[1], nfe - 1) + 1))
        return nfe, window_steps(nfe, start, ro.window_size)

    def my_rounds(self) -> list[int]:
        return [r for r in range(self.cfg.rollout.rounds_per_iter) if r % self.dist.world_size == self.dist.rank]

    # ------------------------------------------------------------------ rollouts
    def _load_prompts(self, iteration: int, gidx: list[int]) -> PromptBatch:
        """The prompts of global indices ``gidx``; a bad utterance is logged and replaced by the next good one."""
        all_idx = self.prompt_indices(iteration)
        indices = [all_idx[g] for g in gidx]
        rngs = [np.random.default_rng(stream_seed(self.seed, 3, iteration, g)) for g in gidx]
        for j, i in enumerate(indices):
            for _ in range(len(self.prompts)):
                if i in self._good_prompts:
                    break
                if i not in self._bad_prompts:
                    try:
                        self.prompts.get(i, 0)
                        self._good_prompts.add(i)
                        break
                    except ValueError as e:
                        logger.warning("skipping prompt %s: %s", self.prompts.keys[i], e)
                        self._bad_prompts.add(i)
                i = (i + 1) % len(self.prompts)
            else:
                raise RuntimeError(f"{self.prompts.name}: no usable prompt")
            indices[j] = i
        return self.prompts.batch(indices, self.crop_frames, rngs, pad_to=self.crop_frames)

    @torch.no_grad()
    def rollout_round(self, iteration: int, r: int) -> tuple[Round, PromptBatch, dict[str, float]]:
        ro = self.cfg.rollout
        p, g = ro.prompts_per_round, ro.group_size
        gidx = list(range(r * p, (r + 1) * p))
        nfe, window = self.round_schedule(iteration, r)
        batch = self._load_prompts(iteration, gidx)
        t0 = time.perf_counter()
        mask = batch.mask.to(self.device)
        cond = self.model.normalize(batch.mel.to(self.device), "noisy") * mask[..., None]
        _, t, f = cond.shape
        x0, eps = [], []
        for gi in gidx:
            gen = torch.Generator().manual_seed(stream_seed(self.seed, 4, iteration, gi))
            x0.append(torch.randn(1, t, f, generator=gen).expand(g, t, f) if ro.same_init_noise
                      else torch.randn(g, t, f, generator=gen))
            eps.append(torch.randn(len(window), g, t, f, generator=gen))
        x0 = torch.cat(x0).to(self.device)
        eps = torch.cat(eps, dim=1).to(self.device)
        cond_g = cond.repeat_interleave(g, 0)
        mask_g = mask.repeat_interleave(g, 0)
        x1, transitions = self.sample(cond_g, mask_g, nfe, window, x0, eps)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        rep = batch.repeat(g)
        mel = self.model.denormalize(x1) * mask_g[..., None]
        metrics = self.reward_fn.metrics(mel, rep)
        t2 = time.perf_counter()
        times = {"rollout": t1 - t0, "score": t2 - t1, **getattr(self.reward_fn, "last_times", {})}
        return Round(r, nfe, window, cond_g, mask_g, transitions, metrics, x1, rep.keys), rep, times

    def sample(self, cond: torch.Tensor, mask: torch.Tensor, nfe: int, window: list[int], x0: torch.Tensor,
               eps: torch.Tensor) -> tuple[torch.Tensor, Transitions | None]:
        """The candidates of a round: GRPO's mixed ODE-SDE rollout, ``(x1 [N, T, F], its SDE transitions)``."""
        ro = self.cfg.rollout
        out = mixed_rollout(self.velocity, cond, mask, nfe, window, ro.noise_level, x0, eps,
                            group_size=ro.group_size if ro.same_init_noise else 1)
        return out.x1, out.transitions

    def collect(self, iteration: int) -> Collection:
        """Rollouts + metrics of this rank's rounds, rewards and advantages over all ranks' candidates."""
        ro = self.cfg.rollout
        rounds: list[Round] = []
        times = {"rollout": 0.0, "vocoder": 0.0, "reward": 0.0, "score": 0.0}
        for r in self.my_rounds():
            rd, _, tm = self.rollout_round(iteration, r)
            rounds.append(rd)
            for k, v in tm.items():
                times[k] = times.get(k, 0.0) + v
        t0 = time.perf_counter()
        gathered = {}
        for part in all_gather_object([(rd.index, rd.metrics) for rd in rounds]):
            gathered.update(dict(part))
        names = list(gathered[0].keys())
        metrics = {k: np.concatenate([gathered[r][k] for r in range(ro.rounds_per_iter)]) for k in names}
        groups = np.repeat(np.arange(ro.rounds_per_iter * ro.prompts_per_round), ro.group_size)
        tc = self.cfg.train  # a method without advantages (DPO's pairs) logs them with GRPO's settings
        adv_clip, adv_eps, adv_std = (getattr(tc, k, d) for k, d in (("adv_clip", 5.0), ("adv_eps", 1e-4),
                                                                        ("adv_std", "group")))
        values = self.reward_fn.rewarded_values(metrics)
        spread = {m: (float(np.std(v)), within_group_share(v, groups)) for m, v in values.items()}
        stds = None
        if self.cfg.reward.std_normalize == "frozen":
            if self.frozen_stds is None:
                self.frozen_stds = {m: sd for m, (sd, _) in spread.items()}
                logger.info("frozen reward stds (iteration %d): %s", iteration,
                            " ".join(f"{m}={sd:.6g}" for m, sd in self.frozen_stds.items()))
            if set(self.frozen_stds) != set(values):
                raise RuntimeError(f"the frozen reward stds are of {sorted(self.frozen_stds)}, the rewarded "
                                   f"metrics are {sorted(values)}")
            stds = self.frozen_stds
        rewards = self.reward_fn.reward(metrics, stds)
        adv = group_advantages(rewards, groups, adv_clip, adv_eps, std=adv_std)
        times["exchange"] = time.perf_counter() - t0
        return Collection(iteration, rounds, metrics, rewards, adv, times, spread)


class ODECollector(Collector):
    """Collections of plain ODE samples (``rollout.nfe`` Euler steps, no SDE window, no transitions): the
    sampling of DiffusionNFT and of DPO's pair generation. Everything else (prompt schedule, per-prompt
    noise, rewards, advantages, sharding) is ``Collector``'s."""

    def round_schedule(self, iteration: int, r: int) -> tuple[int, list[int]]:
        return self.cfg.rollout.nfe, []

    def sample(self, cond, mask, nfe, window, x0, eps):
        grid = time_grid(nfe, cond.device)
        m = mask[..., None].to(torch.float32)
        x = x0.to(cond.device, torch.float32) * m
        for k in range(nfe):
            n = x.shape[0]
            u = self.velocity(x, cond, grid[k].expand(n), mask)
            x = ode_step(x, u, (grid[k + 1] - grid[k]).expand(n)) * m
        return x, None
