"""Talkers for the mini corpus: flite voices, espeak-ng voices + variants, Kokoro neural voices.

A speaker is a dict (JSON-able, it travels in job files):
``{"id", "engine": "flite"|"espeak"|"kokoro", "voice", "variant", "rate", "pitch"}``;
flite uses ``voice`` and ``rate`` (words per minute relative to 175, applied as
``duration_stretch``), espeak-ng uses ``voice+variant``, ``rate`` (wpm) and
``pitch`` (0-99), Kokoro (``flowse.data.kokoro``) uses ``voice`` (a voice or a blend)
and ``rate`` (speed in percent). Each utterance jitters rate and pitch a little around
the speaker's values. Output: float32 mono 16 kHz with leading/trailing silence
trimmed to ``margin`` seconds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np

from flowse.features.audio import SAMPLE_RATE, read_audio
from flowse.utils.fileio import atomic_open

INSTALL_HINT = "install them with: sudo apt-get install flite espeak-ng (or run tools/install.sh)"


class TtsError(RuntimeError):
    """A synthesis command failed; the message names the command."""


def check_engines(engines: set[str]) -> None:
    """Fail early, naming the apt packages, when a needed synthesizer is missing."""
    binaries = {"flite": "flite", "espeak": "espeak-ng", "kokoro": "espeak-ng"}
    missing = sorted({binaries[e] for e in engines if shutil.which(binaries[e]) is None})
    if missing:
        raise RuntimeError(f"the mini corpus needs {' and '.join(missing)}, not found on PATH; {INSTALL_HINT}")


def speaker_id(engine: str, voice: str, variant: str = "", rate: int = 0, pitch: int = 0) -> str:
    if engine == "flite":
        return f"fl-{voice}"
    if engine == "kokoro":
        return f"kk-{voice.replace('*', '').replace('+', '-').replace('.', '')}-r{rate}"
    return f"es-{voice.replace('-', '')}-{variant.lower()}-p{pitch}-r{rate}"


def _command(spk: dict, text: str, out: str, rate: float, pitch: int) -> list[str]:
    if spk["engine"] == "flite":
        stretch = 175.0 / rate
        return ["flite", "-voice", spk["voice"], "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", out]
    if spk["engine"] == "espeak":
        voice = spk["voice"] + (f"+{spk['variant']}" if spk.get("variant") else "")
        return ["espeak-ng", "-v", voice, "-s", str(int(round(rate))), "-p", str(int(pitch)), "-w", out, text]
    raise ValueError(f"unknown TTS engine {spk['engine']!r}; choose flite or espeak")


def trim_silence(x: np.ndarray, sr: int = SAMPLE_RATE, top_db: float = 40.0, margin: float = 0.1) -> np.ndarray:
    """Cut leading/trailing parts more than ``top_db`` below the loudest 10 ms frame, keeping ``margin`` s."""
    hop = sr // 100
    n = len(x) // hop
    if n == 0:
        return x
    energy = np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)
    active = np.nonzero(10 * np.log10(energy + 1e-20) > 10 * np.log10(energy.max() + 1e-20) - top_db)[0]
    pad = int(margin * sr)
    start = max(0, active[0] * hop - pad)
    end = min(len(x), (active[-1] + 1) * hop + pad)
    return x[start:end]


def _kokoro(text: str, voice: str, speed: float) -> np.ndarray:
    """Kokoro speech at 16 kHz, trimmed; cached by content (``<cache>/tts/``, see ``flowse.data.kokoro``)
    because it costs about 0.25-0.9 s per second of speech on a CPU core and is deterministic."""
    import hashlib
    import json

    from flowse.data import kokoro
    from flowse.features.audio import resample

    key = hashlib.sha256(json.dumps([kokoro.MODEL_NAME, voice, round(speed, 6), text]).encode()).hexdigest()[:32]
    path = os.path.join(kokoro.cache_dir(), "tts", key[:2], f"{key}.npy")
    if os.path.isfile(path):
        try:
            return np.load(path).astype(np.float32)
        except (OSError, ValueError):
            pass  # a damaged cache entry is made again
    x = resample(kokoro.shared_kokoro().speak(kokoro.phonemes(text), voice, speed), kokoro.SAMPLE_RATE, SAMPLE_RATE)
    x = trim_silence(x - np.mean(x)).astype(np.float32)
    with atomic_open(path, "wb") as f:
        np.save(f, x)
    return x


def synthesize(spk: dict, text: str, rng: np.random.Generator, tmp_dir: str | None = None) -> np.ndarray:
    """Speak ``text`` with speaker ``spk`` (small random rate/pitch jitter from ``rng``); float32 16 kHz."""
    rate = spk["rate"] * rng.uniform(0.94, 1.06)
    pitch = int(np.clip(spk.get("pitch", 50) + rng.integers(-4, 5), 0, 99))
    if spk["engine"] == "kokoro":
        return _kokoro(text, spk["voice"], rate / 100.0)
    fd, out = tempfile.mkstemp(suffix=".wav", dir=tmp_dir)
    os.close(fd)
    try:
        cmd = _command(spk, text, out, rate, pitch)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(out) == 0:
            raise TtsError(f"{' '.join(cmd[:6])} ... failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
        x = read_audio(out)
    finally:
        os.unlink(out)
    x = trim_silence(x - np.mean(x))
    return x.astype(np.float32)
