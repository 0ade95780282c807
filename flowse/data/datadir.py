"""Kaldi data dirs of the recipe: ``data/<set>/{wav.scp, spk1.scp, noise1.scp, utt2spk, spk2utt, utt2dur, utt2info}``.

``wav.scp`` is the noisy input, ``spk1.scp`` the clean reference (training
target), ``noise1.scp`` the additive noise, ``utt2info`` one line of JSON per
utterance with the mixing facts. Every per-utterance file has the same keys,
written in C byte order; ``spk2utt`` is derived from ``utt2spk``. ``sample_rate`` (one
integer) is the rate of the float32 audio stored in the dir's ark files, which carry no
rate of their own; a dir without it is at 16 kHz (``SAMPLE_RATE``). Audio files named in
an scp carry their own rate.
"""
from __future__ import annotations

import json
import os
from typing import Mapping

from flowse.features.audio import SAMPLE_RATE
from flowse.utils.fileio import atomic_open, c_sorted, check_same_keys, read_kv, write_kv

UTT_FILES = ("wav.scp", "spk1.scp", "noise1.scp", "utt2spk", "utt2dur", "utt2info")
RATE_FILE = "sample_rate"


def make_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, str]:
    groups: dict[str, list[str]] = {}
    for utt in c_sorted(utt2spk):
        groups.setdefault(utt2spk[utt], []).append(utt)
    return {spk: " ".join(utts) for spk, utts in groups.items()}


def write_data_dir(data_dir: str, files: Mapping[str, Mapping[str, object]]) -> None:
    """Write per-utterance files (name -> {utt: value}) after checking their keys agree; adds spk2utt.

    ``utt2info`` values may be dicts (written as one-line JSON).
    """
    check_same_keys({name: list(v) for name, v in files.items()})
    os.makedirs(data_dir, exist_ok=True)
    for name, values in files.items():
        if name == "utt2info":
            values = {k: json.dumps(v, sort_keys=True) if not isinstance(v, str) else v for k, v in values.items()}
        write_kv(os.path.join(data_dir, name), values)
    if "utt2spk" in files:
        write_kv(os.path.join(data_dir, "spk2utt"), make_spk2utt({k: str(v) for k, v in files["utt2spk"].items()}))


def write_sample_rate(data_dir: str, sr: int) -> None:
    with atomic_open(os.path.join(data_dir, RATE_FILE)) as f:
        f.write(f"{int(sr)}\n")


def read_sample_rate(data_dir: str) -> int:
    """The rate of the dir's ark audio (see the module doc); ``SAMPLE_RATE`` when the dir has no ``sample_rate``."""
    path = os.path.join(data_dir, RATE_FILE)
    if not os.path.exists(path):
        return SAMPLE_RATE
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{path}: expected a positive integer sample rate, got {text!r}")
    return int(text)


def read_utt2info(path: str) -> dict[str, dict]:
    return {k: json.loads(v) for k, v in read_kv(path).items()}


def check_data_dir(data_dir: str, required: tuple[str, ...] = ("wav.scp",)) -> list[str]:
    """Check a data dir (present files sorted, identical keys, no duplicates); returns its utterance keys.

    Raises ``ValueError`` naming the file and keys on a mismatch.
    """
    for name in required:
        if not os.path.exists(os.path.join(data_dir, name)):
            raise FileNotFoundError(f"{data_dir}: missing {name}")
    keys: dict[str, list[str]] = {}
    for name in UTT_FILES:
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            k = list(read_kv(path))
            if k != c_sorted(k):
                raise ValueError(f"{path}: keys are not sorted in C byte order (LC_ALL=C sort)")
            keys[name] = k
    if not keys:
        raise FileNotFoundError(f"{data_dir}: no data files")
    check_same_keys({os.path.join(data_dir, n): k for n, k in keys.items()})
    spk2utt = os.path.join(data_dir, "spk2utt")
    if "utt2spk" in keys and os.path.exists(spk2utt):
        utt2spk = read_kv(os.path.join(data_dir, "utt2spk"))
        if read_kv(spk2utt) != make_spk2utt(utt2spk):
            raise ValueError(f"{spk2utt} does not match utt2spk")
    return next(iter(keys.values()))
