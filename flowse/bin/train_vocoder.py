"""Stage 3: prepare / train / load the vocoder, then decode the vocoder ceiling of the test sets.

    python -m flowse.bin.train_vocoder --config conf/mini/vocoder.yaml --data_dir data --dump_dir dump \\
        --exp_dir exp/vocoder_vocoder [--sets "test_no_reverb test_with_reverb"] [--device auto] \\
        [--force false] [--griffinlim.n_iter 64 ...]

By type: griffinlim / melgain write the resolved ``vocoder.yaml`` (mel config from
``dump/mel.yaml``); hifigan trains on ``data/<train_set>/spk1.scp`` (+ the dumped clean mels),
resuming from the newest ``checkpoint_<step>.pt``, or with ``pretrained: <ckpt>`` loads a
standard jik876 generator checkpoint whose config.json mel settings must match; it writes
``vocoder.pt`` ({"generator": state_dict} with weight-norm names, as jik876) and a jik876
``config.json``; onnx copies the model to ``vocoder.onnx``. Then, for each set of ``--sets``
with clean features, the clean mel is decoded to ``enhanced_<set>/`` (the vocoder ceiling,
scored by stage 6). Markers: ``.vocoder.done`` in the exp dir, ``.ceiling.done`` per set.
"""
from __future__ import annotations

import argparse
import os
import shutil

import numpy as np
import yaml

from flowse.features.mel import MelConfig
from flowse.models.vocoders import CONFIG_FILE, WEIGHTS_FILE, VocoderConfig, load_vocoder
from flowse.vocode import vocoder_ceiling
from flowse.utils import stage
from flowse.utils.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from flowse.utils.config import ConfigError, load_config, save_config
from flowse.utils.distributed import DistInfo, barrier, cleanup, init_distributed
from flowse.utils.fileio import atomic_open
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def read_dump_mel(dump_dir: str) -> MelConfig:
    """The mel config stage 2 used (``dump/mel.yaml``: MelConfig keys, top level or under ``mel:``)."""
    path = os.path.join(dump_dir, "mel.yaml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run stage 2 (mel dumping) first")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if isinstance(data.get("mel"), dict):
        data = data["mel"]
    keys = MelConfig.__dataclass_fields__
    return load_config(MelConfig, overrides={k: v for k, v in data.items() if k in keys})


def _save_generator(gen, path: str) -> None:
    from flowse.models.vocoders.hifigan import to_standard_state_dict

    save_checkpoint({"generator": {k: v.detach().cpu() for k, v in to_standard_state_dict(gen.state_dict()).items()}},
                    path)


def prepare_hifigan(cfg: VocoderConfig, args: argparse.Namespace, dist: DistInfo) -> None:
    from flowse.models.vocoders.hifigan import (
        Generator,
        find_standard_config,
        load_generator_state,
        read_standard_config,
        write_standard_config,
    )
    from flowse.train.hifigan import HiFiGANTrainer, SegmentDataset, train

    weights = os.path.join(args.exp_dir, WEIGHTS_FILE)
    if cfg.pretrained:
        cfg.hifigan = read_standard_config(find_standard_config(cfg.pretrained, cfg.pretrained_config), cfg.mel)
        gen = Generator(cfg.hifigan, cfg.mel.n_mels)
        load_generator_state(gen, load_checkpoint(cfg.pretrained), cfg.pretrained)
        logger.info("loaded pretrained HiFi-GAN generator %s (no training)", cfg.pretrained)
        if dist.is_main:
            _save_generator(gen, weights)
            write_standard_config(os.path.join(args.exp_dir, "config.json"), cfg.hifigan, cfg.mel)
        return
    wav_scp = os.path.join(args.data_dir, args.train_set, "spk1.scp")
    feats = os.path.join(args.dump_dir, args.train_set, "spk1_feats.scp")
    if not os.path.exists(wav_scp):
        raise FileNotFoundError(f"{wav_scp} not found: the HiFi-GAN trains on the clean speech of {args.train_set}")
    if not os.path.exists(feats):
        logger.info("%s not found: computing the clean mels from the waveforms", feats)
        feats = None
    dataset = SegmentDataset(wav_scp, feats, cfg.mel, cfg.train.segment_size)
    trainer = HiFiGANTrainer(cfg.hifigan, cfg.train, cfg.mel, dist)
    if args.force == "true" and dist.is_main:
        from flowse.utils.checkpoint import list_checkpoints

        for _, old in list_checkpoints(args.exp_dir):
            logger.info("--force true: removing %s (training restarts from scratch)", old)
            os.unlink(old)
    barrier()
    ckpt = latest_checkpoint(args.exp_dir)
    if ckpt:
        trainer.load_state_dict(load_checkpoint(ckpt, map_location=dist.device))
        logger.info("resumed from %s (step %d)", ckpt, trainer.step)
    from flowse.models.vocoders.hifigan import count_parameters

    logger.info("HiFi-GAN: generator %.2fM parameters, %d training utterances, %d steps",
                count_parameters(trainer.generator) / 1e6, len(dataset), cfg.train.steps)
    valid = []
    valid_feats = os.path.join(args.dump_dir, args.valid_set, "spk1_feats.scp")
    if cfg.train.valid_utts and os.path.exists(valid_feats):
        import torch

        from flowse.data.kaldi import ScpReader

        reader = ScpReader(valid_feats)
        keys = list(reader)[: cfg.train.valid_utts]
        valid = [torch.from_numpy(np.array(reader[k], dtype=np.float32)) for k in keys]

    def on_checkpoint(tr: HiFiGANTrainer) -> None:
        if dist.is_main:
            save_checkpoint(tr.state_dict(), checkpoint_path(args.exp_dir, tr.step))
            prune_checkpoints(args.exp_dir, cfg.train.keep_checkpoints)

    train(trainer, dataset, on_checkpoint, valid)
    if dist.is_main:
        _save_generator(trainer.generator, weights)
        write_standard_config(os.path.join(args.exp_dir, "config.json"), cfg.hifigan, cfg.mel)


