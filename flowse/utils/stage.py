"""Completion markers: a finished step writes ``<dir>/.<name>.done`` last, atomically.

A rerun skips a step whose marker exists unless forced; a step killed midway has
no marker and is redone from its own resumable state.
"""
from __future__ import annotations

import os
import time

from flowse.utils.fileio import write_text


def marker_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.done")


def is_done(out_dir: str, name: str) -> bool:
    return os.path.exists(marker_path(out_dir, name))


def mark_done(out_dir: str, name: str) -> None:
    write_text(marker_path(out_dir, name), time.strftime("%Y-%m-%d %H:%M:%S\n"))


def clear(out_dir: str, name: str) -> None:
    try:
        os.unlink(marker_path(out_dir, name))
    except FileNotFoundError:
        pass
