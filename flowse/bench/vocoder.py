"""Speed of the neural vocoders: real-time factor of HiFT (CosyVoice2) and HiFi-GAN V1.

    python -m flowse.bench.vocoder                       # 2 CPU threads, 10 s of audio, batch 1 and 4
    python -m flowse.bench.vocoder --device cuda --threads 0

Random weights at the released sizes (HiFT: CosyVoice2-0.5B's 20.8M parameters, 24 kHz,
hop 480; HiFi-GAN V1: 13.9M, 16 kHz, hop 256), weight norm folded as after loading a
checkpoint, random log-mels of ``--seconds`` per item. The RTF is the median wall time of
``Vocoder.decode`` over ``--repeats`` runs (after one warm-up) divided by the seconds of
audio produced (batch x seconds): below 1 is faster than real time. The CPU-time RTF
divides the process CPU time (all threads) instead: on a machine shared with other jobs
it is the steadier figure (wall RTF ~ CPU-time RTF / threads when the cores are free).
Prints a table and, last, one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import time

# Sleeping (not spinning) idle OpenMP threads, as in the training and enhancement bins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from flowse.features.mel import MelConfig  # noqa: E402
from flowse.models.vocoders.base import Vocoder  # noqa: E402
from flowse.models.vocoders.config import HiFiGANConfig  # noqa: E402
from flowse.models.vocoders.hifigan import HiFiGANVocoder  # noqa: E402
from flowse.models.vocoders.hift import HiFTConfig, HiFTVocoder  # noqa: E402

COSYVOICE2_MEL = MelConfig(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, fmax=8000,
                           magnitude_eps=1e-9)


def build(name: str) -> Vocoder:
    if name == "hift":
        voc: Vocoder = HiFTVocoder(COSYVOICE2_MEL, HiFTConfig())
    else:
        voc = HiFiGANVocoder(MelConfig(), HiFiGANConfig(upsample_initial_channel=512))
    voc.generator.remove_weight_norm()
    return voc.eval()


def rtf(voc: Vocoder, batch: int, seconds: float, repeats: int, device: torch.device) -> tuple[float, float]:
    """(wall-clock RTF, process CPU-time RTF); the second, all threads summed, is steadier on a shared machine."""
    frames = int(seconds * voc.sample_rate / voc.hop_length)
    mel = torch.randn(batch, frames, voc.mel_cfg.n_mels, device=device) - 6
    voc.decode(mel[:, : max(1, frames // 10)])
    times, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0, c0 = time.perf_counter(), time.process_time()
        voc.decode(mel)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    audio = batch * frames * voc.hop_length / voc.sample_rate
    return sorted(times)[len(times) // 2] / audio, sorted(cpu)[len(cpu) // 2] / audio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (0: all cores)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio per item")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--vocoders", nargs="+", default=["hift", "hifigan_v1"], choices=["hift", "hifigan_v1"])
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    results = {"device": str(device), "threads": torch.get_num_threads(), "seconds": a.seconds, "rtf": {}, "cpu_rtf": {}}
    print(f"device {device}, {torch.get_num_threads()} threads, {a.seconds:g} s of audio per item; RTF = time / audio")
    for name in a.vocoders:
        voc = build(name).to(device)
        n_params = sum(t.numel() for t in voc.parameters())
        for b in a.batches:
            with torch.inference_mode():
                r, r_cpu = rtf(voc, b, a.seconds, a.repeats, device)
            results["rtf"][f"{name}_b{b}"] = r
            results["cpu_rtf"][f"{name}_b{b}"] = r_cpu
            print(f"{name:<11} {n_params / 1e6:6.2f}M params  {voc.sample_rate // 1000} kHz  batch {b}:  "
                  f"RTF {r:.3f} ({1 / r:.1f}x real time), CPU-time RTF {r_cpu:.3f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
