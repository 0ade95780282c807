"""Speed and agreement of our DNSMOS and SPK against the reference implementations, in one process.

    python -m flowse.bench.metrics [--num 64] [--sweep true] [--threads 0] [--batch_size 1]

Synthesizes ``--num`` clips of 2-10 s (flite speech + noise at 0-20 dB SNR; synthetic
voiced signals when flite is missing), then
- DNSMOS: ours (``flowse.metrics.dnsmos.DNSMOS``) vs ``speechmos.dnsmos.run`` on the
  list (its own thread pool); asserts |difference| < 1e-3 on every clip and score;
- SPK: our batched GE2E vs Resemblyzer's ``embed_utterance`` per clip on the same
  volume-normalised waveforms; asserts cosine >= 0.999;
- ``--sweep true``: DNSMOS seconds per window for onnxruntime thread / batch settings
  (how the defaults of ``DnsmosConfig`` were chosen).
Prints both times and the ratio. Needs the test extras (librosa, webrtcvad) for
the references; this is a benchmark, not a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from flowse.metrics.dnsmos import DnsmosConfig
from flowse.metrics.speaker import SpeakerConfig

TEXT = [
    "The small boat sailed past the rocky point while the gulls circled overhead.",
    "A loud bell woke the whole village at dawn, and nobody could sleep again.",
    "She found a feather on the garden path and kept it in a book for years.",
    "Please bring the heavy boxes upstairs before the rain starts this afternoon.",
    "The old clock in the hall struck nine as the guests walked in from the cold.",
    "We measured the river twice and wrote the numbers on a sheet of wet paper.",
]


def _flite_speech(tmp: str) -> np.ndarray | None:
    if shutil.which("flite") is None:
        return None
    from flowse.features.audio import read_audio

    parts = []
    for i, text in enumerate(TEXT * 2):
        voice = ["kal16", "awb", "rms", "slt"][i % 4]
        out = os.path.join(tmp, f"s{i}.wav")
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", out], check=True, capture_output=True)
        parts.append(read_audio(out))
    return np.concatenate(parts)


def _synthetic_speech(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / 16000
    f0 = 120 + 60 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
    return (0.1 * voice * env).astype(np.float32)


def make_clips(num: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """``num`` noisy clips of 2-10 s and their clean versions."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        speech = _flite_speech(tmp)
    source = "flite speech"
    if speech is None:
        speech, source = _synthetic_speech(16000 * 120, rng), "synthetic voiced signals (flite not found)"
    clean, noisy = [], []
    for _ in range(num):
        n = int(rng.uniform(2.0, 10.0) * 16000)
        start = int(rng.integers(0, len(speech) - n))
        c = speech[start : start + n].astype(np.float32)
        c = c / (np.sqrt(np.mean(c**2)) + 1e-9) * 10 ** (rng.uniform(-35, -20) / 20)
        noise = rng.standard_normal(n).astype(np.float32)
        if rng.random() < 0.5:  # pink-ish
            noise = np.cumsum(noise) * 0.05
            noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
        snr = rng.uniform(0, 20)
        noise *= np.sqrt(np.mean(c**2) / (np.mean(noise**2) + 1e-12)) * 10 ** (-snr / 20)
        clean.append(c)
        noisy.append(np.clip(c + noise, -1, 1).astype(np.float32))
    return noisy, clean, source


