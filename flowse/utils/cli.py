"""The entry of every command: ``if __name__ == "__main__": run(main)``.

A user's mistake ends the command with one line on stderr, ``<command>: error: <message>``,
and exit status 2 (as argparse's usage errors): a bad config key or value
(``ConfigError``), a missing file or model dir (``FileNotFoundError``), unusable audio
(``AudioError``) or a ``UserError``. Anything else is a bug and keeps its traceback.
``main`` returns the exit status (None counts as 0).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn

from flowse.features.audio import AudioError
from flowse.utils.config import ConfigError
from flowse.utils.errors import UserError

USER_ERRORS = (ConfigError, FileNotFoundError, AudioError, UserError)
EXIT_USER_ERROR = 2


def command_name() -> str:
    """``python -m flowse.bin.score`` -> ``flowse.bin.score``; a console script -> its file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0])


def one_line(err: BaseException) -> str:
    """The error's message on one line (yaml parse errors, for one, span several)."""
    return " ".join((str(err) or type(err).__name__).split())


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main()`` and exit with its status; user errors exit with one line (see the module doc)."""
    try:
        status = main()
    except USER_ERRORS as err:
        print(f"{command_name()}: error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    sys.exit(status or 0)


def boolean(value: str) -> bool:
    """argparse type of the recipe's ``--force true|false`` style flags."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_job_options(parser: argparse.ArgumentParser, nj_help: str = "parallel jobs") -> None:
    """``--nj``, ``--cmd`` (job backend) and ``--force`` of every command that runs split jobs."""
    parser.add_argument("--nj", type=int, default=1, help=nj_help)
    parser.add_argument("--cmd", default="local", help="job backend: local | 'slurm <srun options>'")
    add_force_option(parser)


def add_force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", type=boolean, default=False, help="redo steps even when done (true|false)")
