"""Stage 2: log-mel features of the data dirs (``flowse.features.mel.LogMel``), written as Kaldi ark/scp.

Per set ``<dump_dir>/<set>/``: ``feats.scp`` (noisy ``wav.scp``), ``spk1_feats.scp``
(clean ``spk1.scp``; absent when the set has no reference), ``utt2num_frames``
(``len(wav) // hop``), and for the statistics sets ``stats.json`` =
``{"feats": {"mean": [n_mels], "std": [n_mels], "frames": N}, "spk1_feats": {...}}``
over all frames. Features are float32 ``[frames, n_mels]`` at the mel config's
``sample_rate``: audio stored at another rate (the data dir's ``sample_rate``, or an
audio file's own) is resampled to it first, so ``frames == n_samples_at_mel_rate // hop``.
Utterances whose audio is unusable or shorter than one hop are skipped with a warning naming them.
"""
from __future__ import annotations

import json
import os

import numpy as np

from flowse.features.audio import AudioError
from flowse.data.datadir import read_sample_rate
from flowse.data.kaldi import ark_writers, load_audio
from flowse.utils import jobdirs
from flowse.utils.fileio import c_sorted, check_same_keys, read_kv, write_json, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

STEP = "dump_mel"
WORKER = "flowse.data.dump:dump_job"
STREAMS = {"feats": "wav", "spk1_feats": "spk1"}  # feature stream -> data-dir scp (without .scp)


def plan_dump(set_dir: str) -> tuple[list[dict], bool]:
    """Items ``{"utt", "wav", "spk1"?}`` of a data dir and whether it has ``spk1.scp``."""
    wav_scp = os.path.join(set_dir, "wav.scp")
    if not os.path.exists(wav_scp):
        raise FileNotFoundError(f"{wav_scp} not found (run stage 1, or stage 0 for official test sets)")
    wav = read_kv(wav_scp)
    spk1_scp = os.path.join(set_dir, "spk1.scp")
    spk1 = read_kv(spk1_scp) if os.path.exists(spk1_scp) else None
    if spk1 is not None:
        check_same_keys({wav_scp: wav, spk1_scp: spk1})
    if not wav:
        raise ValueError(f"{wav_scp} is empty")
    items = [{"utt": k, "wav": wav[k], **({"spk1": spk1[k]} if spk1 is not None else {})} for k in c_sorted(wav)]
    return items, spk1 is not None


def dump_job(job_dir: str, ctx: dict, items: list[dict]) -> None:
    """Worker: log-mel of ``items`` into ``feats``/``spk1_feats`` arks, ``meta.json`` and partial ``stats.json``."""
    import torch

    from flowse.features.mel import LogMel, MelConfig

    torch.set_num_threads(1)
    mel = LogMel(MelConfig(**ctx["mel"]))
    hop, sr = mel.cfg.hop_length, mel.cfg.sample_rate
    streams = [s for s in STREAMS if s == "feats" or ctx["has_spk1"]]
    acc = {s: {"sum": np.zeros(mel.cfg.n_mels), "sumsq": np.zeros(mel.cfg.n_mels), "frames": 0} for s in streams}
    meta = []
    with ark_writers(job_dir, streams) as writers:
        for it in items:
            utt = it["utt"]
            try:
                audio = {s: load_audio(it[STREAMS[s]], f"{utt} ({it[STREAMS[s]]})", 0.0, sr, ctx["data_rate"])
                         for s in streams}
            except AudioError as e:
                logger.warning(f"skipping utterance {utt}: {e}")
                meta.append({"utt": utt, "skipped": str(e)})
                continue
            n = min(len(a) for a in audio.values())
            if len({len(a) for a in audio.values()}) > 1:
                logger.warning(f"{utt}: noisy and clean lengths differ ({[len(a) for a in audio.values()]} samples); cut to {n}")
            if n // hop == 0:
                logger.warning(f"skipping utterance {utt}: {n} samples, shorter than one hop ({hop})")
                meta.append({"utt": utt, "skipped": "shorter than one hop"})
                continue
            with torch.no_grad():
                feats = {s: mel(torch.from_numpy(np.ascontiguousarray(a[:n]))).numpy() for s, a in audio.items()}
            for s, f in feats.items():
                writers[s][utt] = f
                if ctx["stats"]:
                    f64 = f.astype(np.float64)
                    acc[s]["sum"] += f64.sum(0)
                    acc[s]["sumsq"] += np.square(f64).sum(0)
                    acc[s]["frames"] += f.shape[0]
            meta.append({"utt": utt, "frames": int(feats["feats"].shape[0])})
    write_json(os.path.join(job_dir, "meta.json"), meta)
    if ctx["stats"]:
        write_json(os.path.join(job_dir, "stats.json"), {s: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in a.items()} for s, a in acc.items()})