def bench_dnsmos(clips: list[np.ndarray], cfg: DnsmosConfig) -> None:
    from flowse.metrics.dnsmos import DNSMOS, reference_windows

    n_windows = sum(len(reference_windows(c)) for c in clips)
    ours = DNSMOS(cfg)
    ours.score(clips[:1])
    t = time.perf_counter()
    got = ours.score(clips)
    t_ours = time.perf_counter() - t
    from speechmos import dnsmos as ref_mod

    ref_mod.run(clips[0], 16000)  # loads its sessions
    t = time.perf_counter()
    ref = ref_mod.run(clips, 16000, return_df=False)
    t_ref = time.perf_counter() - t
    worst = 0.0
    for i, r in enumerate(ref):
        for k, rk in [("SIG", "sig_mos"), ("BAK", "bak_mos"), ("OVRL", "ovrl_mos"), ("P808", "p808_mos")]:
            worst = max(worst, abs(got[k][i] - r[rk]))
    assert worst < 1e-3, f"DNSMOS differs from the reference by {worst}"
    print(f"DNSMOS: {len(clips)} clips, {n_windows} reference windows; max |ours - ref| = {worst:.2e}")
    print(f"  ours (threads={cfg.threads or 'all'}, batch={cfg.batch_size}): {t_ours:.2f} s")
    print(f"  speechmos.dnsmos.run (thread pool): {t_ref:.2f} s")
    print(f"  speed-up: {t_ref / t_ours:.2f}x")


def sweep_dnsmos(clips: list[np.ndarray]) -> None:
    from flowse.metrics.dnsmos import DNSMOS, reference_windows

    windows = np.concatenate([reference_windows(c) for c in clips[:4]])[:16]
    print(f"DNSMOS sweep on {len(windows)} windows (s/window):")
    for threads in (1, 2, 4):
        for bs in (1, 4, 16):
            d = DNSMOS(DnsmosConfig(threads=threads, batch_size=bs))
            d.score_windows(windows[:bs])
            t = time.perf_counter()
            d.score_windows(windows)
            print(f"  threads={threads} batch={bs:2d}: {(time.perf_counter() - t) / len(windows):.4f}")


def bench_spk(noisy: list[np.ndarray], clean: list[np.ndarray], device: str) -> None:
    import torch

    from flowse.metrics.speaker import SpeakerSimilarity, normalize_volume

    ours = SpeakerSimilarity(SpeakerConfig(), device)
    ours.embed(noisy[:2])
    t = time.perf_counter()
    spk = ours.score(noisy, clean)
    t_ours = time.perf_counter() - t
    from resemblyzer import VoiceEncoder

    enc = VoiceEncoder(device, verbose=False)
    t = time.perf_counter()
    with torch.inference_mode():
        e_n = np.stack([enc.embed_utterance(normalize_volume(w)) for w in noisy])
        e_c = np.stack([enc.embed_utterance(normalize_volume(w)) for w in clean])
    t_ref = time.perf_counter() - t
    ref_spk = np.sum(e_n * e_c, axis=1)
    emb = ours.embed(noisy)
    cos = np.sum(emb * e_n, axis=1)
    assert cos.min() >= 0.999, f"embedding cosine vs Resemblyzer {cos.min()}"
    print(f"SPK: {len(noisy)} pairs; min cosine ours vs Resemblyzer embedding = {cos.min():.6f}, "
          f"max |SPK diff| = {np.abs(spk - ref_spk).max():.2e}")
    print(f"  ours (batched torch, {device}): {t_ours:.2f} s")
    print(f"  Resemblyzer embed_utterance loop: {t_ref:.2f} s")
    print(f"  speed-up: {t_ref / t_ours:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="our DNSMOS onnxruntime threads (0: all cores)")
    p.add_argument("--batch_size", type=int, default=DnsmosConfig.batch_size)
    p.add_argument("--torch_threads", type=int, default=0, help="0: all cores")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sweep", default="false", choices=["true", "false"])
    p.add_argument("--skip", default="", help="comma list of parts to skip: dnsmos,spk")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1))
    noisy, clean, source = make_clips(args.num)
    dur = sum(len(c) for c in noisy) / 16000
    print(f"{len(noisy)} clips ({source}), {dur:.1f} s of audio; cores: {os.cpu_count()}; "
          f"torch threads {torch.get_num_threads()}")
    if args.sweep == "true":
        sweep_dnsmos(noisy)
    skip = set(args.skip.split(","))
    if "dnsmos" not in skip:
        bench_dnsmos(noisy, DnsmosConfig(threads=args.threads, batch_size=args.batch_size))
    if "spk" not in skip:
        bench_spk(noisy, clean, args.device)
    return 0


if __name__ == "__main__":
    from flowse.utils.cli import run

    run(main)
