"""Enhance audio with a model dir (also installed as the ``flowse-enhance`` command).

    python -m flowse.bin.enhance --model_dir exp/pretrain_mini --in data/test_no_reverb/wav.scp \\
        --out_dir exp/pretrain_mini/enhanced_test_no_reverb [--nfe 10 --cfg 1.0 --device cpu \\
        --batch_size 8 --seed 0 --chunk_seconds 10 --overlap_seconds 1 --vocoder_dir DIR]
    flowse-enhance --model_dir exp/grpo_x --in noisy1.wav noisy2.flac some_dir/ --out_dir out/

``--in`` takes Kaldi ``wav.scp`` files (``<utt> <path or ark:offset>``), directories (every
wav/flac/ogg file below, utt = file name without extension) and audio files (utt = name
without extension), mixed freely. Any sample rate and channel count is accepted
(downmixed, resampled). Output: ``<out_dir>/<utt>.wav`` (16 kHz mono, 16-bit PCM), then
``<out_dir>/wav.scp`` (absolute paths, C-sorted) written last and atomically, and
``<out_dir>/enhance.yaml`` (the resolved settings). Unreadable or unusable inputs are
skipped with one warning line each; the exit status is 1 when no input could be enhanced.
Prints the real-time factor (processing time / audio duration).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

# Idle OpenMP threads sleep instead of spinning: with spinning, 2 threads on 2 cores shared with
# other jobs ran elementwise ops ~10x slower than 1 thread. Set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import soundfile as sf

from flowse.features.audio import SAMPLE_RATE, AudioError, write_wav
from flowse.data.kaldi import load_entry
from flowse.enhance import EnhanceConfig, Enhancer, to_mono_16k
from flowse.utils.config import load_config, parse_overrides, save_config
from flowse.utils.fileio import read_kv, write_kv
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def collect_inputs(inputs: list[str]) -> dict[str, str]:
    """``{utt: source}`` from scp files, directories and audio files; duplicate utts are an error."""
    out: dict[str, str] = {}

    def add(key: str, value: str, where: str) -> None:
        if key in out:
            raise ValueError(f"duplicate utterance id {key!r} ({where} and {out[key]})")
        out[key] = value

    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                for f in sorted(files):
                    if f.lower().endswith(AUDIO_EXTS):
                        add(os.path.splitext(f)[0], os.path.join(root, f), item)
        elif item.endswith(".scp"):
            for k, v in read_kv(item).items():
                add(k, v, item)
        elif os.path.exists(item):
            add(os.path.splitext(os.path.basename(item))[0], item, item)
        else:
            logger.warning("skipping %s: no such file or directory", item)
    return out


def _duration(value: str) -> float:
    """Seconds of audio (header only for files; ark entries are loaded)."""
    if os.path.exists(value):
        info = sf.info(value)
        return info.frames / info.samplerate
    return len(load_entry(value)) / SAMPLE_RATE


def _load(key: str, value: str) -> tuple[np.ndarray, int]:
    if os.path.exists(value):
        try:
            x, sr = sf.read(value, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{value}: cannot read audio ({e})") from None
        return x, sr
    return load_entry(value, key), SAMPLE_RATE


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
    sources = collect_inputs(args.inputs)
    if not sources:
        logger.error("no inputs found in %s", args.inputs)
        return 1
    enhancer = Enhancer.from_model_dir(args.model_dir, args.device, args.vocoder_dir, cfg)
    os.makedirs(args.out_dir, exist_ok=True)
    resolved = replace(enhancer.cfg, nfe=enhancer.nfe, cfg_strength=enhancer.cfg_strength)
    save_config(resolved, os.path.join(args.out_dir, "enhance.yaml"))
    durations = {}
    for key, value in sources.items():
        try:
            durations[key] = _duration(value)
        except Exception as e:  # noqa: BLE001 - one warning line per bad input
            logger.warning("skipping %s: cannot read %s (%s)", key, value, e)
    order = sorted(durations, key=lambda k: durations[k])
    chunk_s = enhancer.cfg.chunk_seconds
    written: dict[str, str] = {}
    audio_seconds = 0.0
    t0 = time.time()
    group: list[str] = []
    group_chunks = 0.0

    def flush(keys: list[str]) -> None:
        nonlocal audio_seconds
        wavs, names = [], []
        for key in keys:
            try:
                x, sr = _load(key, sources[key])
                wavs.append(to_mono_16k(x, sr, f"{key} ({sources[key]})"))
                names.append(key)
            except (AudioError, ValueError) as e:
                logger.warning("skipping %s: %s", key, e)
        if not wavs:
            return
        outs = enhancer.enhance_batch(wavs, SAMPLE_RATE)
        for key, x, y in zip(names, wavs, outs):
            path = os.path.abspath(os.path.join(args.out_dir, f"{key}.wav"))
            write_wav(path, y)
            written[key] = path
            audio_seconds += len(x) / SAMPLE_RATE

    for key in order:
        group.append(key)
        group_chunks += max(1.0, durations[key] / chunk_s)
        if group_chunks >= enhancer.cfg.batch_size:
            flush(group)
            group, group_chunks = [], 0.0
    if group:
        flush(group)
    elapsed = time.time() - t0
    if not written:
        logger.error("no input could be enhanced (%d given)", len(sources))
        return 1
    write_kv(os.path.join(args.out_dir, "wav.scp"), written)
    rtf = elapsed / max(audio_seconds, 1e-9)
    skipped = len(sources) - len(written)
    msg = (f"enhanced {len(written)} file(s) ({audio_seconds:.1f} s of audio) in {elapsed:.1f} s: RTF {rtf:.3f} "
           f"(nfe {enhancer.nfe}, cfg {enhancer.cfg_strength}, {enhancer.device})"
           + (f"; {skipped} skipped" if skipped else ""))
    logger.info("%s -> %s", msg, args.out_dir)
    print(msg, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
