"""Stage 1: noisy/reverberant mixtures from the stage-0 lists, written as Kaldi data dirs.

For each set in ``simulate.yaml`` (``sets: {name: {...}}``) the clean utterances of
``<local_dir>/<split>_clean.scp`` (or of another stage-0 list, ``clean``: the real speech of
``corpus_real``) are mixed with noises of ``noise_<split>.scp`` and, with probability ``reverb_prob``, convolved with a RIR of ``rir_<split>.scp``
(see ``mixing`` and ``rir`` for the maths). Every random draw of an utterance comes
from a generator keyed by (seed, set, utterance), so the output does not depend on
``--nj``. Bad source audio (unreadable, empty, zeros, NaN, too short) is skipped
with one warning line naming the file; a bad noise or RIR is replaced by another
draw. Outputs per set: ``wav.scp`` (noisy), ``spk1.scp`` (target), ``noise1.scp``
(the additive noise: ``noisy == speech + noise1`` exactly, ``speech`` being the
reverberant speech for reverberant utterances), ``utt2spk``, ``spk2utt``,
``utt2dur``, ``utt2info``, ``sample_rate``, ``text`` (the transcripts stage 0 has), ``SOURCES``
(for an extra clean list); audio in float32 ark files under
``<set>/split<nj>/<k>/``, at the configured ``sample_rate`` (sources at other rates, the
stage-0 audio files, noises and RIRs, are resampled to it on reading).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from flowse.features.audio import SAMPLE_RATE, AudioError
from flowse.data.datadir import read_utt2info, write_data_dir, write_sample_rate
from flowse.data.kaldi import ark_writers, load_audio
from flowse.data.mixing import fit_noise, mix, random_segment, rms
from flowse.data.rir import load_rir, reverberate, schroeder_rt60, target_rir
from flowse.utils import jobdirs
from flowse.utils.config import check
from flowse.utils.fileio import c_sorted, read_kv, write_json, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

STEP = "simulate"
WORKER = "flowse.data.simulate:simulate_job"


@dataclass
class SetConfig:
    split: Literal["train", "valid", "test"]  # which stage-0 lists (clean, noise, rir) the set draws from
    # Another stage-0 clean list, <clean>_clean.scp with <clean>_utt2spk (e.g. real_speech), instead of the
    # split's; noises and RIRs still come from the split. The set is skipped when stage 0 made no such list.
    clean: str | None = None
    num_utts: int = 0  # 0: one mixture per clean utterance; more: clean utterances reused ("<utt>-<k>" ids)
    clean_part: tuple[int, int] = (1, 1)  # (k, n): every n-th sorted clean utterance from the k-th (talkers shared)
    snr_range: tuple[float, float] = (0.0, 40.0)  # dB, uniform
    level_range: tuple[float, float] = (-35.0, -15.0)  # dBFS RMS of the mixture, uniform
    reverb_prob: float = 0.0
    target: Literal["early", "dry", "reverberant"] | None = None  # None: the global reverb_target
    min_seconds: float = 1.0  # shorter clean utterances are skipped
    max_seconds: float | None = None  # longer clean utterances are cut to a random segment

    def __post_init__(self):
        k, n = self.clean_part
        check(1 <= k <= n, f"clean_part must be (k, n) with 1 <= k <= n, got {self.clean_part}")
        check(self.snr_range[0] <= self.snr_range[1], f"snr_range must be (low, high), got {self.snr_range}")
        lo, hi = self.level_range
        check(-80 <= lo <= hi < 0, f"level_range must be (low, high) dBFS below 0, got {self.level_range}")
        check(0.0 <= self.reverb_prob <= 1.0, f"reverb_prob must be in [0, 1], got {self.reverb_prob}")
        check(self.num_utts >= 0 and self.min_seconds >= 0, "num_utts and min_seconds must be >= 0")
        check(self.max_seconds is None or self.max_seconds > self.min_seconds, "max_seconds must exceed min_seconds")


@dataclass
class SimulateConfig:
    seed: int = 2020
    sample_rate: int = SAMPLE_RATE  # Hz of the mixtures; stage 2 resamples to its feature rate when they differ
    reverb_target: Literal["early", "dry", "reverberant"] = "early"
    early_ms: float = 50.0  # "early" target: RIR up to this long after the direct path
    peak: float = 0.99  # all parts are scaled down together when one would peak above this
    noise_crossfade_ms: float = 50.0  # when a short noise is looped
    noise_min_seconds: float = 0.25  # shorter noise files are skipped as bad input
    max_draws: int = 20  # draws of a noise (RIR) before giving up on an utterance
    sets: dict[str, SetConfig] = field(default_factory=dict)

    def __post_init__(self):
        check(self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}")
        check(0 < self.peak <= 1.0, f"peak must be in (0, 1], got {self.peak}")
        check(self.early_ms > 0 and self.noise_crossfade_ms >= 0 and self.max_draws >= 1, "bad early_ms/noise_crossfade_ms/max_draws")
        for name in self.sets:
            check(name and all(c.isalnum() or c in "_-." for c in name), f"set name {name!r}: use letters, digits, _ - .")


def _plain(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def _global(cfg: SimulateConfig) -> dict:
    return {k: v for k, v in _plain(cfg).items() if k != "sets"}


def set_sources(local_dir: str, split: str, clean: str | None = None) -> dict[str, str]:
    d = os.path.abspath(local_dir)
    return {
        "clean_scp": os.path.join(d, f"{clean or split}_clean.scp"),
        "utt2spk": os.path.join(d, f"{clean}_utt2spk" if clean else "utt2spk"),
        "noise_scp": os.path.join(d, f"noise_{split}.scp"),
        "rir_scp": os.path.join(d, f"rir_{split}.scp"),
        "rir_info": os.path.join(d, "rir_info"),
    }


def _sources(local_dir: str, sc: SetConfig) -> dict[str, str]:
    return set_sources(local_dir, sc.split, sc.clean)


def has_sources(cfg: SimulateConfig, name: str, local_dir: str) -> bool:
    """False for a set with an extra ``clean`` list that stage 0 did not make (sets of a split: always True)."""
    sc = cfg.sets[name]
    return sc.clean is None or os.path.exists(_sources(local_dir, sc)["clean_scp"])


def set_inputs(cfg: SimulateConfig, name: str, local_dir: str) -> tuple[dict, list[str]]:
    """What a finished set depends on: its config (the set's and the global keys) and the stage-0 lists.

    A set without an extra ``clean`` list is keyed without that key, as before the key existed.
    """
    sc = cfg.sets[name]
    plain = {k: v for k, v in _plain(sc).items() if k != "clean" or v is not None}
    return {"set": plain, "global": _global(cfg)}, list(_sources(local_dir, sc).values())


def plan_set(cfg: SimulateConfig, name: str, local_dir: str) -> tuple[list[dict], dict]:
    """(items, context) of the split jobs of set ``name``; errors name a missing list or key mismatch."""
    sc = cfg.sets[name]
    src = _sources(local_dir, sc)
    for key in ("clean_scp", "noise_scp"):
        if not os.path.exists(src[key]):
            raise FileNotFoundError(f"set {name}: {src[key]} not found (run stage 0 first)")
    clean = read_kv(src["clean_scp"])
    utt2spk = read_kv(src["utt2spk"]) if os.path.exists(src["utt2spk"]) else {}
    missing = [k for k in clean if k not in utt2spk]
    if missing:
        raise ValueError(f"{src['utt2spk']}: no speaker for {len(missing)} utterances of {src['clean_scp']}, e.g. {missing[:5]}")
    keys = c_sorted(clean)[sc.clean_part[0] - 1 :: sc.clean_part[1]]
    if not keys:
        raise ValueError(f"set {name}: no clean utterance in part {sc.clean_part} of {src['clean_scp']}")
    if sc.num_utts == 0:
        pairs = [(k, k) for k in keys]
    else:
        rng = jobdirs.key_rng(cfg.seed, "plan", name)
        reps = -(-sc.num_utts // len(keys))
        order = [keys[i] for r in range(reps) for i in rng.permutation(len(keys))][: sc.num_utts]
        if sc.num_utts <= len(keys):
            pairs = [(k, k) for k in order]
        else:
            seen: dict[str, int] = {}
            pairs = []
            for k in order:
                seen[k] = seen.get(k, 0) + 1
                pairs.append((f"{k}-{seen[k]:02d}", k))
    items = [{"utt": u, "clean": k, "path": clean[k], "spk": utt2spk[k]} for u, k in sorted(pairs, key=lambda p: p[0].encode())]
    return items, {"set": name, "cfg": _plain(sc), "global": _global(cfg), **src}


class _Pool:
    """Draws noises or RIRs by id with a key-seeded rng; files that fail to load are remembered and redrawn."""

    def __init__(self, entries: dict[str, str], loader, what: str):
        self.ids = c_sorted(entries)
        self.entries = entries
        self.bad: set[str] = set()
        self.what = what
        self.load = lru_cache(maxsize=128)(loader)

    def draw(self, rng: np.random.Generator, tries: int) -> tuple[str, np.ndarray] | None:
        for _ in range(tries):
            key = self.ids[int(rng.integers(len(self.ids)))]
            if key in self.bad:
                continue
            try:
                return key, self.load(key)
            except AudioError as e:
                self.bad.add(key)
                logger.warning(f"skipping {self.what} {key}: {e}")
        return None


def simulate_job(job_dir: str, ctx: dict, items: list[dict]) -> None:
    """Worker of one split job: mix ``items`` into ``wav/spk1/noise1`` arks + ``meta.json``."""
    sc, g = ctx["cfg"], ctx["global"]
    name, seed, sr = ctx["set"], g["seed"], g["sample_rate"]
    noise_list = read_kv(ctx["noise_scp"])
    noises = _Pool(noise_list, lambda k: load_audio(noise_list[k], f"noise {k} ({noise_list[k]})", g["noise_min_seconds"], sr), "noise")
    rir_list = read_kv(ctx["rir_scp"]) if os.path.exists(ctx["rir_scp"]) else {}
    rirs = _Pool(rir_list, lambda k: load_rir(rir_list[k], sr, name=f"rir {k} ({rir_list[k]})"), "rir")
    rir_info = {k: json.loads(v) for k, v in read_kv(ctx["rir_info"]).items()} if os.path.exists(ctx["rir_info"]) else {}
    target_kind = sc["target"] or g["reverb_target"]
    if sc["reverb_prob"] > 0 and not rir_list:
        logger.warning(f"set {name}: reverb_prob {sc['reverb_prob']} but {ctx['rir_scp']} is empty or missing; no reverberation")
    crossfade = int(g["noise_crossfade_ms"] * sr / 1000)
    meta = []
    with ark_writers(job_dir, ("wav", "spk1", "noise1")) as writers:
        for it in items:
            utt = it["utt"]
            rng = jobdirs.key_rng(seed, name, utt)
            try:
                clean = load_audio(it["path"], f"clean {it['clean']} ({it['path']})", sc["min_seconds"], sr)
            except AudioError as e:
                logger.warning(f"skipping utterance {utt}: {e}")
                meta.append({"utt": utt, "skipped": str(e)})
                continue
            if sc["max_seconds"]:
                clean = random_segment(clean, int(sc["max_seconds"] * sr), rng)
            snr = float(rng.uniform(*sc["snr_range"]))
            level = float(rng.uniform(*sc["level_range"]))
            speech, target, rir_id, rt60, kind = clean, None, None, None, "clean"
            if rir_list and rng.random() < sc["reverb_prob"]:
                got = rirs.draw(rng, g["max_draws"])
                if got is None:
                    logger.warning(f"utterance {utt}: no usable RIR in {g['max_draws']} draws; mixed without reverberation")
                else:
                    rir_id, rir = got
                    rt60 = rir_info.get(rir_id, {}).get("rt60") or schroeder_rt60(rir, sr)
                    speech = reverberate(clean, rir)
                    kind = target_kind
                    if kind != "reverberant":
                        target = reverberate(clean, target_rir(rir, kind, g["early_ms"], sr))
            noise = None
            for _ in range(g["max_draws"]):
                got = noises.draw(rng, g["max_draws"])
                if got is None:
                    break
                seg = fit_noise(got[1], len(speech), rng, crossfade)
                if rms(seg) > 1e-6:
                    noise_id, noise = got[0], seg
                    break
            if noise is None or rms(speech) <= 1e-8:
                reason = "silent speech" if noise is not None else f"no usable noise in {g['max_draws']} draws"
                logger.warning(f"skipping utterance {utt}: {reason}")
                meta.append({"utt": utt, "skipped": reason})
                continue
            m = mix(speech, noise, snr, level, target, g["peak"])
            writers["wav"][utt], writers["spk1"][utt], writers["noise1"][utt] = m.noisy, m.target, m.noise
            info = {
                "snr": round(m.snr_db, 4), "level_db": round(m.level_db, 4), "target_level_db": round(level, 4),
                "noise": noise_id, "rir": rir_id, "rt60": None if rt60 is None else round(float(rt60), 4),
                "target": kind, "clean": it["clean"], "clipped": m.clipped,
            }
            meta.append({"utt": utt, "spk": it["spk"], "samples": len(m.noisy), "info": info})
    write_json(os.path.join(job_dir, "meta.json"), meta)


def merge_set(job_dirs: list[str], set_dir: str, sr: int = SAMPLE_RATE) -> dict:
    """Merge the jobs of a set (audio at ``sr``) into its data dir (C-sorted, identical keys, counts checked); returns counts."""
    files: dict[str, dict] = {"wav.scp": {}, "spk1.scp": {}, "noise1.scp": {}, "utt2spk": {}, "utt2dur": {}, "utt2info": {}}
    skipped, seconds = 0, 0.0
    for d in job_dirs:
        for stream in ("wav", "spk1", "noise1"):
            part = read_kv(os.path.join(d, f"{stream}.scp"))
            dup = set(part) & set(files[f"{stream}.scp"])
            if dup:
                raise ValueError(f"{d}/{stream}.scp: keys also in another job, e.g. {sorted(dup)[:3]}")
            files[f"{stream}.scp"].update(part)
        with open(os.path.join(d, "meta.json"), encoding="utf-8") as f:
            for m in json.load(f):
                if "skipped" in m:
                    skipped += 1
                    continue
                files["utt2spk"][m["utt"]] = m["spk"]
                files["utt2dur"][m["utt"]] = f"{m['samples'] / sr:.4f}"
                files["utt2info"][m["utt"]] = m["info"]
                seconds += m["samples"] / sr
    n = len(files["utt2spk"])
    if n == 0:
        raise RuntimeError(f"{set_dir}: no usable utterance ({skipped} skipped; see the warnings in {set_dir}/log)")
    write_data_dir(set_dir, files)
    write_sample_rate(set_dir, sr)
    return {"utterances": n, "skipped": skipped, "seconds": seconds}


def write_text_and_sources(set_dir: str, local_dir: str, sc: SetConfig) -> None:
    """The set's ``text`` (transcripts of the utterances that have one, for a WER metric; keys follow
    ``utt2info``'s ``clean``) and, for an extra ``clean`` list, its ``SOURCES`` (origin and licences)."""
    d = os.path.abspath(local_dir)
    text_path = os.path.join(d, f"{sc.clean}_text" if sc.clean else "text")
    if os.path.exists(text_path):
        text = read_kv(text_path)
        info = read_utt2info(os.path.join(set_dir, "utt2info"))
        write_kv(os.path.join(set_dir, "text"), {u: text[i["clean"]] for u, i in info.items() if i["clean"] in text})
    sources = os.path.join(d, f"{sc.clean}_SOURCES")
    if sc.clean and os.path.exists(sources):
        shutil.copyfile(sources, os.path.join(set_dir, "SOURCES"))


def simulate_sets(cfg: SimulateConfig, names: list[str], local_dir: str, data_dir: str, nj: int = 1, cmd: str = "local") -> dict[str, dict]:
    """Simulate sets ``names`` into ``data_dir/<name>`` with one round of ``nj`` jobs; returns counts per set."""
    start = time.time()
    splits = []
    for name in names:
        items, ctx = plan_set(cfg, name, local_dir)
        splits.append((WORKER, items, ctx, os.path.join(data_dir, name)))
    all_dirs = jobdirs.run_splits(splits, nj, os.path.join(data_dir, "log"), STEP, cmd)
    out = {name: merge_set(dirs, os.path.join(data_dir, name), cfg.sample_rate) for name, dirs in zip(names, all_dirs)}
    for name in names:
        write_text_and_sources(os.path.join(data_dir, name), local_dir, cfg.sets[name])
    wall = time.time() - start
    for counts in out.values():
        counts["wall_seconds"] = wall
    return out
