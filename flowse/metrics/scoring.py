"""Scoring of audio lists (``wav.scp`` or folders) into Kaldi-style per-metric files.

Output of a scoring dir ``D``: one file per metric (``D/SIG``, ``D/OVRL``, ``D/PESQ``...,
``<utt> <value>`` in C order, ``nan`` where the metric is undefined for that utt) and
``D/summary.json``::

    {"num_utts": 150, "num_scored": 149, "num_skipped": 1,
     "skipped": {"utt7": "cannot read audio (...)"},
     "metrics": {"OVRL": {"mean": 3.21, "count": 149, "num_undefined": 0, "undefined": {}},
                 "SBS": {"mean": null, "count": 0, "status": "n/a", "hint": "..."}, ...},
     "est": "...", "ref": "..."}

Means are over the defined (finite) values; ``count`` says how many. An output declared
``pooled_by`` (WER, CER) also has ``pooled``: the corpus-level rate (total edits / total
reference words or characters), where ``mean`` is the per-utterance mean. Metrics that
need reference transcripts (WER) read them from a Kaldi ``text`` file (``<utt> <words>``,
``text=``); without one they are n/a with a hint. Every metric
takes 16 kHz audio (``METRIC_RATE``): other rates are resampled on reading. What is
skipped (one log line each, listed in the summary): unreadable audio, empty, NaN
or Inf samples, not mono, shorter than ``min_seconds`` (default 0.5 s), a reference
that cannot be used. Scored with a warning: all-zero (silent) audio, samples beyond
[-1, 1] (clipped), other sample rates (resampled), estimate and reference of
different lengths (PESQ/ESTOI/SI-SDR compare them trimmed to the shorter).

``score_set`` does the whole job of the scoring CLI (and of stage 6), in ``nj``
parallel jobs when asked (``flowse.utils.jobdirs``, worker ``score_job``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os

import numpy as np

from flowse.data.datadir import read_sample_rate
from flowse.data.kaldi import load_entry
from flowse.features.audio import AudioError, read_audio
from flowse.metrics.config import ScoreConfig
from flowse.metrics.outcome import ScoreOutcome, merge_outcomes, read_outcome, write_outcome
from flowse.metrics.registry import METRIC_RATE, expand_metrics, needs_ref
from flowse.metrics.suite import MetricSuite, sanitize
from flowse.utils import stage
from flowse.utils.config import load_config, save_config
from flowse.utils.errors import UserError
from flowse.utils.fileio import c_sorted, read_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")


def audio_list(spec: str) -> dict[str, str]:
    """``wav.scp`` -> its entries; a folder -> ``{file basename without extension: path}``."""
    if os.path.isdir(spec):
        out: dict[str, str] = {}
        for name in sorted(os.listdir(spec)):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in AUDIO_EXTS:
                continue
            if stem in out:
                raise ValueError(f"{spec}: two audio files share the utterance id {stem!r}")
            out[stem] = os.path.join(spec, name)
        if not out:
            raise ValueError(f"{spec}: no audio files ({', '.join(AUDIO_EXTS)})")
        return out
    if os.path.isfile(spec):
        out = read_kv(spec)
        if not out:
            raise ValueError(f"{spec}: empty list")
        return out
    raise FileNotFoundError(f"no such scp file or folder: {spec}")


def list_rate(spec: str) -> int:
    """Rate of the float ark audio of a ``wav.scp`` (its data dir's ``sample_rate``); folders hold files."""
    return read_sample_rate(os.path.dirname(os.path.abspath(spec))) if os.path.isfile(spec) else METRIC_RATE


def load_wave(value: str, name: str, stored_rate: int = METRIC_RATE) -> tuple[np.ndarray, int]:
    """Audio of one list entry at ``METRIC_RATE`` (16 kHz), and the rate it had before resampling.

    ``stored_rate``: the rate of float ark vectors (which carry none); files carry their own.
    """
    if os.path.isfile(value):
        import soundfile as sf

        try:
            rate = sf.info(value).samplerate
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{value}: cannot read audio ({e})") from None
        return read_audio(value, sr=METRIC_RATE, check=False), rate
    return load_entry(value, name, sr=METRIC_RATE, stored_sr=stored_rate), stored_rate


def unusable(wav: np.ndarray, min_seconds: float) -> str | None:
    """Why a waveform cannot be scored, or None."""
    if wav.ndim != 1:
        return f"not a mono waveform (shape {wav.shape})"
    if wav.size == 0:
        return "empty audio"
    if not np.all(np.isfinite(wav)):
        return "NaN or Inf samples"
    if wav.size < min_seconds * METRIC_RATE:
        return f"too short ({wav.size / METRIC_RATE:.3f} s < {min_seconds} s)"
    return None


class _Notes:
    """Conditions reported once per run (with a count and an example) instead of per utterance."""

    def __init__(self):
        self.items: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self.items.setdefault(kind, []).append(example)

    def log(self) -> None:
        for kind, ex in self.items.items():
            logger.warning("%d utterance(s): %s (e.g. %s)", len(ex), kind, ex[0])


def score_keys(
    keys: list[str],
    est: dict[str, str],
    ref: dict[str, str] | None,
    suite: MetricSuite,
    batch_size: int = 16,
    min_seconds: float = 0.5,
    progress: bool = True,
    est_rate: int = METRIC_RATE,
    ref_rate: int = METRIC_RATE,
    text: dict[str, str] | None = None,
) -> ScoreOutcome:
    """Score ``keys`` (utt ids of ``est``; ``ref`` has the same ids) with ``suite``'s metrics.

    ``est_rate`` / ``ref_rate``: rate of the float ark entries of each list (see ``load_wave``).
    ``text``: reference transcripts by utt id, for the metrics that need them (an utt without one
    gets NaN there).
    """
    from tqdm import tqdm

    out = ScoreOutcome(metrics=list(suite.metrics), keys=list(keys), unavailable=dict(suite.unavailable))
    for m in out.metrics:
        out.values[m] = {}
    notes = _Notes()
    bar = tqdm(total=len(keys), desc="scoring", unit="utt", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(keys), batch_size):
        names, est_w, ref_w = [], [], []
        for key in keys[start : start + batch_size]:
            try:
                e, rate = load_wave(est[key], f"{key} (estimate)", est_rate)
                if rate != METRIC_RATE:
                    notes.add(f"not at {METRIC_RATE} Hz, resampled", f"{key} at {rate} Hz")
                why = unusable(e, min_seconds)
                if why:
                    raise AudioError(why)
                r = None
                if ref is not None:
                    r, rate = load_wave(ref[key], f"{key} (reference)", ref_rate)
                    if rate != METRIC_RATE:
                        notes.add(f"reference not at {METRIC_RATE} Hz, resampled", f"{key} at {rate} Hz")
                    why = unusable(r, min_seconds)
                    if why:
                        raise AudioError(f"reference: {why}")
            except AudioError as err:
                reason = str(err)
                logger.warning("skipped %s: %s", key, reason)
                out.skipped[key] = reason
                continue
            if sanitize(e)[1]:
                notes.add("estimate has samples beyond [-1, 1], clipped", key)
            if r is not None and sanitize(r)[1]:
                notes.add("reference has samples beyond [-1, 1], clipped", key)
            if not np.any(e):
                logger.warning("%s: the estimate is all zeros (silence); scored as such", key)
            if r is not None and not np.any(r):
                logger.warning("%s: the reference is all zeros (silence); intrusive metrics are undefined", key)
            names.append(key)
            est_w.append(e)
            ref_w.append(r)
        if names:
            texts = [text.get(k) for k in names] if text is not None else None
            res = suite.compute(est_w, ref_w if ref is not None else None, texts=texts)
            for i, j_est, j_ref in res.trimmed:
                notes.add(
                    "estimate and reference lengths differ; PESQ/ESTOI/SI-SDR use both trimmed to the shorter",
                    f"{names[i]}: {j_est} vs {j_ref} samples",
                )
            for m, vals in res.values.items():
                for k, v in zip(names, vals):
                    out.values[m][k] = float(v)
            for m, items in res.undefined.items():
                for i, reason in items:
                    logger.warning("%s undefined for %s: %s (NaN, excluded from the mean)", m, names[i], reason)
                    out.undefined.setdefault(m, {})[names[i]] = reason
        bar.update(len(keys[start : start + batch_size]))
    bar.close()
    notes.log()
    return out


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclasses.dataclass
class ScoreList:
    """One list to score: estimates ``est`` into ``out_dir``, against ``ref`` (or None), with the
    transcripts ``text`` (or None), only ``keys`` (or all)."""

    est: str
    out_dir: str
    ref: str | None = None
    text: str | None = None
    keys: list[str] | None = None


def score_set(
    est: str,
    out_dir: str,
    ref: str | None = None,
    config: ScoreConfig | None = None,
    metrics: list[str] | str | None = None,
    keys: list[str] | None = None,
    nj: int = 1,
    cmd: str = "local",
    device: str = "cpu",
    threads: int = 0,
    progress: bool = True,
    force: bool = False,
    text: str | None = None,
) -> dict:
    """Score one list into ``out_dir`` (per-metric files, ``summary.json``, ``config.yaml``); returns the summary.

    ``est`` / ``ref``: a ``wav.scp`` or a folder of audio files (see ``audio_list``); without
    ``ref`` only the metrics that need no reference are computed. ``config``: the resolved
    score.yaml (default ``ScoreConfig()``); ``metrics`` (groups or names, e.g. ``"dnsmos,spk"``)
    replaces ``config.metrics``. ``keys``: score only these utt ids of ``est``. ``nj`` > 1:
    parallel jobs through ``flowse.utils.jobdirs`` (``cmd``: ``local`` or ``slurm <srun options>``),
    merged into the same files. ``device``: ``cpu`` or ``cuda[:N]``. ``threads`` per job (0: cores
    / nj). A dir finished with the same config and inputs is skipped (its summary returned)
    unless ``force``. A ``UserError`` names estimates without a reference and unknown ``keys``.
    ``text``: a Kaldi text file of reference transcripts (``<utt> <words>``) for WER/CER; None:
    those are n/a.
    """
    return score_sets([ScoreList(est, out_dir, ref, text, keys)], config, metrics, nj, cmd, device, threads,
                      progress, force)[0]


def score_sets(
    lists: list[ScoreList], config: ScoreConfig | None = None, metrics: list[str] | str | None = None, nj: int = 1,
    cmd: str = "local", device: str = "cpu", threads: int = 0, progress: bool = True, force: bool = False,
) -> list[dict]:
    """``score_set`` of several lists (e.g. the test sets of one system) with ONE set of ``nj`` jobs,
    so each job pays its imports and model loading once; returns the summaries in order."""
    cfg = copy.deepcopy(config or ScoreConfig())
    if metrics:
        cfg.metrics = [m for m in metrics.replace(",", " ").split() if m] if isinstance(metrics, str) else list(metrics)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device {device} but no CUDA device is available")
    summaries: list[dict | None] = [None] * len(lists)
    pending = []  # (index, list, metric names, step key, todo keys)
    for i, job in enumerate(lists):
        names = expand_metrics(cfg.metrics)
        if job.ref is None and any(needs_ref(m) for m in names):
            logger.info("no reference: scoring the non-intrusive metrics only (%s dropped)",
                        " ".join(m for m in names if needs_ref(m)))
            names = [m for m in names if not needs_ref(m)]
        if not names:
            raise UserError("no metric left to compute")
        if job.text is not None and not os.path.isfile(job.text):
            raise UserError(f"no transcript file {job.text} (a Kaldi text file '<utt> <words>')")
        key = stage.step_key(config=cfg, files=[p for p in (job.est, job.ref, job.text) if p], keys=job.keys,
                             metrics=names)
        if stage.is_done(job.out_dir, "score", key, force):
            logger.info("%s already scored (pass force / --force true to redo)", job.out_dir)
            with open(os.path.join(job.out_dir, "summary.json"), encoding="utf-8") as f:
                summaries[i] = json.load(f)
            continue
        pending.append((i, job, names, key, _todo(job)))
    if not pending:
        return summaries
    nj = max(1, min(nj, max(len(p[4]) for p in pending)))
    threads = threads or max(1, _cpu_count() // nj)
    for _, job, _, _, _ in pending:
        stage.clear(job.out_dir, "score")
        os.makedirs(job.out_dir, exist_ok=True)
        save_config(cfg, os.path.join(job.out_dir, "config.yaml"))
    if nj > 1:
        contexts = [{"est": job.est, "ref": job.ref, "config": dataclasses.asdict(cfg), "metrics": names,
                     "device": device, "threads": threads, "text": job.text} for _, job, names, _, _ in pending]
        outs = _score_parallel([(job.out_dir, todo, ctx) for (_, job, _, _, todo), ctx in zip(pending, contexts)],
                               nj, cmd)
    else:
        outs = [write_outcome(job.out_dir, _score_here(job.est, job.ref, audio_list(job.est),
                                                       audio_list(job.ref) if job.ref else None, todo, cfg, names,
                                                       device, threads, progress, job.text), job.est, job.ref)
                for _, job, names, _, todo in pending]
    for (i, job, _, key, _), summary in zip(pending, outs):
        _log_summary(job.out_dir, summary)
        stage.mark_done(job.out_dir, "score", key)
        summaries[i] = summary
    return summaries


def _todo(job: ScoreList) -> list[str]:
    """The utt ids of ``job`` to score (sorted); a ``UserError`` names unknown keys and missing references."""
    est_list = audio_list(job.est)
    ref_list = audio_list(job.ref) if job.ref else None
    todo = c_sorted(est_list)
    if job.keys is not None:
        unknown = [k for k in job.keys if k not in est_list]
        if unknown:
            raise UserError(f"{len(unknown)} keys are not in {job.est}: {unknown[:5]}")
        todo = c_sorted(job.keys)
    if ref_list is not None:
        missing = [k for k in todo if k not in ref_list]
        if missing:
            raise UserError(
                f"{len(missing)} utterances of {job.est} have no reference in {job.ref}: "
                f"{' '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
            )
    return todo


def _score_here(est, ref, est_list, ref_list, keys, cfg: ScoreConfig, names, device, threads, progress,
                text: str | None = None) -> ScoreOutcome:
    import torch

    torch.set_num_threads(threads)
    for f in dataclasses.fields(cfg.models):  # a metric section's ``threads: 0`` means this job's share
        section = getattr(cfg.models, f.name)
        if getattr(section, "threads", None) == 0:
            section.threads = threads
    suite = _suite(names, cfg.models, device, text is not None)
    transcripts = read_kv(text, allow_empty_value=True) if text is not None else None
    return score_keys(keys, est_list, ref_list, suite, cfg.batch_size, cfg.min_seconds, progress,
                      list_rate(est), list_rate(ref) if ref else METRIC_RATE, transcripts)


_SUITES: dict[str, MetricSuite] = {}


def _suite(names, models, device: str, with_text: bool) -> MetricSuite:
    """The metric models of this process, loaded once for every list a job scores with the same settings."""
    key = json.dumps([list(names), dataclasses.asdict(models), device, with_text], sort_keys=True, default=str)
    if key not in _SUITES:
        _SUITES.clear()
        _SUITES[key] = MetricSuite(names, models, device, with_text=with_text)
    return _SUITES[key]


def _score_parallel(lists: list[tuple[str, list[str], dict]], nj: int, cmd: str) -> list[dict]:
    """``(out_dir, keys, job context)`` per list -> their merged summaries, all lists in one set of ``nj`` jobs."""
    from flowse.utils.jobdirs import run_splits

    log_dir = os.path.join(lists[0][0], "log")
    logger.info("scoring %s utterances in %d jobs (logs: %s/score.*.log)", "+".join(str(len(k)) for _, k, _ in lists),
                nj, log_dir)
    import flowse

    root = os.path.dirname(os.path.dirname(os.path.abspath(flowse.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    all_dirs = run_splits([(f"{__name__}:score_job", keys, ctx, out_dir) for out_dir, keys, ctx in lists], nj,
                          log_dir, "score", cmd, env=env)
    return [write_outcome(out_dir, merge_outcomes([read_outcome(d) for d in dirs], keys), ctx["est"], ctx["ref"])
            for (out_dir, keys, ctx), dirs in zip(lists, all_dirs)]


def score_job(job_dir: str, context: dict, keys: list[str]) -> None:
    """Worker of one parallel scoring job (``flowse.utils.jobdirs``): scores ``keys`` into ``job_dir``."""
    cfg = load_config(ScoreConfig, overrides=context["config"])
    est, ref = context["est"], context["ref"]
    est_list = audio_list(est)
    ref_list = audio_list(ref) if ref else None
    out = _score_here(est, ref, est_list, ref_list, c_sorted(keys), cfg, context["metrics"], context["device"],
                      context["threads"], False, context.get("text"))
    write_outcome(job_dir, out, est, ref)


def _log_summary(out_dir: str, summary: dict) -> None:
    means = " ".join(f"{m}={v['mean']:.4f}" + (f" (pooled {v['pooled']:.4f})" if v.get("pooled") is not None else "")
                     for m, v in summary["metrics"].items() if v["mean"] is not None)
    logger.info("%s: %d/%d scored: %s", out_dir, summary["num_scored"], summary["num_utts"], means)
    for v in summary["metrics"].values():
        if v.get("status") == "n/a":
            logger.info("%s", v["hint"])
    if summary["num_skipped"]:
        logger.warning("%d utterance(s) skipped, listed in %s/summary.json", summary["num_skipped"], out_dir)
