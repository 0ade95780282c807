"""Atomic file writing and Kaldi-style text lists (``<key> <value>`` per line).

Every output file of the toolkit is written to a temporary name in the same
directory and renamed into place, so an interrupted job never leaves a
half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Iterable, Iterator, Mapping

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open ``path`` for writing through a temp file renamed on success."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: str, skip_bad: bool = False) -> list[dict]:
    """The records of a JSON-lines file (``[]`` when it does not exist; blank lines ignored).

    ``skip_bad`` drops lines that do not parse (a log being appended to by a live job).
    """
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if not skip_bad:
                    raise
    return out


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Sort as ``LC_ALL=C sort`` does (byte order)."""
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def read_kv(path: str, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a Kaldi list ``<key> <rest of line>``; duplicate keys are an error naming the key."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) < 2 and not allow_empty_value:
                raise ValueError(f"{path}:{n}: expected '<key> <value>', got {line!r}")
            key, val = parts[0], (parts[1] if len(parts) > 1 else "")
            if key in out:
                raise ValueError(f"{path}:{n}: duplicate key {key!r}")
            out[key] = val
    return out


def write_kv(path: str, items: Mapping[str, object]) -> None:
    """Write ``<key> <value>`` lines in C byte order, atomically."""
    with atomic_open(path) as f:
        for k in c_sorted(items):
            f.write(f"{k} {items[k]}\n")


def check_same_keys(named: Mapping[str, Iterable[str]]) -> None:
    """Raise a clear error when files that must share keys do not."""
    names = list(named)
    ref_name = names[0]
    ref = set(named[ref_name])
    for name in names[1:]:
        other = set(named[name])
        if other != ref:
            only_ref = c_sorted(ref - other)[:5]
            only_other = c_sorted(other - ref)[:5]
            raise ValueError(
                f"key mismatch between {ref_name} and {name}: "
                f"only in {ref_name}: {only_ref}{'...' if len(ref - other) > 5 else ''}; "
                f"only in {name}: {only_other}{'...' if len(other - ref) > 5 else ''}"
            )
