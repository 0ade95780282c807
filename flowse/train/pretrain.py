"""Stage 4: flow-matching pretraining of FlowSE on dumped log-mels (paper Sec. 2.1, 3.2).

Reads ``<dump>/train`` and ``<dump>/valid`` (see ``flowse.data.dataset``), trains a
``SupervisedTask`` in the training frame (single process, or DDP under torchrun), and exports the model dir
(``flowse.models.io``) into the exp dir: ``model.pt`` (EMA weights when EMA is on),
``config.yaml`` and ``vocoder_dir``.

Validation reports ``valid_loss`` (the flow-matching loss with fixed noise, t and CFG
drops, so values are comparable across steps) and, when ``valid_sample_utts > 0``, the
log-mel L1 distance to the clean mel of ODE-sampled estimates (``valid_mel_l1``) next to
the same distance for the noisy input (``valid_noisy_mel_l1``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from flowse.data.dataset import BatchLoader, DataConfig, MelPairDataset, collate, read_stats
from flowse.data.batching import make_batches
from flowse.features.mel import read_dump_mel
from flowse.models.dit import DiTConfig, count_parameters
from flowse.models.flowse_model import FlowConfig, FlowSE, FlowSEConfig
from flowse.train.config import TrainConfig
from flowse.train.supervised import SupervisedTask
from flowse.train.trainer import Trainer
from flowse.utils.config import check
from flowse.utils.distributed import DistInfo, barrier, init_distributed
from flowse.utils.log import get_logger

logger = get_logger(__name__)

@dataclass
class PretrainTrainConfig(TrainConfig):
    """The shared training settings with the paper's pretraining defaults (Sec. 3.2: lr 1e-4, 10k warmup,
    linear decay, 100k steps) and an EMA of the weights: ``ema_decay`` 0 disables it; the shadow
    tracks the weights exactly before ``ema_start`` steps. With EMA on, validation and the exported
    model use the EMA weights."""

    warmup_steps: int = 10000
    ema_decay: float = 0.0
    ema_start: int = 0

    def __post_init__(self):
        super().__post_init__()
        check(self.ema_start >= 0, "train.ema_start must be >= 0")
        check(self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0, "train.ema_decay must be 0 (off) or in (0, 1)")


@dataclass
class PretrainConfig:
    """The pretrain yaml: ``model`` (DiT size), ``flow`` (flow matching / CFG), ``data``, ``train``.

    ``threads``: torch intra-op threads per process (0 = all cores).
    ``valid_sample_utts``: valid utterances ODE-sampled at each validation (0 = off),
    with ``flow.nfe`` steps and ``flow.cfg_strength``.
    """

    model: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    threads: int = 0
    valid_sample_utts: int = 0

    def __post_init__(self):
        check(self.threads >= 0, f"threads must be >= 0 (0 = all cores), got {self.threads}")
        check(self.valid_sample_utts >= 0, "valid_sample_utts must be >= 0")


def build_model(cfg: PretrainConfig | FlowSEConfig, stats: dict | None = None) -> FlowSE:
    return FlowSE(cfg.model, cfg.flow, stats)


def flow_loss_fn(module, batch: dict, generator: torch.Generator):
    """Trainer ``loss_fn`` for FlowSE: the module's forward is its loss."""
    return module(batch["clean"], batch["noisy"], batch["mask"], generator)


