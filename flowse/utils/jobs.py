"""The one job runner: split work into ``nj`` jobs, run them, check them.

Backends (chosen by the ``cmd`` string, set in a recipe's ``cmd.sh``):
- ``local``: jobs run as concurrent subprocesses on this machine;
- ``slurm [srun options]``: each job runs through ``srun`` (e.g. ``slurm --mem 8G -p cpu``).
Each job writes ``<log_dir>/<name>.<JOB>.log``; a failed job raises an error
naming its log. The argv may contain the placeholder ``JOB`` (1-based), replaced where
it stands as a word (``log.JOB.txt``), not inside other names (``/data/JOBS``).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Sequence, TypeVar

T = TypeVar("T")
_JOB = re.compile(r"(?<![A-Za-z0-9])JOB(?![A-Za-z0-9])")  # JOB as a word, not inside names


def split_list(items: Sequence[T], nj: int) -> list[list[T]]:
    """Split into ``nj`` contiguous, near-equal parts (as Kaldi's split_scp.pl)."""
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    n = len(items)
    bounds = [round(i * n / nj) for i in range(nj + 1)]
    return [list(items[bounds[i] : bounds[i + 1]]) for i in range(nj)]


def run_jobs(argv: Sequence[str], nj: int, log_dir: str, name: str, cmd: str = "local", env: dict | None = None) -> None:
    """Run ``argv`` (with ``JOB`` replaced by 1..nj) as ``nj`` jobs and wait for all."""
    os.makedirs(log_dir, exist_ok=True)
    backend, *opts = shlex.split(cmd) or ["local"]
    if backend not in ("local", "slurm"):
        raise ValueError(f"unknown job backend {backend!r}; choose 'local' or 'slurm [srun options]'")
    procs = []
    for j in range(1, nj + 1):
        job_argv = [_JOB.sub(str(j), a) for a in argv]
        if backend == "slurm":
            job_argv = ["srun", "--ntasks=1", f"--job-name={name}.{j}", *opts, *job_argv]
        log_path = os.path.join(log_dir, f"{name}.{j}.log")
        log = open(log_path, "w")
        log.write("# " + shlex.join(job_argv) + "\n")
        log.flush()
        procs.append((j, log_path, log, subprocess.Popen(job_argv, stdout=log, stderr=subprocess.STDOUT, env=env)))
    failed = []
    for j, log_path, log, p in procs:
        rc = p.wait()
        log.close()
        if rc != 0:
            failed.append((j, rc, log_path))
    if failed:
        details = "; ".join(f"job {j} exit {rc}, see {path}" for j, rc, path in failed)
        tail = ""
        with open(failed[0][2], errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{len(failed)}/{nj} {name} jobs failed: {details}\n--- tail of {failed[0][2]} ---\n{tail}")


def python_module_argv(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
