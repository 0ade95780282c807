"""Enhance audio with a model dir (also installed as the ``flowse-enhance`` command).

    python -m flowse.bin.enhance --model_dir exp/pretrain_mini --in data/test_no_reverb/wav.scp \\
        --out_dir exp/pretrain_mini/enhanced_test_no_reverb [--nfe 10 --cfg 1.0 --device cpu \\
        --batch_size 8 --seed 0 --chunk_seconds 10 --overlap_seconds 1 --vocoder_dir DIR]
    flowse-enhance --model_dir exp/grpo_x --in noisy1.wav noisy2.flac some_dir/ --out_dir out/

``--in`` takes Kaldi ``wav.scp`` files (``<utt> <path or ark:offset>``), directories (every
wav/flac/ogg file below, utt = file name without extension) and audio files (utt = name
without extension), mixed freely. Any sample rate and channel count is accepted
(downmixed, resampled to the model's feature rate). Output (``flowse.enhance.enhance_files``):
``<out_dir>/<utt>.wav`` (mono, 16-bit PCM, at the vocoder's rate, or ``--sample_rate``), then
``<out_dir>/wav.scp`` (absolute paths, C-sorted) written last and atomically, and
``<out_dir>/enhance.yaml`` (the resolved settings). Unreadable or unusable inputs are
skipped with one warning line each; the exit status is 1 when no input could be enhanced.
Prints the real-time factor (processing time / audio duration).
"""
from __future__ import annotations

import argparse
import os

# Idle OpenMP threads sleep instead of spinning: with spinning, 2 threads on 2 cores shared with
# other jobs ran elementwise ops ~10x slower than 1 thread. Set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flowse.enhance import EnhanceConfig, Enhancer, NoUsableInput, enhance_files
from flowse.utils.config import load_config, parse_overrides
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)


def logging_configured() -> bool:
    import logging

    return bool(logging.getLogger().handlers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--in", dest="inputs", nargs="+", required=True, help="wav.scp files, directories, audio files")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--config", default=None, help="optional yaml of EnhanceConfig fields")
    p.add_argument("--nfe", type=int, default=None, help="Euler steps (default: the model's, 10)")
    p.add_argument("--cfg", type=float, default=None, help="CFG weight w (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch_size", type=int, default=None, help="chunks per forward (default 8)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--vocoder_dir", default=None, help="override the model dir's vocoder")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--sample_rate", type=int, default=None, help="Hz of the written wavs (default: the vocoder's)")
    args, overrides = p.parse_known_args(argv)
    if not logging_configured():
        setup_logging()
    explicit = {"nfe": args.nfe, "cfg_strength": args.cfg, "batch_size": args.batch_size, "seed": args.seed}
    over = parse_overrides(overrides)
    over.update({k: v for k, v in explicit.items() if v is not None})
    cfg = load_config(EnhanceConfig, args.config, over)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    enhancer = Enhancer.from_model_dir(args.model_dir, args.device, args.vocoder_dir, cfg)
    try:
        r = enhance_files(enhancer, args.inputs, args.out_dir, args.sample_rate)
    except NoUsableInput as e:
        logger.error("%s", e)
        return 1
    skipped = r["given"] - r["written"]
    msg = (f"enhanced {r['written']} file(s) ({r['audio_seconds']:.1f} s of audio) in {r['elapsed']:.1f} s: "
           f"RTF {r['rtf']:.3f} (nfe {enhancer.nfe}, cfg {enhancer.cfg_strength}, {enhancer.device}; "
           f"{r['sample_rate']} Hz out)" + (f"; {skipped} skipped" if skipped else ""))
    logger.info("%s -> %s", msg, args.out_dir)
    print(msg, flush=True)
    return 0


def console_main() -> None:
    """The ``flowse-enhance`` console script (setup.py entry point): one-line errors for a user's mistakes."""
    from flowse.utils.cli import run

    run(main)


if __name__ == "__main__":
    console_main()
