"""GRPO held-out evaluation: the inference sampler (ODE, ``eval.nfe`` steps, fixed initial noise per
utterance) on the held-out prompts, every metric of the reward function plus its judge metrics
(``eval.metrics``, e.g. DMOS), means over utterances and the per-utterance values (``utt_keys``,
``utt_values``: the guarded export, ``flowse.rl.export``, pairs them with the base model's).

Utterances are split round-robin over ranks and gathered; batches are length-sorted (less
padding), and the result per utterance does not depend on batching. A bad held-out utterance
is logged once and left out of every evaluation.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from flowse.rl.collect import stream_seed
from flowse.rl.config import GRPOConfig
from flowse.rl.prompts import PromptSet
from flowse.rl.reward_fn import RewardFn
from flowse.sampling.ode import ode_sample
from flowse.utils.distributed import DistInfo, all_gather_object
from flowse.utils.log import get_logger

logger = get_logger(__name__)


class HeldOutEval:
    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, reward_fn: RewardFn, prompts: PromptSet,
                 dist: DistInfo, hop: int = 256, sample_rate: int = 16000):
        self.model, self.cfg, self.reward_fn, self.prompts, self.dist = model, cfg, reward_fn, prompts, dist
        self.device = dist.device
        self.crop = int(round(cfg.eval.max_seconds * sample_rate / hop)) if cfg.eval.max_seconds else 0
        self._bad: set[int] = set()

    def _len(self, i: int) -> int:
        n = int(np.asarray(self.prompts.mels[self.prompts.keys[i]]).shape[0])
        return min(n, self.crop) if self.crop else n

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        """``{"utts", "eval/<metric>": mean, "time_eval", "utt_keys": [key], "utt_values": {metric: [value]}}``
        of the model as it is at ``step`` (utterances in held-out set order)."""
        ec = self.cfg.eval
        n = len(self.prompts) if not ec.max_utts else min(ec.max_utts, len(self.prompts))
        mine = [i for i in range(n) if i % self.dist.world_size == self.dist.rank]
        lengths = {i: self._len(i) for i in mine}
        mine.sort(key=lambda i: lengths[i])
        per_utt: dict[int, dict[str, float]] = {}
        t0 = time.perf_counter()
        for s in range(0, len(mine), ec.batch_size):
            idx = [i for i in mine[s : s + ec.batch_size] if i not in self._bad]
            try:
                batch = self.prompts.batch(idx, self.crop)
            except ValueError:
                for i in idx:
                    try:
                        self.prompts.get(i, self.crop)
                    except ValueError as e:
                        logger.warning("evaluation: skipping %s: %s", self.prompts.keys[i], e)
                        self._bad.add(i)
                idx = [i for i in idx if i not in self._bad]
                if not idx:
                    continue
                batch = self.prompts.batch(idx, self.crop)
            mask = batch.mask.to(self.device)
            cond = self.model.normalize(batch.mel.to(self.device), "noisy") * mask[..., None]
            x0 = torch.stack([torch.randn(cond.shape[1:], generator=torch.Generator().manual_seed(stream_seed(ec.seed, i)))
                              for i in idx]).to(self.device)
            x1 = ode_sample(self.model, cond, mask, ec.nfe, self.cfg.rollout.cfg_strength, x0=x0)
            mel = self.model.denormalize(x1) * mask[..., None]
            m = self.reward_fn.metrics(mel, batch, judge=True)
            for j, i in enumerate(idx):
                per_utt[i] = {k: float(v[j]) for k, v in m.items()}
        allm: dict[int, dict[str, float]] = {}
        for part in all_gather_object(per_utt):
            allm.update(part)
        order = sorted(allm)
        names = list(allm[order[0]].keys()) if order else []
        metrics = {k: np.array([allm[i][k] for i in order]) for k in names}
        rec = {"utts": len(order), **{f"eval/{k}": float(np.nanmean(v)) for k, v in metrics.items()}}
        rec["time_eval"] = time.perf_counter() - t0
        rec["utt_keys"] = [self.prompts.keys[i] for i in order]
        rec["utt_values"] = {k: v.tolist() for k, v in metrics.items()}
        logger.info("eval at step %d (%d utts, ODE %d steps): %s", step, rec["utts"], ec.nfe,
                    " ".join(f"{k[5:]}={v:.4f}" for k, v in rec.items() if k.startswith("eval/")))
        return rec
