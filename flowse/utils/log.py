"""The one logger setup of the toolkit (ESPnet-like format: time, place, level)."""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def setup_logging(log_file: str | None = None, level: str = "INFO", rank: int | None = None) -> logging.Logger:
    """Configure the root logger once per process.

    Only rank 0 of a distributed job logs at INFO; other ranks log warnings and errors.
    """
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level if rank == 0 else "WARNING")
    fmt = logging.Formatter(FORMAT if rank == 0 else f"[rank{rank}] " + FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file and rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    return root


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