def prepare_onnx(cfg: VocoderConfig, args: argparse.Namespace) -> None:
    src = cfg.onnx.path
    if not src or not os.path.exists(src):
        raise FileNotFoundError(f"onnx vocoder: onnx.path {src!r} not found")
    with open(src, "rb") as fi, atomic_open(os.path.join(args.exp_dir, "vocoder.onnx"), "wb") as fo:
        shutil.copyfileobj(fi, fo)
    cfg.onnx.path = "vocoder.onnx"


def prepare(cfg: VocoderConfig, args: argparse.Namespace, dist: DistInfo) -> None:
    if cfg.type == "hifigan":
        prepare_hifigan(cfg, args, dist)
    elif cfg.type == "onnx" and dist.is_main:
        prepare_onnx(cfg, args)
    if dist.is_main:
        save_config(cfg, os.path.join(args.exp_dir, "config.yaml"))
        save_config(cfg, os.path.join(args.exp_dir, CONFIG_FILE))
        load_vocoder(args.exp_dir)  # the written dir must load; raises with the reason otherwise
        stage.mark_done(args.exp_dir, "vocoder")
        logger.info("vocoder %s ready in %s", cfg.type, args.exp_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="vocoder yaml (conf/<c>/vocoder.yaml)")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--dump_dir", default="dump")
    p.add_argument("--exp_dir", required=True)
    p.add_argument("--sets", default="", help="space-separated test sets for the vocoder ceiling")
    p.add_argument("--train_set", default="train")
    p.add_argument("--valid_set", default="valid")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--force", default="false", choices=["true", "false"])
    args, overrides = p.parse_known_args(argv)
    force = args.force == "true"
    os.makedirs(args.exp_dir, exist_ok=True)
    dist = init_distributed(args.device)
    setup_logging(os.path.join(args.exp_dir, "train.log"), rank=dist.rank)
    cfg = load_config(VocoderConfig, args.config, overrides)
    mel = read_dump_mel(args.dump_dir)
    if cfg.mel is not None and cfg.mel != mel:
        raise ConfigError(f"{args.config}: mel section {cfg.mel} differs from {args.dump_dir}/mel.yaml {mel}; "
                          "drop it from the vocoder yaml (it is taken from the dumped features)")
    cfg.mel = mel
    if force or not stage.is_done(args.exp_dir, "vocoder"):
        stage.clear(args.exp_dir, "vocoder")
        prepare(cfg, args, dist)
    else:
        logger.info("vocoder in %s already prepared (marker found); --force true redoes it", args.exp_dir)
    barrier()
    if dist.is_main and args.sets.split():
        vocoder = load_vocoder(args.exp_dir, dist.device)
        bs = load_config(VocoderConfig, os.path.join(args.exp_dir, CONFIG_FILE)).decode_batch_size
        vocoder_ceiling(vocoder, args.data_dir, args.dump_dir, args.exp_dir, args.sets.split(), force, bs)
    cleanup()


if __name__ == "__main__":
    main()
