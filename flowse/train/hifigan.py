"""HiFi-GAN training on clean speech (stage 3) as a task of the training frame, following
jik876/hifi-gan's train.py, and the stage-3 yaml schema (``VocoderStageConfig``).

Per step: discriminator update (MPD + MSD, LSGAN), then generator update with
adversarial + feature-matching (``lambda_fm`` x jik876's ``feature_loss``) + mel L1
(``lambda_mel``, 45 in the paper). AdamW (0.8, 0.99), exponential LR decay (``schedule:
exponential``). Data: random ``segment_size`` crops of ``spk1`` waveforms with the matching
frames of the dumped clean log-mel (full-utterance features, so crops see the true context);
the loss mel is recomputed from both waveforms with the same ``LogMel``. Each epoch's crops
are seeded by ``(seed, epoch, rank)``, so a resumed run replays its epoch up to the checkpoint
and continues exactly. DDP under torchrun: each rank reads its own shard (DistributedSampler).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from flowse.features.audio import validate
from flowse.data.kaldi import ScpReader
from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders.config import HiFiGANConfig, VocoderConfig
from flowse.models.vocoders.hifigan import (
    Generator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_loss,
    generator_loss,
)
from flowse.train.config import TrainConfig
from flowse.train.schedule import make_optimizer, make_scheduler
from flowse.train.task import StepOutput, TrainTask
from flowse.train.trainer import Trainer, wrap_ddp
from flowse.utils.config import check
from flowse.utils.distributed import DistInfo, all_reduce_mean
from flowse.utils.fileio import check_same_keys
from flowse.utils.log import get_logger

logger = get_logger(__name__)


@dataclass
class HiFiGANTrainConfig(TrainConfig):
    """The shared training settings with jik876's defaults (AdamW 2e-4, betas 0.8 / 0.99, weight decay
    0.01, lr x ``lr_decay`` per ``lr_decay_steps``, no clipping) and the GAN's own settings.

    ``batch_size`` segments of ``segment_size`` samples (a multiple of the hop) per rank and step;
    ``lambda_mel`` (HiFi-GAN paper: 45) and ``lambda_fm`` (x jik876's ``feature_loss``, which carries
    its factor 2) weigh the generator losses; ``disc_width`` scales the discriminators' channels
    (1.0: MPD 41.1M + MSD 29.6M parameters; smaller only for CPU experiments and tests);
    ``valid_utts``: valid utterances whose resynthesis mel L1 is logged at each evaluation.
    """

    max_steps: int = 2000
    lr: float = 2e-4
    schedule: Literal["linear", "cosine", "constant", "exponential"] = "exponential"
    adam_betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    grad_clip: float = 0.0
    log_interval: int = 50
    eval_interval: int = 1000
    ckpt_interval: int = 1000
    keep_checkpoints: int = 2
    batch_size: int = 16
    segment_size: int = 8192
    lambda_mel: float = 45.0
    lambda_fm: float = 1.0
    disc_width: float = 1.0
    valid_utts: int = 4
    num_workers: int = 0

    def __post_init__(self):
        super().__post_init__()
        check(self.batch_size >= 1, "train.batch_size must be >= 1")
        check(0 < self.disc_width <= 1.0, "train.disc_width must be in (0, 1]")


@dataclass
class VocoderStageConfig(VocoderConfig):
    """The stage-3 yaml (``conf/*/vocoder*.yaml``): the vocoder (``VocoderConfig``, what
    ``<exp>/vocoder.yaml`` keeps), the HiFi-GAN ``train`` section and ``decode_batch_size``
    (utterances per batch of the vocoder-ceiling decode)."""

    train: HiFiGANTrainConfig = field(default_factory=HiFiGANTrainConfig)
    decode_batch_size: int = 4

    def __post_init__(self):
        base = getattr(super(), "__post_init__", None)
        if base is not None:
            base()
        check(self.decode_batch_size >= 1, "decode_batch_size must be >= 1")


STAGE_KEYS = ("train", "decode_batch_size")  # VocoderStageConfig keys that vocoder.yaml leaves out


class SegmentDataset(Dataset):
    """Random crops ``(mel [F, n_mels], wav [F * hop])`` of clean utterances, ``F = segment_size // hop``.

    Utterances shorter than a segment are padded (silence mel, zero samples). ``feats_scp``
    None: the mel is computed from the waveform.
    """

    def __init__(self, wav_scp: str, feats_scp: str | None, mel_cfg: MelConfig, segment_size: int):
        if segment_size % mel_cfg.hop_length:
            raise ValueError(f"segment_size {segment_size} must be a multiple of hop_length {mel_cfg.hop_length}")
        self.wavs = ScpReader(wav_scp, mel_cfg.sample_rate)
        self.wav_scp = wav_scp
        self.feats = ScpReader(feats_scp) if feats_scp else None
        if self.feats is not None:
            check_same_keys({wav_scp: list(self.wavs), feats_scp: list(self.feats)})
        self.keys = list(self.wavs)
        if not self.keys:
            raise ValueError(f"{wav_scp}: no utterances to train the vocoder on")
        self.mel_cfg = mel_cfg
        self.frames = segment_size // mel_cfg.hop_length
        self._logmel = LogMel(mel_cfg)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.keys[i]
        hop = self.mel_cfg.hop_length
        wav = torch.from_numpy(np.array(validate(self.wavs[key], f"{self.wav_scp}:{key}"), dtype=np.float32))
        if self.feats is not None:
            mel = torch.from_numpy(np.array(self.feats[key], dtype=np.float32))
        else:
            with torch.no_grad():
                mel = self._logmel(wav)
        t = min(mel.shape[0], wav.shape[0] // hop)
        if t > self.frames:
            s = int(torch.randint(0, t - self.frames + 1, ()))
        else:
            s = 0
        mel = mel[s : s + self.frames]
        wav = wav[s * hop : (s + self.frames) * hop]
        if mel.shape[0] < self.frames:
            mel = F.pad(mel, (0, 0, 0, self.frames - mel.shape[0]), value=math.log(self.mel_cfg.log_floor))
        wav = F.pad(wav, (0, self.frames * hop - wav.shape[0]))
        return mel, wav


class HiFiGANTask(TrainTask):
    """Generator, discriminators, optimizers and schedulers; ``gan_step`` is one D + one G update.

    ``dataset`` (a ``SegmentDataset``) is needed for ``train_step`` only; ``valid_mels``: whole-utterance
    clean mels ``[F, n_mels]`` whose resynthesis mel L1 ``evaluate`` reports.
    """

    name = "hifigan"
    postfix_keys = ("mel_l1", "d")
    plot_keys = ("d", "g_adv", "fm", "mel_l1", "valid_mel_l1", "lr")

    def __init__(self, gen_cfg: HiFiGANConfig, train_cfg: HiFiGANTrainConfig, mel_cfg: MelConfig,
                 dist: DistInfo | None = None, dataset: SegmentDataset | None = None,
                 valid_mels: list[torch.Tensor] | None = None):
        self.cfg = train_cfg
        self.mel_cfg = mel_cfg
        self.dist = dist or DistInfo()
        self.dataset, self.valid_mels = dataset, valid_mels or []
        dev = self.dist.device
        torch.manual_seed(train_cfg.seed)
        self.generator = Generator(gen_cfg, mel_cfg.n_mels).to(dev)
        if self.generator.upsample_factor != mel_cfg.hop_length:
            raise ValueError(f"hifigan: prod(upsample_rates)={self.generator.upsample_factor} != hop "
                             f"{mel_cfg.hop_length}")
        self.mpd = MultiPeriodDiscriminator(width=train_cfg.disc_width).to(dev)
        self.msd = MultiScaleDiscriminator(width=train_cfg.disc_width).to(dev)
        self.logmel = LogMel(mel_cfg).to(dev)
        self.optim_g = make_optimizer(self.generator.parameters(), train_cfg)
        self.optim_d = make_optimizer(itertools.chain(self.mpd.parameters(), self.msd.parameters()), train_cfg)
        self.sched_g = make_scheduler(self.optim_g, train_cfg)
        self.sched_d = make_scheduler(self.optim_d, train_cfg)
        self._g, self._mpd, self._msd = (wrap_ddp(m, self.dist) for m in (self.generator, self.mpd, self.msd))
        self._batches = None

    def state_items(self) -> dict:
        return {"generator": self.generator, "mpd": self.mpd, "msd": self.msd, "optim_g": self.optim_g,
                "optim_d": self.optim_d, "sched_g": self.sched_g, "sched_d": self.sched_d}

    def gan_step(self, mel: torch.Tensor, wav: torch.Tensor) -> dict[str, float]:
        """One D + one G update on ``mel [B, F, n_mels]``, ``wav [B, F * hop]``; returns the losses
        (means over ranks)."""
        dev = self.dist.device
        mel, y = mel.to(dev), wav.to(dev).unsqueeze(1)
        self.generator.train(), self.mpd.train(), self.msd.train()
        y_hat = self._g(mel.transpose(1, 2))
        y_mel = self.logmel(y.squeeze(1))
        y_hat_mel = self.logmel(y_hat.squeeze(1))

        self.optim_d.zero_grad(set_to_none=True)
        r_f, g_f, _, _ = self._mpd(y, y_hat.detach())
        r_s, g_s, _, _ = self._msd(y, y_hat.detach())
        loss_d = discriminator_loss(r_f, g_f) + discriminator_loss(r_s, g_s)
        loss_d.backward()
        self.optim_d.step()

        self.optim_g.zero_grad(set_to_none=True)
        loss_mel = F.l1_loss(y_hat_mel, y_mel)
        _, g_f, fr_f, fg_f = self._mpd(y, y_hat)
        _, g_s, fr_s, fg_s = self._msd(y, y_hat)
        loss_fm = feature_loss(fr_f, fg_f) + feature_loss(fr_s, fg_s)
        loss_adv = generator_loss(g_f) + generator_loss(g_s)
        loss_g = loss_adv + self.cfg.lambda_fm * loss_fm + self.cfg.lambda_mel * loss_mel
        loss_g.backward()
        self.optim_g.step()
        self.sched_g.step()
        self.sched_d.step()
        out = torch.stack([loss_d.detach(), loss_adv.detach(), loss_fm.detach(), loss_mel.detach()])
        out = all_reduce_mean(out).tolist()
        return dict(zip(["d", "g_adv", "fm", "mel_l1"], out))

    def _steps_per_epoch(self) -> int:
        return max(1, len(self.dataset) // (min(self.cfg.batch_size, len(self.dataset)) * self.dist.world_size))

    def _epoch_batches(self, step: int):
        """The batches of the epoch holding ``step``, from that step on (replayed from the epoch's start)."""
        spe = self._steps_per_epoch()
        epoch = step // spe
        torch.manual_seed(self.cfg.seed + 1000 * epoch + self.dist.rank)
        for k, batch in enumerate(segment_loader(self.dataset, self.cfg, self.dist, epoch)):
            if k >= step - epoch * spe:
                yield batch

    def begin(self, trainer: Trainer) -> None:
        self._batches = None

    def train_step(self, trainer: Trainer) -> StepOutput:
        batch = next(self._batches, None) if self._batches is not None else None
        if batch is None:
            self._batches = self._epoch_batches(trainer.step)
            batch = next(self._batches)
        return StepOutput(1, self.gan_step(*batch))

    def log_rows(self, trainer: Trainer, stats: list[dict], elapsed: float) -> list[dict]:
        row = {"step": trainer.step, "lr": self.sched_g.get_last_lr()[0], **stats[-1],
               "s_per_step": elapsed / max(1, len(stats))}
        logger.info("step %d/%d lr %.2e d %.3f g_adv %.3f fm %.3f mel_l1 %.4f (%.2f s/step)", trainer.step,
                    self.cfg.max_steps, row["lr"], row["d"], row["g_adv"], row["fm"], row["mel_l1"], row["s_per_step"])
        return [row]

    def evaluate(self, trainer: Trainer) -> dict:
        if not self.valid_mels:
            return {}
        out = {"valid_mel_l1": self.mel_l1(self.valid_mels)}
        logger.info("step %d: valid mel_l1 %.4f", trainer.step, out["valid_mel_l1"])
        return out

    @torch.no_grad()
    def mel_l1(self, mels: list[torch.Tensor]) -> float:
        """Mean mel L1 of whole utterances resynthesized by the generator (eval mode)."""
        self.generator.eval()
        dev = self.dist.device
        total = 0.0
        for m in mels:
            y_hat = self.generator(m.to(dev).T[None]).squeeze(1)
            total += F.l1_loss(self.logmel(y_hat)[0, : m.shape[0]], m.to(dev)).item()
        self.generator.train()
        return total / max(1, len(mels))


def segment_loader(dataset: SegmentDataset, cfg: HiFiGANTrainConfig, dist: DistInfo, epoch: int) -> DataLoader:
    """One epoch of shuffled segments (this rank's shard under DDP); seeded by ``seed + epoch``."""
    batch = min(cfg.batch_size, len(dataset))
    if dist.distributed:
        sampler = DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch, sampler=sampler, num_workers=cfg.num_workers, drop_last=True)
    g = torch.Generator().manual_seed(cfg.seed + epoch)
    return DataLoader(dataset, batch, shuffle=True, generator=g, num_workers=cfg.num_workers, drop_last=True)
