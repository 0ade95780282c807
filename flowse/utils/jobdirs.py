"""Resumable split jobs: items split into ``nj`` job dirs, each run by a named worker function.

``run_split`` writes ``<work_dir>/split<nj>/<k>/job.json`` (the worker, a shared context
and the job's items), runs ``python -m flowse.utils.jobdirs <job dir>`` for every job
through ``flowse.utils.jobs.run_jobs`` and returns the job dirs in order (``run_splits``
does the same for several work dirs at once). A worker is named ``"module:function"``
and called as ``function(job_dir, context, items)``; it writes its outputs into its job
dir. The job's completion marker (``flowse.utils.stage``, keyed on ``job.json``) is
written last; a rerun skips finished jobs whose ``job.json`` is unchanged, and a job that
was killed is redone from scratch (its partial files are removed first). So a stage
killed at any point and rerun ends with complete outputs, and only unfinished jobs are redone.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import time
from typing import Any, Callable, Sequence

from flowse.utils import stage
from flowse.utils.fileio import write_json
from flowse.utils.jobs import python_module_argv, run_jobs, split_list
from flowse.utils.log import get_logger, setup_logging

logger = get_logger(__name__)

JOB_FILE = "job.json"
DONE = "job"
ENTRY = "flowse.utils.jobdirs"  # the worker process: python -m ENTRY <job dirs>


def resolve_worker(worker: str) -> Callable[[str, dict, list], Any]:
    """The function named ``"module:function"``; a ValueError names a worker that does not resolve."""
    module, _, func = worker.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func, None) if module and func else None
    except ImportError as e:
        raise ValueError(f"unknown job worker {worker!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"unknown job worker {worker!r}; name it as 'module:function'")
    return fn


def _read_job(job_dir: str) -> dict | None:
    try:
        with open(os.path.join(job_dir, JOB_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _job_key(job: dict) -> dict:
    return stage.step_key(job=job)


def prepare_split(worker: str, items: Sequence[Any], context: dict, work_dir: str, nj: int) -> list[str]:
    """Write ``nj`` job dirs for ``items`` (some may be empty); stale job dirs and other splits are removed."""
    resolve_worker(worker)
    split_dir = os.path.join(work_dir, f"split{nj}")
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            if name.startswith("split") and name != f"split{nj}":
                shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)
    job_dirs = []
    for k, part in enumerate(split_list(list(items), nj), 1):
        job_dir = os.path.join(split_dir, str(k))
        payload = {"worker": worker, "context": context, "items": part}
        if _read_job(job_dir) != json.loads(json.dumps(payload)):
            shutil.rmtree(job_dir, ignore_errors=True)
            os.makedirs(job_dir)
            write_json(os.path.join(job_dir, JOB_FILE), payload)
        job_dirs.append(job_dir)
    return job_dirs


def _finished(job_dir: str) -> bool:
    job = _read_job(job_dir)
    return job is not None and stage.is_done(job_dir, DONE, _job_key(job))


def run_splits(
    splits: Sequence[tuple[str, Sequence[Any], dict, str]], nj: int, log_dir: str, name: str, cmd: str = "local",
    env: dict | None = None,
) -> list[list[str]]:
    """Run several ``(worker, items, context, work_dir)`` splits with one set of ``nj`` processes.

    Job ``k`` works through the ``k``-th job dir of every split in turn, so each process pays
    its imports (e.g. torch) once for all splits. ``env``: the jobs' environment (default:
    this one). Returns the job dirs per split.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    all_dirs = [prepare_split(worker, items, ctx, wd, nj) for worker, items, ctx, wd in splits]
    flat = [d for dirs in all_dirs for d in dirs]
    todo = [d for d in flat if not _finished(d)]
    if len(todo) < len(flat):
        logger.info(f"{name}: {len(flat) - len(todo)}/{len(flat)} jobs already finished")
    if todo:
        argv = python_module_argv(ENTRY, *[os.path.join(os.path.dirname(dirs[0]), "JOB") for dirs in all_dirs])
        run_jobs(argv, nj, log_dir, name, cmd, env=env)
    missing = [d for d in flat if not _finished(d)]
    if missing:
        raise RuntimeError(f"{name} jobs finished without their done marker: {missing}")
    return all_dirs


def run_split(
    worker: str, items: Sequence[Any], context: dict, work_dir: str, nj: int, cmd: str = "local",
    name: str | None = None,
) -> list[str]:
    """Prepare and run the split jobs of one worker (see the module doc); returns the finished job dirs."""
    name = name or worker.rpartition(":")[2]
    return run_splits([(worker, items, context, work_dir)], nj, os.path.join(work_dir, "log"), name, cmd)[0]


def run_job(job_dir: str) -> None:
    """Worker entry: run one job dir unless it is already finished."""
    job = _read_job(job_dir)
    if job is None:
        raise FileNotFoundError(f"{job_dir}: no readable {JOB_FILE}")
    key = _job_key(job)
    if stage.is_done(job_dir, DONE, key):
        logger.info(f"{job_dir}: already finished, skipping")
        return
    for name in os.listdir(job_dir):
        if name != JOB_FILE:
            path = os.path.join(job_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    fn = resolve_worker(job["worker"])
    start = time.time()
    fn(job_dir, job["context"], job["items"])
    stage.mark_done(job_dir, DONE, key)
    logger.info(f"{job_dir}: {job['worker']} of {len(job['items'])} items done in {time.time() - start:.1f} s")


def read_job_json(job_dirs: Sequence[str], name: str) -> list[Any]:
    """Concatenate the json list ``name`` written by each job (in job order)."""
    out: list[Any] = []
    for d in job_dirs:
        with open(os.path.join(d, name), encoding="utf-8") as f:
            out.extend(json.load(f))
    return out


def key_rng(seed: int, *keys: str | int) -> "np.random.Generator":
    """A generator determined by ``seed`` and ``keys`` only (not by job split or order)."""
    import zlib

    import numpy as np

    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def main(argv: list[str] | None = None) -> None:
    """``python -m flowse.utils.jobdirs <job_dir> [<job_dir> ...]``: one process of a split (job dirs in turn)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("job_dirs", nargs="+", help="split job dirs, each containing job.json")
    args = parser.parse_args(argv)
    setup_logging()
    for job_dir in args.job_dirs:
        run_job(job_dir)


if __name__ == "__main__":
    main()
