"""Scanner for the DNS-Challenge INTERSPEECH 2020 layout (plus extra clean/noise/RIR dirs).

Layout under ``dns_root`` (interspeech2020/master of the DNS-Challenge repo)::

    datasets/clean/**/*_reader_<ID>_*.wav        speakers reader_<ID>
    datasets/noise/**/*.wav
    datasets/test_set/synthetic/{no_reverb,with_reverb}/{clean,noisy}/*fileid_<N>.wav
    datasets/test_set/real_recordings/*.wav      no reference

Training lists go to ``out_dir`` (``data/local``): ``{train,valid}_clean.scp``,
``utt2spk``, ``noise_{train,valid}.scp``, ``rir_{train,valid}.scp``. Valid
speakers are held out by speaker; noises and RIRs by a stable hash of their id.
The official test sets become data dirs ``test_no_reverb`` and
``test_with_reverb`` (``wav.scp`` noisy, ``spk1.scp`` the set's "clean" - which
is reverberant in with_reverb) and ``test_real`` (``wav.scp`` only).
Audio is not decoded here (hundreds of hours); stage 1 skips bad files.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import soundfile as sf

from flowse.data.corpus_mini import AUDIO_EXTENSIONS, file_key, scan_audio_dir
from flowse.data.datadir import write_data_dir
from flowse.utils.config import check
from flowse.utils.fileio import check_same_keys, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

READER_RE = re.compile(r"reader_(\d+)")
FILEID_RE = re.compile(r"fileid_(\d+)$")


@dataclass
class CleanDir:
    path: str
    name: str = ""  # prefix of speaker ids; default: the dir's basename
    speaker_from: Literal["subdir", "file_prefix", "reader_tag"] = "subdir"  # LibriTTS/VCTK: subdir
    valid_speakers: int = 0


@dataclass
class DnsConfig:
    clean_subdir: str = "datasets/clean"
    noise_subdir: str = "datasets/noise"
    test_subdir: str = "datasets/test_set"
    valid_speakers: int = 20  # DNS readers held out for validation
    extra_clean_dirs: list[CleanDir] = field(default_factory=list)
    extra_noise_dirs: list[str] = field(default_factory=list)
    rir_dirs: list[str] = field(default_factory=list)  # e.g. OpenSLR26/28; empty: synthetic RIRs (rir section)
    rir_name_regex: str = ""  # keep only RIR files whose name matches (OpenSLR28 mixes RIRs and noises: "rir")
    valid_noise_fraction: float = 0.02
    valid_rir_fraction: float = 0.02
    test_sets: bool = True

    def __post_init__(self):
        check(self.valid_speakers >= 0, "dns2020.valid_speakers must be >= 0")
        for name in ("valid_noise_fraction", "valid_rir_fraction"):
            check(0 <= getattr(self, name) < 1, f"dns2020.{name} must be in [0, 1)")


def _key(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def speaker_of(path: str, root: str, how: str) -> str | None:
    name = os.path.splitext(os.path.basename(path))[0]
    if how == "reader_tag":
        m = READER_RE.search(name)
        return f"reader_{m.group(1)}" if m else None
    if how == "file_prefix":
        return name.split("_")[0] or None
    rel = os.path.relpath(path, root).split(os.sep)
    return rel[0] if len(rel) > 1 else None


def scan_clean(root: str, name: str, how: str, valid_speakers: int, seed: int) -> tuple[dict, dict, dict]:
    """(train {utt: path}, valid {utt: path}, utt2spk) for one clean dir; utt ids are ``<spk>-<file stem>``."""
    files = scan_audio_dir(root)
    if not files:
        raise FileNotFoundError(f"no audio files under clean dir {root}")
    by_spk: dict[str, list[str]] = {}
    unknown = 0
    for path in files:
        spk = speaker_of(path, root, how)
        if spk is None:
            unknown += 1
            spk = "unknown"
        by_spk.setdefault(_key(f"{name}_{spk}" if name else spk), []).append(path)
    if unknown:
        logger.warning(f"{root}: {unknown} files without a speaker id ({how}); grouped as speaker 'unknown'")
    spks = sorted(by_spk)
    rng = np.random.default_rng([seed, zlib.crc32(root.encode())])
    known = [s for s in spks if s != _key(f"{name}_unknown" if name else "unknown")]  # a mix of talkers: never held out
    n_valid = min(valid_speakers, max(len(known) - 1, 0))
    valid = set(rng.choice(known, size=n_valid, replace=False).tolist()) if n_valid else set()
    train, dev, utt2spk = {}, {}, {}
    for spk in spks:
        for path in by_spk[spk]:
            utt = f"{spk}-{_key(os.path.splitext(os.path.basename(path))[0])}"
            if utt in utt2spk:
                utt = f"{spk}-{_key(os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, '_'))}"
            if utt in utt2spk:
                raise ValueError(f"{root}: two files give the utterance id {utt!r} ({path})")
            (dev if spk in valid else train)[utt] = os.path.abspath(path)
            utt2spk[utt] = spk
    return train, dev, utt2spk


def _held_out(key: str, fraction: float) -> bool:
    return (zlib.crc32(key.encode()) % 100000) < fraction * 100000


def scan_files(dirs: list[str], prefix: str, fraction: float, name_regex: str = "") -> tuple[dict, dict]:
    """(train, valid) {id: path} over audio files in ``dirs`` (names matching ``name_regex``); ~``fraction`` held out by id hash."""
    train, valid = {}, {}
    pattern = re.compile(name_regex) if name_regex else None
    for d in dirs:
        base = _key(os.path.basename(os.path.normpath(d)))
        for path in scan_audio_dir(d):
            if pattern and not pattern.search(os.path.basename(path)):
                continue
            key = file_key(f"{prefix}{base}-", d, path)
            if key in train or key in valid:
                raise ValueError(f"duplicate id {key!r} from {path}; give the dirs distinct names")
            (valid if _held_out(key, fraction) else train)[key] = os.path.abspath(path)
    return train, valid


def _duration(path: str) -> float | None:
    try:
        info = sf.info(path)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types
        logger.warning(f"skipping {path}: cannot read audio header ({e})")
        return None
    if info.frames == 0:
        logger.warning(f"skipping {path}: empty audio")
        return None
    return info.frames / info.samplerate


def _by_fileid(d: str, set_name: str) -> dict[str, str]:
    if not os.path.isdir(d):
        raise FileNotFoundError(f"DNS test set dir not found: {d}")
    out = {}
    for f in sorted(os.listdir(d)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in AUDIO_EXTENSIONS:
            continue
        m = FILEID_RE.search(stem)
        if not m:
            raise ValueError(f"{os.path.join(d, f)}: DNS test file name does not end in fileid_<N>")
        key = f"{set_name}_fileid_{int(m.group(1)):04d}"
        if key in out:
            raise ValueError(f"{d}: two files with fileid {m.group(1)}: {os.path.basename(out[key])}, {f}")
        out[key] = os.path.abspath(os.path.join(d, f))
    return out


def prepare_test_sets(test_root: str, data_dir: str) -> dict[str, int]:
    """Write the official test sets as data dirs; returns utterance counts."""
    counts = {}
    for set_name in ("no_reverb", "with_reverb"):
        base = os.path.join(test_root, "synthetic", set_name)
        noisy = _by_fileid(os.path.join(base, "noisy"), set_name)
        clean = _by_fileid(os.path.join(base, "clean"), set_name)
        check_same_keys({os.path.join(base, "noisy"): noisy, os.path.join(base, "clean"): clean})
        files: dict[str, dict] = {"wav.scp": {}, "spk1.scp": {}, "utt2spk": {}, "utt2dur": {}, "utt2info": {}}
        for key in noisy:
            dur, dur_clean = _duration(noisy[key]), _duration(clean[key])
            if dur is None or dur_clean is None:
                continue
            stem = os.path.splitext(os.path.basename(noisy[key]))[0]
            snr = re.search(r"snr(-?\d+)", stem)
            tl = re.search(r"tl(-?\d+)", stem)
            info = {
                "snr": float(snr.group(1)) if snr else None,
                "target_level_db": float(tl.group(1)) if tl else None,
                "noise": None, "rir": None, "rt60": None, "file": os.path.basename(noisy[key]),
                "reverberant_reference": set_name == "with_reverb",
            }
            for name, value in (("wav.scp", noisy[key]), ("spk1.scp", clean[key]), ("utt2spk", key), ("utt2dur", f"{dur:.4f}"), ("utt2info", info)):
                files[name][key] = value
        write_data_dir(os.path.join(data_dir, f"test_{set_name}"), files)
        counts[f"test_{set_name}"] = len(files["wav.scp"])
    real = os.path.join(test_root, "real_recordings")
    if os.path.isdir(real):
        files = {"wav.scp": {}, "utt2spk": {}, "utt2dur": {}}
        for path in scan_audio_dir(real):
            dur = _duration(path)
            if dur is None:
                continue
            key = f"real_{_key(os.path.splitext(os.path.relpath(path, real))[0].replace(os.sep, '_'))}"
            files["wav.scp"][key], files["utt2spk"][key], files["utt2dur"][key] = os.path.abspath(path), key, f"{dur:.4f}"
        write_data_dir(os.path.join(data_dir, "test_real"), files)
        counts["test_real"] = len(files["wav.scp"])
    else:
        logger.warning(f"{real} not found: no test_real set")
    for name, n in counts.items():
        if n == 0:
            raise RuntimeError(f"DNS test set {name} has no usable file under {test_root}")
    return counts


def prepare_dns(cfg: DnsConfig, dns_root: str, out_dir: str, data_dir: str, seed: int, rir_synth=None) -> dict:
    """Scan ``dns_root`` (+ extra dirs) and write the lists and test data dirs; returns counts.

    ``rir_synth(out_dir) -> (train, valid)`` makes synthetic RIR lists when ``cfg.rir_dirs`` is empty.
    """
    if not os.path.isdir(dns_root):
        raise FileNotFoundError(f"--dns_root {dns_root} is not a directory (expected the DNS-Challenge checkout)")
    train, valid, utt2spk = scan_clean(os.path.join(dns_root, cfg.clean_subdir), "", "reader_tag", cfg.valid_speakers, seed)
    for extra in cfg.extra_clean_dirs:
        name = extra.name or _key(os.path.basename(os.path.normpath(extra.path)))
        t, v, u = scan_clean(extra.path, name, extra.speaker_from, extra.valid_speakers, seed)
        clash = set(u) & set(utt2spk)
        if clash:
            raise ValueError(f"utterance ids of {extra.path} clash with earlier dirs, e.g. {sorted(clash)[:3]}; set a distinct name")
        train.update(t), valid.update(v), utt2spk.update(u)
    noise_dirs = [os.path.join(dns_root, cfg.noise_subdir), *cfg.extra_noise_dirs]
    noise_train, noise_valid = scan_files(noise_dirs, "", cfg.valid_noise_fraction)
    if cfg.rir_dirs:
        rir_train, rir_valid = scan_files(cfg.rir_dirs, "", cfg.valid_rir_fraction, cfg.rir_name_regex)
    elif rir_synth is not None:
        rir_train, rir_valid = rir_synth(out_dir)
    else:
        rir_train, rir_valid = {}, {}
    lists = {
        "train_clean.scp": train, "valid_clean.scp": valid, "utt2spk": utt2spk,
        "noise_train.scp": noise_train, "noise_valid.scp": noise_valid,
        "rir_train.scp": rir_train, "rir_valid.scp": rir_valid,
    }
    for name, values in lists.items():
        write_kv(os.path.join(out_dir, name), values)
    counts = {n: len(v) for n, v in lists.items()}
    counts["speakers"] = len(set(utt2spk.values()))
    if not train or not noise_train:
        raise RuntimeError(f"DNS scan of {dns_root}: no clean ({len(train)}) or no noise ({len(noise_train)}) training files")
    if cfg.test_sets:
        counts.update(prepare_test_sets(os.path.join(dns_root, cfg.test_subdir), data_dir))
    logger.info("DNS2020 lists: " + json.dumps(counts))
    return counts
