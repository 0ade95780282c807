"""Copy synthesis: audio -> log-mel -> vocoder -> audio, the vocoder's ceiling on any audio.

    python -m flowse.bin.vocode --config conf/mini/vocoder_hifigan_universal.yaml \\
        --mel_config conf/mini/mel_22k.yaml --in data/test_no_reverb/spk1.scp --out_dir out/ \\
        [--seed 0] [--device cpu] [--batch_size 4] [--hift.checkpoint /path/hift.pt ...]

``--config``: a stage-3 vocoder yaml (``conf/*/vocoder*.yaml``); its weights must be given
there or as overrides (hifigan: ``--pretrained`` a jik876 checkpoint with its config.json,
e.g. a stage-3 ``vocoder.pt``, or ``package:<package>/<file>``; hift: ``--hift.checkpoint``).
``--mel_config``: the ``MelConfig`` yaml the vocoder decodes (``conf/*/mel*.yaml``).
``--in``: wav.scp files, directories, audio files (any rate, resampled to the mel's rate).
Writes ``<out_dir>/<utt>.wav`` at the vocoder's rate (the input's length), ``wav.scp``, and
the log-mel it computed, ``[frames, n_mels]``, to ``feats.scp`` + ``feats.ark``.
``--seed`` sets hift's excitation seed (``hift.seed``); other types ignore it (Griffin-Lim
has ``--griffinlim.seed``). Mel-gain takes the input as its noisy signal: copy synthesis
is then the identity (gain 1).
"""
from __future__ import annotations

import argparse

from flowse.enhance import resolve_device
from flowse.features.mel import MelConfig
from flowse.train.hifigan import VocoderStageConfig
from flowse.utils.cli import run
from flowse.utils.config import load_config, parse_overrides
from flowse.utils.log import get_logger, setup_logging
from flowse.vocode import configured_vocoder, copy_synthesis

logger = get_logger(__name__)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="stage-3 vocoder yaml")
    p.add_argument("--mel_config", required=True, help="mel yaml (MelConfig) the vocoder decodes")
    p.add_argument("--in", dest="inputs", nargs="+", required=True, help="wav.scp files, directories, audio files")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--seed", type=int, default=None, help="hift.seed (hift only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--batch_size", type=int, default=4, help="utterances per vocoder call")
    args, overrides = p.parse_known_args(argv)
    setup_logging()
    over = parse_overrides(overrides)
    cfg = load_config(VocoderStageConfig, args.config, over)
    if args.seed is not None:
        if cfg.type == "hift":
            cfg.hift.seed = args.seed
        else:
            logger.info("--seed ignored: only hift has an excitation seed (vocoder type %s)", cfg.type)
    mel_cfg = load_config(MelConfig, args.mel_config)
    vocoder = configured_vocoder(cfg, mel_cfg, resolve_device(args.device))
    written = copy_synthesis(vocoder, args.inputs, args.out_dir, args.batch_size)
    logger.info("copy synthesis (%s, %d Hz): %d utterances -> %s", cfg.type, vocoder.sample_rate, len(written),
                args.out_dir)


if __name__ == "__main__":
    run(main)
