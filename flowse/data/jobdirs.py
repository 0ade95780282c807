"""Resumable split jobs for the data stages (synthesis, simulation, mel dumping).

``run_split`` writes ``<work_dir>/split<nj>/<k>/job.json`` (the worker kind, a
shared context and the job's items), runs ``python -m flowse.bin.data_job
<job dir>`` for every job through ``flowse.utils.jobs.run_jobs`` and returns the
job dirs in order (``run_splits`` does the same for several work dirs at once). A job writes its outputs into its own dir and the marker
``.job.done`` last; a rerun skips finished jobs whose ``job.json`` is unchanged,
and a job that was killed is redone from scratch (its partial files are removed
first). So a stage killed at any point and rerun ends with complete outputs,
and only unfinished jobs are redone.

A worker kind is registered in ``WORKERS`` as ``"module:function"``; the
function is called as ``fn(job_dir, context, items)``.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from typing import Any, Sequence

from flowse.utils import stage
from flowse.utils.fileio import write_json
from flowse.utils.jobs import python_module_argv, run_jobs, split_list
from flowse.utils.log import get_logger

logger = get_logger(__name__)

WORKERS = {
    "synth_speech": "flowse.data.corpus_mini:synth_speech_job",
    "synth_noise_rir": "flowse.data.corpus_mini:synth_noise_rir_job",
    "simulate": "flowse.data.simulate:simulate_job",
    "dump_mel": "flowse.data.dump:dump_job",
}
JOB_FILE = "job.json"
DONE = "job"


def _read_job(job_dir: str) -> dict | None:
    try:
        with open(os.path.join(job_dir, JOB_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def prepare_split(kind: str, items: Sequence[Any], context: dict, work_dir: str, nj: int) -> list[str]:
    """Write ``nj`` job dirs for ``items`` (some may be empty); stale job dirs and other splits are removed."""
    if kind not in WORKERS:
        raise ValueError(f"unknown job kind {kind!r}; known: {sorted(WORKERS)}")
    split_dir = os.path.join(work_dir, f"split{nj}")
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            if name.startswith("split") and name != f"split{nj}":
                shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)
    job_dirs = []
    for k, part in enumerate(split_list(list(items), nj), 1):
        job_dir = os.path.join(split_dir, str(k))
        payload = {"kind": kind, "context": context, "items": part}
        if _read_job(job_dir) != json.loads(json.dumps(payload)):
            shutil.rmtree(job_dir, ignore_errors=True)
            os.makedirs(job_dir)
            write_json(os.path.join(job_dir, JOB_FILE), payload)
        job_dirs.append(job_dir)
    return job_dirs


def run_splits(
    splits: Sequence[tuple[str, Sequence[Any], dict, str]], nj: int, log_dir: str, name: str, cmd: str = "local"
) -> list[list[str]]:
    """Run several ``(kind, items, context, work_dir)`` splits with one set of ``nj`` processes.

    Job ``k`` works through the ``k``-th job dir of every split in turn, so each
    process pays its imports (e.g. torch) once for all sets. Returns the job dirs per split.
    """
    if nj < 1:
        raise ValueError(f"nj must be >= 1, got {nj}")
    all_dirs = [prepare_split(kind, items, ctx, wd, nj) for kind, items, ctx, wd in splits]
    flat = [d for dirs in all_dirs for d in dirs]
    todo = [d for d in flat if not stage.is_done(d, DONE)]
    if len(todo) < len(flat):
        logger.info(f"{name}: {len(flat) - len(todo)}/{len(flat)} jobs already finished")
    if todo:
        argv = python_module_argv("flowse.bin.data_job", *[os.path.join(os.path.dirname(dirs[0]), "JOB") for dirs in all_dirs])
        run_jobs(argv, nj, log_dir, name, cmd)
    missing = [d for d in flat if not stage.is_done(d, DONE)]
    if missing:
        raise RuntimeError(f"{name} jobs finished without their done marker: {missing}")
    return all_dirs


def run_split(
    kind: str, items: Sequence[Any], context: dict, work_dir: str, nj: int, cmd: str = "local", name: str | None = None
) -> list[str]:
    """Prepare and run the split jobs of one ``kind`` (see the module doc); returns the finished job dirs."""
    return run_splits([(kind, items, context, work_dir)], nj, os.path.join(work_dir, "log"), name or kind, cmd)[0]


def run_job(job_dir: str) -> None:
    """Worker entry: run one job dir unless it is already finished."""
    if stage.is_done(job_dir, DONE):
        logger.info(f"{job_dir}: already finished, skipping")
        return
    job = _read_job(job_dir)
    if job is None:
        raise FileNotFoundError(f"{job_dir}: no readable {JOB_FILE}")
    for name in os.listdir(job_dir):
        if name != JOB_FILE:
            path = os.path.join(job_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    module, func = WORKERS[job["kind"]].split(":")
    start = time.time()
    getattr(importlib.import_module(module), func)(job_dir, job["context"], job["items"])
    stage.mark_done(job_dir, DONE)
    logger.info(f"{job_dir}: {job['kind']} of {len(job['items'])} items done in {time.time() - start:.1f} s")


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


def _inputs_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.inputs.json")


def stage_up_to_date(out_dir: str, name: str, inputs: dict, force: bool) -> bool:
    """True when step ``name`` finished in ``out_dir`` with the same ``inputs`` (config, paths) and not ``force``.

    A finished step whose inputs changed (e.g. an edited yaml) is redone, with a log line saying so.
    """
    if force or not stage.is_done(out_dir, name):
        return False
    try:
        with open(_inputs_path(out_dir, name), encoding="utf-8") as f:
            old = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        old = None
    if old != json.loads(json.dumps(inputs)):
        logger.warning(f"{out_dir}: {name} finished before with other inputs (config changed), redoing it")
        return False
    return True


def stage_start(out_dir: str, name: str) -> None:
    """Clear the marker of a step that is about to be (re)done."""
    stage.clear(out_dir, name)


def stage_finish(out_dir: str, name: str, inputs: dict) -> None:
    """Record the inputs, then write the done marker (last)."""
    write_json(_inputs_path(out_dir, name), inputs)
    stage.mark_done(out_dir, name)


def file_md5(path: str) -> str | None:
    """md5 of a file's content (None when it does not exist): stage inputs that are lists."""
    import hashlib

    if not os.path.exists(path):
        return None
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
