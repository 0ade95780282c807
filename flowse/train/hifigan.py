"""HiFi-GAN training on clean speech (stage 3), following jik876/hifi-gan's train.py.

Per step: discriminator update (MPD + MSD, LSGAN), then generator update with
adversarial + feature-matching (``lambda_fm`` x jik876's ``feature_loss``) + mel L1
(``lambda_mel``, 45 in the paper). AdamW (0.8, 0.99), exponential LR decay.
Data: random ``segment_size`` crops of ``spk1`` waveforms with the matching frames of the
dumped clean log-mel (full-utterance features, so crops see the true context); the loss
mel is recomputed from both waveforms with the same ``LogMel``. DDP under torchrun: each
rank reads its own shard (DistributedSampler); rank 0 writes checkpoints.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from flowse.features.audio import validate
from flowse.data.kaldi import ScpReader
from flowse.features.mel import LogMel, MelConfig
from flowse.models.vocoders.config import HiFiGANConfig, HiFiGANTrainConfig
from flowse.models.vocoders.hifigan import (
    Generator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_loss,
    generator_loss,
)
from flowse.utils.distributed import DistInfo, all_reduce_mean
from flowse.utils.fileio import check_same_keys
from flowse.utils.log import get_logger

logger = get_logger(__name__)


class SegmentDataset(Dataset):
    """Random crops ``(mel [F, n_mels], wav [F * hop])`` of clean utterances, ``F = segment_size // hop``.

    Utterances shorter than a segment are padded (silence mel, zero samples). ``feats_scp``
    None: the mel is computed from the waveform.
    """

    def __init__(self, wav_scp: str, feats_scp: str | None, mel_cfg: MelConfig, segment_size: int):
        if segment_size % mel_cfg.hop_length:
            raise ValueError(f"segment_size {segment_size} must be a multiple of hop_length {mel_cfg.hop_length}")
        self.wavs = ScpReader(wav_scp)
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


class HiFiGANTrainer:
    """Generator, discriminators, optimizers and one ``train_step``; ``state_dict`` for checkpoints."""

    def __init__(self, gen_cfg: HiFiGANConfig, train_cfg: HiFiGANTrainConfig, mel_cfg: MelConfig,
                 dist: DistInfo | None = None):
        self.cfg = train_cfg
        self.mel_cfg = mel_cfg
        self.dist = dist or DistInfo()
        dev = self.dist.device
        torch.manual_seed(train_cfg.seed)
        self.generator = Generator(gen_cfg, mel_cfg.n_mels).to(dev)
        if self.generator.upsample_factor != mel_cfg.hop_length:
            raise ValueError(f"hifigan: prod(upsample_rates)={self.generator.upsample_factor} != hop "
                             f"{mel_cfg.hop_length}")
        self.mpd = MultiPeriodDiscriminator(width=train_cfg.disc_width).to(dev)
        self.msd = MultiScaleDiscriminator(width=train_cfg.disc_width).to(dev)
        self.logmel = LogMel(mel_cfg).to(dev)
        betas = (train_cfg.adam_b1, train_cfg.adam_b2)
        self.optim_g = torch.optim.AdamW(self.generator.parameters(), train_cfg.lr, betas=betas)
        self.optim_d = torch.optim.AdamW(itertools.chain(self.mpd.parameters(), self.msd.parameters()),
                                         train_cfg.lr, betas=betas)
        self.step = 0
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [dev.index] if dev.type == "cuda" else None
            self._g, self._mpd, self._msd = (DDP(m, device_ids=ids) for m in (self.generator, self.mpd, self.msd))
        else:
            self._g, self._mpd, self._msd = self.generator, self.mpd, self.msd

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * self.cfg.lr_decay ** (step / self.cfg.lr_decay_steps)

    def train_step(self, mel: torch.Tensor, wav: torch.Tensor) -> dict[str, float]:
        """One D + one G update on ``mel [B, F, n_mels]``, ``wav [B, F * hop]``; returns the losses."""
        dev = self.dist.device
        mel, y = mel.to(dev), wav.to(dev).unsqueeze(1)
        for opt in (self.optim_g, self.optim_d):
            for group in opt.param_groups:
                group["lr"] = self.lr_at(self.step)
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
        self.step += 1
        out = torch.stack([loss_d.detach(), loss_adv.detach(), loss_fm.detach(), loss_mel.detach()])
        out = all_reduce_mean(out).tolist()
        return dict(zip(["d", "g_adv", "fm", "mel_l1"], out))

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

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "generator": self.generator.state_dict(),
            "mpd": self.mpd.state_dict(),
            "msd": self.msd.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.mpd.load_state_dict(state["mpd"])
        self.msd.load_state_dict(state["msd"])
        self.optim_g.load_state_dict(state["optim_g"])
        self.optim_d.load_state_dict(state["optim_d"])
        self.step = int(state["step"])


def segment_loader(dataset: SegmentDataset, cfg: HiFiGANTrainConfig, dist: DistInfo, epoch: int) -> DataLoader:
    """One epoch of shuffled segments (this rank's shard under DDP); seeded by ``seed + epoch``."""
    batch = min(cfg.batch_size, len(dataset))
    if dist.distributed:
        sampler = DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch, sampler=sampler, num_workers=cfg.num_workers, drop_last=True)
    g = torch.Generator().manual_seed(cfg.seed + epoch)
    return DataLoader(dataset, batch, shuffle=True, generator=g, num_workers=cfg.num_workers, drop_last=True)


def train(trainer: HiFiGANTrainer, dataset: SegmentDataset, on_checkpoint=None, valid_mels=None) -> None:
    """Run ``trainer`` up to ``cfg.steps``; ``on_checkpoint(trainer)`` every ``checkpoint_interval`` and at the end."""
    cfg = trainer.cfg
    steps_per_epoch = max(1, len(dataset) // (min(cfg.batch_size, len(dataset)) * trainer.dist.world_size))
    t0 = time.time()
    last = trainer.step
    while trainer.step < cfg.steps:
        epoch = trainer.step // steps_per_epoch
        torch.manual_seed(cfg.seed + 1000 * epoch + trainer.dist.rank)
        for mel, wav in segment_loader(dataset, cfg, trainer.dist, epoch):
            losses = trainer.train_step(mel, wav)
            s = trainer.step
            if s % cfg.log_interval == 0 or s == cfg.steps:
                rate = (time.time() - t0) / max(1, s - last)
                logger.info("step %d/%d lr %.2e d %.3f g_adv %.3f fm %.3f mel_l1 %.4f (%.2f s/step)", s, cfg.steps,
                            trainer.lr_at(s), losses["d"], losses["g_adv"], losses["fm"], losses["mel_l1"], rate)
                t0, last = time.time(), s
            if s % cfg.checkpoint_interval == 0 or s == cfg.steps:
                if valid_mels:
                    logger.info("step %d: valid mel_l1 %.4f", s, trainer.mel_l1(valid_mels))
                if on_checkpoint is not None:
                    on_checkpoint(trainer)
            if s >= cfg.steps:
                break