def merge_dump(job_dirs: list[str], out_dir: str, has_spk1: bool, stats: bool) -> dict:
    """Merge job outputs into ``out_dir`` (scp files, utt2num_frames, stats.json); returns counts."""
    streams = [s for s in STREAMS if s == "feats" or has_spk1]
    scps: dict[str, dict] = {s: {} for s in streams}
    n2f: dict[str, int] = {}
    skipped = 0
    acc: dict[str, dict] = {}
    for d in job_dirs:
        for s in streams:
            scps[s].update(read_kv(os.path.join(d, f"{s}.scp")))
        with open(os.path.join(d, "meta.json"), encoding="utf-8") as f:
            for m in json.load(f):
                if "skipped" in m:
                    skipped += 1
                else:
                    n2f[m["utt"]] = m["frames"]
        if stats:
            with open(os.path.join(d, "stats.json"), encoding="utf-8") as f:
                for s, a in json.load(f).items():
                    t = acc.setdefault(s, {"sum": 0.0, "sumsq": 0.0, "frames": 0})
                    t["sum"] = t["sum"] + np.asarray(a["sum"])
                    t["sumsq"] = t["sumsq"] + np.asarray(a["sumsq"])
                    t["frames"] += a["frames"]
    if not n2f:
        raise RuntimeError(f"{out_dir}: no usable utterance ({skipped} skipped)")
    check_same_keys({"utt2num_frames": n2f, **{f"{s}.scp": v for s, v in scps.items()}})
    for s in streams:
        write_kv(os.path.join(out_dir, f"{s}.scp"), scps[s])
    if not has_spk1 and os.path.exists(os.path.join(out_dir, "spk1_feats.scp")):
        os.unlink(os.path.join(out_dir, "spk1_feats.scp"))
    write_kv(os.path.join(out_dir, "utt2num_frames"), n2f)
    if stats:
        out = {}
        for s, t in acc.items():
            mean = t["sum"] / t["frames"]
            std = np.sqrt(np.maximum(t["sumsq"] / t["frames"] - mean**2, 0.0))
            out[s] = {"mean": mean.tolist(), "std": std.tolist(), "frames": int(t["frames"])}
        write_json(os.path.join(out_dir, "stats.json"), out)
    return {"utterances": len(n2f), "skipped": skipped, "frames": int(sum(n2f.values()))}


def dump_sets(mel_cfg: dict, sets: list[tuple[str, str, bool]], nj: int = 1, cmd: str = "local", log_dir: str = "dump/log") -> list[dict]:
    """Dump ``(data set dir, output dir, with stats)`` triples with one round of ``nj`` jobs; returns counts per set."""
    splits, spk1 = [], []
    for set_dir, out_dir, stats in sets:
        items, has_spk1 = plan_dump(set_dir)
        spk1.append(has_spk1)
        ctx = {"mel": mel_cfg, "has_spk1": has_spk1, "stats": stats, "data_rate": read_sample_rate(set_dir)}
        splits.append((WORKER, items, ctx, out_dir))
    all_dirs = jobdirs.run_splits(splits, nj, log_dir, STEP, cmd)
    return [merge_dump(dirs, out_dir, has, stats) for dirs, (_, out_dir, stats), has in zip(all_dirs, sets, spk1)]