def make_valid_fn(ds: MelPairDataset, cfg: PretrainConfig, dist: DistInfo):
    """Validation closure: fixed-noise flow loss over the valid set (+ ODE-sampled mel L1)."""
    from flowse.sampling.ode import ode_sample

    bf = cfg.data.valid_batch_frames or cfg.data.batch_frames
    batches = make_batches(ds.lengths, bf, None, shuffle=False)
    mine = list(enumerate(batches))[dist.rank :: dist.world_size]
    sample_ids = list(range(min(cfg.valid_sample_utts, len(ds))))[dist.rank :: dist.world_size]

    def valid_fn(model: FlowSE) -> dict:
        dev = dist.device
        acc = torch.zeros(5, dtype=torch.float64, device=dev)  # loss*frames, frames, l1 sum, noisy l1 sum, l1 count
        for j, ids in mine:
            b = collate([ds[i] for i in ids], None, None)
            g = torch.Generator(device=dev).manual_seed(10_000 + j)
            loss, st = model.loss(b["clean"].to(dev), b["noisy"].to(dev), b["mask"].to(dev), g)
            acc[0] += float(loss) * float(st["frames"])
            acc[1] += float(st["frames"])
        for i in sample_ids:
            cl, nz = ds[i]
            clean = torch.tensor(cl, device=dev)[None]
            noisy = torch.tensor(nz, device=dev)[None]
            g = torch.Generator(device=dev).manual_seed(20_000 + i)
            est = model.denormalize(ode_sample(model, model.normalize(noisy, "noisy"), None, generator=g))
            acc[2] += (est.float() - clean).abs().mean()
            acc[3] += (noisy - clean).abs().mean()
            acc[4] += 1
        if dist.distributed:
            torch.distributed.all_reduce(acc)
        out = {"valid_loss": float(acc[0] / acc[1].clamp(min=1))}
        if acc[4] > 0:
            out["valid_mel_l1"] = float(acc[2] / acc[4])
            out["valid_noisy_mel_l1"] = float(acc[3] / acc[4])
        return out

    return valid_fn


def run_pretrain(cfg: PretrainConfig, dump_dir: str, exp_dir: str, vocoder_dir: str | None, device: str = "auto",
                 resume: bool = True, dist: DistInfo | None = None, stop_at: int | None = None) -> FlowSE | None:
    """Train and export the model dir into ``exp_dir``; returns the exported (inference) model.

    ``stop_at``: stop after that step with a checkpoint and export nothing (returns None).
    """
    from flowse.models.io import save_model_dir

    dist = dist or init_distributed(device)
    train_dir, valid_dir = os.path.join(dump_dir, "train"), os.path.join(dump_dir, "valid")
    stats_path = os.path.join(train_dir, "stats.json")
    if not os.path.exists(stats_path):
        raise FileNotFoundError(f"{stats_path} not found (run stage 2, log-mel dumping)")
    stats = read_stats(stats_path)
    d = cfg.data
    train_ds = MelPairDataset(train_dir, d.min_frames, d.cache, d.check_finite)
    if train_ds.n_mels != cfg.model.n_mels:
        raise ValueError(f"{train_dir}: features have {train_ds.n_mels} mel bins, model.n_mels is {cfg.model.n_mels}")
    valid_ds = None
    if os.path.exists(os.path.join(valid_dir, "feats.scp")):
        valid_ds = MelPairDataset(valid_dir, 1, True, True, d.valid_max_utts)
    else:
        logger.warning("%s not found: training without validation", valid_dir)
    mel = read_dump_mel(dump_dir)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, stats)
    loader = BatchLoader(train_ds, d.batch_frames, d.max_frames, cfg.train.seed, dist.rank, dist.world_size, True,
                         d.num_workers, d.max_batch_size)
    n_batches = len(loader.epoch_batches(0))
    logger.info("model: %s parameters (%.2fM); train: %d utterances (%.2f h, %d skipped), %d batches/epoch/rank, "
                "padding efficiency %.3f; valid: %s utterances", f"{count_parameters(model):,}",
                count_parameters(model) / 1e6, len(train_ds), train_ds.total_seconds(mel.hop_length, mel.sample_rate) / 3600, train_ds.skipped,
                n_batches, loader.efficiency(0), len(valid_ds) if valid_ds else 0)
    valid_fn = make_valid_fn(valid_ds, cfg, dist) if valid_ds is not None else None
    task = SupervisedTask(model, cfg.train, dist, loader, flow_loss_fn, valid_fn,
                          lambda b: float(b["lengths"].sum()) * mel.hop_seconds)
    trainer = Trainer(task, cfg.train, exp_dir, dist)
    trainer.fit(resume=resume, stop_at=stop_at)
    if trainer.step < cfg.train.max_steps:
        return None
    model.load_state_dict(task.inference_state_dict())
    model.eval()
    if dist.is_main:
        save_model_dir(model, cfg, exp_dir, vocoder_dir, step=trainer.step)
    barrier()
    return model
