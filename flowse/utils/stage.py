"""Completion markers keyed on a step's inputs: the one skip/redo rule of every stage.

A finished step writes ``<dir>/.<name>.done`` last and atomically; the marker holds the
step's *key*, a JSON mapping built by ``step_key``:

- ``config``: sha256 of the resolved config as yaml text (a dataclass or a mapping);
- ``files``: ``{absolute path: "<size>:<mtime_ns>:<inode>"}`` of the input files the step
  reads (``null`` for a missing one). Not their content: scp lists point into ark files
  that a redone upstream step rewrites, so a list with the same text may hold other audio
  (lists are written atomically, so a rewritten one is a new inode);
- any other JSON values the step depends on (a corpus name, an upstream step's key).

A rerun skips a step whose stored key equals the new one, redoes it (one log line naming
what changed) when the key differs, and always redoes it when forced. A step killed
midway has no marker and is redone from its own resumable state; a step with such state
(training checkpoints) also writes ``<dir>/.<name>.started`` holding the key of that state
at its start, so that state is resumed only by a rerun of the same inputs (``resumable``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterable

import yaml

from flowse.utils.fileio import write_text
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def marker_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.done")


def config_digest(cfg: Any) -> str:
    """sha256 of ``cfg`` (a dataclass or a JSON-like mapping) dumped as yaml."""
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    text = yaml.safe_dump(data, sort_keys=True, default_flow_style=None)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_id(path: str) -> str | None:
    """``"<size>:<mtime_ns>:<inode>"`` of a file, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def step_key(config: Any = None, files: Iterable[str] = (), **values: Any) -> dict:
    """The key of a step: its resolved ``config``, the identity of its input ``files``, other ``values``."""
    key: dict[str, Any] = {}
    if config is not None:
        key["config"] = config_digest(config)
    files = list(files)
    if files:
        key["files"] = {os.path.abspath(p): file_id(p) for p in files}
    key.update(values)
    return json.loads(json.dumps(key))


def read_key(out_dir: str, name: str) -> dict | None:
    """The key stored in a step's marker; None without a marker (or with one of another format)."""
    try:
        with open(marker_path(out_dir, name), encoding="utf-8") as f:
            key = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return key if isinstance(key, dict) else None


def _what_changed(old: dict, new: dict) -> str:
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        if k == "files" and isinstance(old.get(k), dict) and isinstance(new.get(k), dict):
            changed = [p for p in sorted(set(old[k]) | set(new[k])) if old[k].get(p, "") != new[k].get(p, "")]
            return f"input {changed[0]} changed" + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
        return "config changed" if k == "config" else f"{k} changed"
    return "inputs changed"


def is_done(out_dir: str, name: str, key: dict | None = None, force: bool = False) -> bool:
    """True when step ``name`` finished in ``out_dir`` with ``key`` (any key when None) and not ``force``.

    A finished step whose key differs is reported with one line saying what changed.
    """
    if force or not os.path.exists(marker_path(out_dir, name)):
        return False
    if key is None:
        return True
    old = read_key(out_dir, name)
    if old is None:
        logger.info("%s: %s finished before without an input key; redoing it", out_dir, name)
        return False
    if old != key:
        logger.info("%s: %s finished before with other inputs (%s); redoing it", out_dir, name, _what_changed(old, key))
        return False
    return True


def started_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.started")


def mark_started(out_dir: str, name: str, resume_key: dict) -> None:
    """Record the key that the resumable state of step ``name`` is being written with."""
    write_text(started_path(out_dir, name), json.dumps(resume_key, sort_keys=True) + "\n")


def resumable(out_dir: str, name: str, resume_key: dict, key: dict, force: bool = False) -> bool:
    """Whether the resumable state left in ``out_dir`` (checkpoints) may be continued by this run.

    ``resume_key``: the key of what the state depends on (a training run: its inputs and config
    but the step budget, so raising ``max_steps`` continues the run); ``key``: the step's full key.
    No when forced or when the state was started with another ``resume_key``; without a started
    record, no when a marker of another ``key`` says it is a finished run of other inputs.
    Call before ``clear``.
    """
    if force:
        return False
    try:
        with open(started_path(out_dir, name), encoding="utf-8") as f:
            return json.load(f) == resume_key
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        old = read_key(out_dir, name)
        return old is None or old == key


def mark_done(out_dir: str, name: str, key: dict) -> None:
    """Write the marker holding ``key`` (call last, when every output is in place)."""
    write_text(marker_path(out_dir, name), json.dumps(key, sort_keys=True) + "\n")


def clear(out_dir: str, name: str) -> None:
    """Remove the marker of a step that is about to be (re)done."""
    try:
        os.unlink(marker_path(out_dir, name))
    except FileNotFoundError:
        pass
