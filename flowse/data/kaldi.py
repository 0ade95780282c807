"""Kaldi data-dir IO: ark/scp through kaldiio, written atomically.

Audio in ark files is stored as float32 vectors so that the mixing invariant
``noisy == clean + noise`` holds exactly after a round trip; they carry no rate: it is
their data dir's ``sample_rate`` (``flowse.data.datadir``, 16 kHz when absent). Features
are float32 matrices ``[frames, n_mels]``. scp values may also be plain audio file paths
(wav/flac...), as in an official test set. Readers ask for audio at a rate ``sr`` and get
it resampled from whatever it is stored at.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Mapping

import kaldiio
import numpy as np

from flowse.data.datadir import read_sample_rate
from flowse.features.audio import SAMPLE_RATE, AudioError, read_audio, resample, validate
from flowse.utils.fileio import atomic_open, c_sorted, read_kv


class ArkWriter:
    """Write ``<key> -> array`` to ``<base>.ark`` + ``<base>.scp``; both appear only on ``close()``.

    The ark is written under a temporary name, then renamed; the scp (pointing at
    the final ark name) is written last, so an interrupted writer leaves no scp.
    """

    def __init__(self, ark_path: str, scp_path: str):
        self.ark_path = os.path.abspath(ark_path)
        self.scp_path = scp_path
        os.makedirs(os.path.dirname(self.ark_path), exist_ok=True)
        self._tmp = self.ark_path + f".tmp{os.getpid()}"
        self._f = open(self._tmp, "wb")
        self._index: dict[str, int] = {}

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key in self._index:
            raise ValueError(f"{self.ark_path}: duplicate key {key!r}")
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{self.ark_path}: invalid key {key!r}")
        self._f.write(f"{key} ".encode())
        self._index[key] = self._f.tell()
        kaldiio.matio.write_array(self._f, np.ascontiguousarray(value, dtype=np.float32))

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self._tmp, self.ark_path)
        with atomic_open(self.scp_path) as f:
            for k in c_sorted(self._index):
                f.write(f"{k} {self.ark_path}:{self._index[k]}\n")

    def abort(self) -> None:
        self._f.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "ArkWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@contextlib.contextmanager
def ark_writers(out_dir: str, names: Iterable[str]) -> Iterator[dict[str, ArkWriter]]:
    """One ``ArkWriter`` per stream (``<out_dir>/<name>.ark/.scp``): all closed on success, all aborted on error."""
    writers = {n: ArkWriter(os.path.join(out_dir, f"{n}.ark"), os.path.join(out_dir, f"{n}.scp")) for n in names}
    try:
        yield writers
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for w in writers.values():
        w.close()


def load_entry(value: str, name: str = "", sr: int = SAMPLE_RATE, stored_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load one scp value: ``file.ark:offset`` (array or (rate, int) wav) or an audio path.

    Audio comes back at ``sr``: float32 ark vectors are at ``stored_sr`` (their data dir's
    rate), wav entries and files at their own rate. Matrices (features) come back as stored.
    """
    where = name or value
    if ":" in value and not os.path.exists(value):
        try:
            obj = kaldiio.load_mat(value)
        except Exception as e:  # noqa: BLE001
            raise AudioError(f"{where}: cannot load {value!r} ({e})") from None
        if isinstance(obj, tuple):  # (rate, int16 array) wav entries written by other tools
            rate, arr = obj
            arr = arr.astype(np.float32) / (32768.0 if arr.dtype == np.int16 else 1.0)
            if arr.ndim == 2:
                arr = arr.mean(axis=1)
            return resample(arr, rate, sr)
        arr = np.asarray(obj, dtype=np.float32)
        return resample(arr, stored_sr, sr) if arr.ndim == 1 else arr
    return read_audio(value, sr, check=False)


def load_audio(value: str, name: str = "", min_seconds: float = 0.0, sr: int = SAMPLE_RATE,
               stored_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Load an audio scp value at ``sr`` (see ``load_entry``) and validate it (raises ``AudioError`` naming ``name``)."""
    return validate(load_entry(value, name, sr, stored_sr), name or value, min_seconds, sr)


def iter_scp(scp_path: str, sr: int = SAMPLE_RATE) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(key, array)`` over an scp in file order; audio at ``sr`` (see ``ScpReader``)."""
    stored_sr = read_sample_rate(os.path.dirname(scp_path))
    for key, value in read_kv(scp_path).items():
        yield key, load_entry(value, f"{scp_path}:{key}", sr, stored_sr)


class ScpReader(Mapping[str, np.ndarray]):
    """Random access to an scp (``reader[key]``); loads lazily.

    Audio comes back at ``sr``; float32 ark audio is taken to be at the rate of the data dir
    holding the scp (its ``sample_rate`` file, 16 kHz when absent). Features come back as stored.
    """

    def __init__(self, scp_path: str, sr: int = SAMPLE_RATE):
        self.path = scp_path
        self.sr = sr
        self.stored_sr = read_sample_rate(os.path.dirname(scp_path))
        self._entries = read_kv(scp_path)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            value = self._entries[key]
        except KeyError:
            raise KeyError(f"{self.path}: no key {key!r}") from None
        return load_entry(value, f"{self.path}:{key}", self.sr, self.stored_sr)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
