"""The mini corpus: synthetic speech, noise and RIRs made on the spot, deterministic by seed.

Speech: flite voices and espeak-ng voice+variant talkers read the sentences in
``flowse/data/sentences/{train,valid,test}.txt``. Talkers are disjoint across
train / valid / test and babble (each flite voice and each espeak variant belongs
to one split only). Noise: the families of ``noise_synth`` (babble made from the
babble talkers of the same split) plus user noise dirs. RIRs: ``rir.synth_rir``.

Outputs under ``out_dir`` (``data/local``): ``{train,valid,test}_clean.scp``,
``utt2spk``, ``text``, ``utt2dur``, ``noise_{split}.scp``, ``noise_info``,
``rir_{split}.scp``, ``rir_info``, ``babble_{split}.scp``, ``speakers.json``;
wav files (16-bit, 16 kHz) under ``out_dir/audio``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np

from flowse.features.audio import SAMPLE_RATE, AudioError, read_audio, write_wav
from flowse.data.noise_synth import FAMILIES, make_noise
from flowse.data.rir import RirSynthConfig, synth_rir
from flowse.data.tts import TtsError, check_engines, speaker_id, synthesize
from flowse.utils import jobdirs
from flowse.utils.config import check
from flowse.utils.fileio import write_json, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)

SPLITS = ("train", "valid", "test")
SENTENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentences")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".sph")


def _splits(**kw):
    return field(default_factory=lambda: dict(kw))


@dataclass
class MiniConfig:
    flite_voices: dict[str, list[str]] = _splits(train=["awb", "rms"], valid=["kal16"], test=["slt"])
    espeak_speakers: dict[str, int] = _splits(train=14, valid=2, test=3)
    espeak_voices: list[str] = field(
        default_factory=lambda: ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
    )
    espeak_variants: dict[str, list[str]] = _splits(
        train=["m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt", "Alex", "Andy", "annie", "belinda", "benjamin", "edward", "linda", "john"],
        valid=["m5", "f4"],
        test=["m6", "m7", "f5", "klatt2"],
        babble=["m8", "klatt3", "klatt4", "max", "michael", "paul", "rob", "robert", "steph", "quincy", "david", "adam"],
    )
    kokoro_voices: dict[str, list[str]] = _splits(train=[], valid=[], test=[])  # Kokoro voices or blends, a speaker each
    kokoro_speed_range: tuple[int, int] = (90, 110)  # Kokoro speed in percent, drawn per speaker
    rate_range: tuple[float, float] = (140.0, 190.0)  # words per minute
    pitch_range: tuple[int, int] = (25, 75)  # espeak-ng -p
    utts: dict[str, int] = _splits(train=320, valid=32, test=64)
    min_seconds: float = 1.5
    max_seconds: float = 4.0
    max_tries: int = 6  # sentences tried per utterance until one fits [min_seconds, max_seconds]
    crop_long: bool = False  # when no sentence fits: cut the first too-long one to max_seconds instead of skipping
    babble_speakers: dict[str, int] = _splits(train=6, valid=2, test=3)
    babble_utts_per_speaker: int = 6
    noise_families: list[str] = field(default_factory=lambda: list(FAMILIES))
    noise_count: dict[str, int] = _splits(train=64, valid=8, test=24)
    noise_seconds: float = 8.0
    noise_dirs: dict[str, list[str]] = _splits(train=[], valid=[], test=[])

    def __post_init__(self):
        for name in ("flite_voices", "kokoro_voices", "espeak_speakers", "utts", "babble_speakers", "noise_count", "noise_dirs"):
            bad = set(getattr(self, name)) - set(SPLITS)
            check(not bad, f"mini.{name}: unknown split(s) {sorted(bad)}; allowed: {list(SPLITS)}")
        bad = set(self.espeak_variants) - set(SPLITS) - {"babble"}
        check(not bad, f"mini.espeak_variants: unknown split(s) {sorted(bad)}; allowed: {[*SPLITS, 'babble']}")
        bad = set(self.noise_families) - set(FAMILIES)
        check(not bad, f"mini.noise_families: unknown {sorted(bad)}; choose from {list(FAMILIES)}")
        check(0 < self.min_seconds < self.max_seconds, "mini: need 0 < min_seconds < max_seconds")
        check(self.max_tries >= 1 and self.noise_seconds > 0, "mini: max_tries >= 1 and noise_seconds > 0")
        seen: dict[str, str] = {}
        for group in (self.flite_voices, self.espeak_variants):
            for split, names in group.items():
                for v in names:
                    check(seen.setdefault(v, split) == split, f"mini: voice/variant {v!r} is in two splits ({seen[v]}, {split}); talkers must be disjoint")
        for split, voices in self.kokoro_voices.items():  # a voice and the blends holding it: one split only
            for v in {term.partition("*")[0] for voice in voices for term in voice.split("+")}:
                check(seen.setdefault(f"kokoro:{v}", split) == split,
                      f"mini: Kokoro voice {v!r} is in two splits ({seen[f'kokoro:{v}']}, {split}); talkers must be disjoint")
        for split in SPLITS:
            n_spk = (len(self.flite_voices.get(split, [])) + len(self.kokoro_voices.get(split, []))
                     + self.espeak_speakers.get(split, 0))
            check(self.utts.get(split, 0) == 0 or n_spk > 0, f"mini: split {split} has utterances but no speakers")
            check(self.espeak_speakers.get(split, 0) == 0 or self.espeak_variants.get(split), f"mini: split {split} needs espeak_variants")
        check(sum(self.babble_speakers.values()) == 0 or self.espeak_variants.get("babble"), "mini: babble speakers need espeak_variants.babble")


def load_sentences(name: str) -> list[str]:
    path = os.path.join(SENTENCE_DIR, f"{name}.txt")
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: no sentences")
    return lines


def make_speakers(cfg: MiniConfig, rng: np.random.Generator) -> dict[str, list[dict]]:
    """Talkers per split (``train``, ``valid``, ``test``, ``babble_<split>``); see ``tts`` for the dict."""
    out: dict[str, list[dict]] = {}
    used: set[str] = set()

    def espeak(variants: list[str], n: int) -> list[dict]:
        spks = []
        order = list(rng.permutation(len(variants)))
        langs = list(rng.permutation(len(cfg.espeak_voices)))
        for i in range(n):
            variant = variants[order[i % len(order)]]
            voice = cfg.espeak_voices[langs[i % len(langs)]]
            while True:
                rate = int(rng.integers(cfg.rate_range[0], cfg.rate_range[1] + 1))
                pitch = int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1))
                sid = speaker_id("espeak", voice, variant, rate, pitch)
                if sid not in used:
                    break
            used.add(sid)
            spks.append({"id": sid, "engine": "espeak", "voice": voice, "variant": variant, "rate": rate, "pitch": pitch})
        return spks

    for split in SPLITS:
        flite = [
            {"id": speaker_id("flite", v), "engine": "flite", "voice": v, "variant": "", "rate": int(rng.integers(160, 186)), "pitch": 50}
            for v in cfg.flite_voices.get(split, [])
        ]
        out[split] = flite + espeak(cfg.espeak_variants.get(split, []), cfg.espeak_speakers.get(split, 0))
        used.update(s["id"] for s in flite)
    babble = espeak(cfg.espeak_variants.get("babble", []), sum(cfg.babble_speakers.values()))
    start = 0
    for split in SPLITS:
        n = cfg.babble_speakers.get(split, 0)
        out[f"babble_{split}"] = babble[start : start + n]
        start += n
    for split in SPLITS:  # drawn last, so that adding Kokoro voices leaves every other talker as it was
        kokoro = []
        for v in cfg.kokoro_voices.get(split, []):
            speed = int(rng.integers(cfg.kokoro_speed_range[0], cfg.kokoro_speed_range[1] + 1))
            kokoro.append({"id": speaker_id("kokoro", v, rate=speed), "engine": "kokoro", "voice": v, "variant": "",
                           "rate": speed, "pitch": 50})
        out[split] = kokoro + out[split]
    return out


def plan_speech(cfg: MiniConfig, speakers: dict[str, list[dict]], seed: int, audio_dir: str) -> list[dict]:
    """Synthesis items: utterance id, split, speaker, candidate sentences, output path."""
    items = []
    groups = [(split, split, cfg.utts.get(split, 0)) for split in SPLITS]
    groups += [(f"babble_{s}", "train", cfg.babble_utts_per_speaker * len(speakers[f"babble_{s}"])) for s in SPLITS]
    for group, text_set, n in groups:
        spks = speakers[group]
        if n == 0 or not spks:
            continue
        rng = jobdirs.key_rng(seed, "text", group)
        sentences = load_sentences(text_set)
        order = rng.permutation(len(sentences))
        counts: dict[str, int] = {}
        for i in range(n):
            spk = spks[i % len(spks)]
            j = counts[spk["id"]] = counts.get(spk["id"], 0) + 1
            utt = f"{spk['id']}-{j:04d}"
            texts = [sentences[order[(i + k * 7) % len(order)]] for k in range(cfg.max_tries)]
            path = os.path.join(audio_dir, "speech", group, spk["id"], f"{utt}.wav")
            items.append({"utt": utt, "group": group, "speaker": spk, "texts": texts, "path": path})
    return items


def synth_speech_job(job_dir: str, context: dict, items: list[dict]) -> None:
    """Worker: synthesize each item, keep the first candidate sentence giving min..max seconds."""
    lo, hi, seed = context["min_seconds"], context["max_seconds"], context["seed"]
    results = []
    for it in items:
        rng = jobdirs.key_rng(seed, "speech", it["utt"])
        best, long, reason = None, None, "no candidate sentence"
        try:
            for text in it["texts"]:
                x = synthesize(it["speaker"], text, rng, tmp_dir=job_dir)
                dur = len(x) / SAMPLE_RATE
                if lo <= dur <= hi:
                    best = (x, text)
                    break
                reason = f"{dur:.2f} s outside [{lo}, {hi}] s for all {len(it['texts'])} candidate sentences"
                if context["crop_long"] and dur > hi and long is None:
                    long = (x, text)
            if best is None and long is not None:
                x, text = long
                fade = np.linspace(1.0, 0.0, SAMPLE_RATE // 20, dtype=np.float32)
                x = x[: int(hi * SAMPLE_RATE)].copy()
                x[-len(fade):] *= fade
                best = (x, text + " [cut]")
        except (TtsError, AudioError) as e:
            reason = str(e)
        if best is None:
            logger.warning(f"skipping utterance {it['utt']}: {reason}")
            results.append({"utt": it["utt"], "skipped": reason})
            continue
        x, text = best
        write_wav(it["path"], x)
        results.append({"utt": it["utt"], "group": it["group"], "spk": it["speaker"]["id"], "path": it["path"], "samples": len(x), "text": text})
    write_json(os.path.join(job_dir, "results.json"), results)


def synth_noise_rir_job(job_dir: str, context: dict, items: list[dict]) -> None:
    """Worker: synthesize noise signals (babble from the split's babble talkers) and RIRs."""
    seed = context["seed"]
    rir_cfg = RirSynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in context["rir"].items()})
    babble_cache: dict[str, list[np.ndarray]] = {}
    results = []
    for it in items:
        rng = jobdirs.key_rng(seed, it["kind"], it["id"])
        if it["kind"] == "rir":
            x, info = synth_rir(rir_cfg, rng)
        else:
            talkers = []
            if it["family"] == "babble":
                split = it["split"]
                if split not in babble_cache:
                    babble_cache[split] = [read_audio(p) for p in context["babble"].get(split, [])]
                talkers = babble_cache[split]
            x = make_noise(it["family"], int(it["seconds"] * SAMPLE_RATE), rng, talkers)
            info = {"family": it["family"], "seconds": it["seconds"]}
        write_wav(it["path"], x)
        results.append({"id": it["id"], "kind": it["kind"], "split": it["split"], "path": it["path"], "info": info})
    write_json(os.path.join(job_dir, "results.json"), results)


def scan_audio_dir(root: str) -> list[str]:
    """Audio files under ``root`` (recursive, sorted); a missing dir is an error naming it."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"noise/audio dir not found: {root}")
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f.lower().endswith(AUDIO_EXTENSIONS)]
    return sorted(out)


def file_key(prefix: str, root: str, path: str) -> str:
    rel = os.path.splitext(os.path.relpath(path, root))[0]
    return prefix + "".join(c if c.isalnum() or c in "-_." else "_" for c in rel.replace(os.sep, "_"))


def rir_items(rir_cfg: RirSynthConfig, splits: tuple[str, ...], audio_dir: str) -> list[dict]:
    items = []
    for split in splits:
        for i in range(rir_cfg.count.get(split, 0)):
            rid = f"rir{split}-{i:04d}"
            items.append({"kind": "rir", "id": rid, "split": split, "path": os.path.join(audio_dir, "rir", split, f"{rid}.wav")})
    return items


def run_noise_rir(items: list[dict], rir_cfg: RirSynthConfig, seed: int, babble: dict, out_dir: str, nj: int, cmd: str) -> list[dict]:
    """Run the noise/RIR synthesis jobs; returns their results (id, kind, split, path, info)."""
    if not items:
        return []
    ctx = {"seed": seed, "rir": json.loads(json.dumps(vars(rir_cfg))), "babble": babble}
    job_dirs = jobdirs.run_split("flowse.data.corpus_mini:synth_noise_rir_job", items, ctx, os.path.join(out_dir, "jobs", "noise_rir"), nj, cmd)
    return jobdirs.read_job_json(job_dirs, "results.json")


def synth_rir_lists(rir_cfg: RirSynthConfig, seed: int, out_dir: str, splits: tuple[str, ...], nj: int = 1, cmd: str = "local") -> dict[str, dict[str, str]]:
    """Synthesize RIRs for ``splits`` under ``out_dir/audio/rir``, write ``rir_info``; returns {split: {id: path}}."""
    made = run_noise_rir(rir_items(rir_cfg, splits, os.path.join(os.path.abspath(out_dir), "audio")), rir_cfg, seed, {}, out_dir, nj, cmd)
    write_kv(os.path.join(out_dir, "rir_info"), {r["id"]: json.dumps(r["info"], sort_keys=True) for r in made})
    return {s: {r["id"]: r["path"] for r in made if r["split"] == s} for s in splits}


def _synth_speech(cfg: MiniConfig, seed: int, out_dir: str, nj: int, cmd: str) -> tuple[list[dict], dict]:
    """Synthesize target and babble speech; writes the clean lists; returns (results, counts)."""
    speakers = make_speakers(cfg, jobdirs.key_rng(seed, "speakers"))
    items = plan_speech(cfg, speakers, seed, os.path.join(out_dir, "audio"))
    logger.info(f"synthesizing {len(items)} utterances with {sum(map(len, speakers.values()))} talkers, nj={nj}")
    ctx = {"seed": seed, "min_seconds": cfg.min_seconds, "max_seconds": cfg.max_seconds, "crop_long": cfg.crop_long}
    job_dirs = jobdirs.run_split("flowse.data.corpus_mini:synth_speech_job", items, ctx, os.path.join(out_dir, "jobs", "speech"), nj, cmd)
    results = jobdirs.read_job_json(job_dirs, "results.json")
    skipped = [r for r in results if "skipped" in r]
    speech = [r for r in results if "skipped" not in r]
    counts: dict = {"skipped_utterances": len(skipped)}
    for split in SPLITS:
        rows = [r for r in speech if r["group"] == split]
        if cfg.utts.get(split, 0) and not rows:
            raise RuntimeError(f"mini corpus: no usable {split} utterance was synthesized ({len(skipped)} skipped, see the job logs)")
        write_kv(os.path.join(out_dir, f"{split}_clean.scp"), {r["utt"]: r["path"] for r in rows})
        babble = [r for r in speech if r["group"] == f"babble_{split}"]
        write_kv(os.path.join(out_dir, f"babble_{split}.scp"), {r["utt"]: r["path"] for r in babble})
        counts[f"{split}_utterances"] = len(rows)
    clean = [r for r in speech if not r["group"].startswith("babble")]
    write_kv(os.path.join(out_dir, "utt2spk"), {r["utt"]: r["spk"] for r in clean})
    write_kv(os.path.join(out_dir, "text"), {r["utt"]: r["text"] for r in clean})
    write_kv(os.path.join(out_dir, "utt2dur"), {r["utt"]: f"{r['samples'] / SAMPLE_RATE:.4f}" for r in clean})
    write_json(os.path.join(out_dir, "speakers.json"), speakers)
    return speech, counts


def _noises_and_rirs(cfg: MiniConfig, rir_cfg: RirSynthConfig, seed: int, speech: list[dict], out_dir: str, nj: int, cmd: str) -> dict:
    """Synthesize noises (+ user noise dirs) and RIRs; writes their lists and info; returns counts."""
    audio_dir = os.path.join(out_dir, "audio")
    items = []
    for split in SPLITS:
        for i in range(cfg.noise_count.get(split, 0)):
            family = cfg.noise_families[i % len(cfg.noise_families)]
            if family == "babble" and not cfg.babble_speakers.get(split, 0):
                family = "pink"
            nid = f"syn{split}-{family}-{i:04d}"
            path = os.path.join(audio_dir, "noise", split, f"{nid}.wav")
            items.append({"kind": "noise", "id": nid, "split": split, "family": family, "seconds": cfg.noise_seconds, "path": path})
    items += rir_items(rir_cfg, SPLITS, audio_dir)
    babble = {s: [r["path"] for r in speech if r["group"] == f"babble_{s}"] for s in SPLITS}
    made = run_noise_rir(items, rir_cfg, seed, babble, out_dir, nj, cmd)
    noise_info = {r["id"]: r["info"] for r in made if r["kind"] == "noise"}
    counts = {}
    for split in SPLITS:
        noises = {r["id"]: r["path"] for r in made if r["kind"] == "noise" and r["split"] == split}
        for d in cfg.noise_dirs.get(split, []):
            for path in scan_audio_dir(d):
                key = file_key(f"user-{os.path.basename(os.path.normpath(d))}-", d, path)
                noises[key] = os.path.abspath(path)
                noise_info[key] = {"family": "user", "source": os.path.abspath(path)}
        write_kv(os.path.join(out_dir, f"noise_{split}.scp"), noises)
        rirs = {r["id"]: r["path"] for r in made if r["kind"] == "rir" and r["split"] == split}
        write_kv(os.path.join(out_dir, f"rir_{split}.scp"), rirs)
        counts[f"{split}_noises"], counts[f"{split}_rirs"] = len(noises), len(rirs)
    write_kv(os.path.join(out_dir, "noise_info"), {k: json.dumps(v, sort_keys=True) for k, v in noise_info.items()})
    write_kv(os.path.join(out_dir, "rir_info"), {r["id"]: json.dumps(r["info"], sort_keys=True) for r in made if r["kind"] == "rir"})
    return counts


def prepare_mini(cfg: MiniConfig, rir_cfg: RirSynthConfig, seed: int, out_dir: str, nj: int = 1, cmd: str = "local") -> dict:
    """Build the mini corpus under ``out_dir``; returns counts (utterances per split, skipped, noises, rirs)."""
    if any(cfg.kokoro_voices.values()):
        from flowse.data import kokoro

        why = kokoro.available()
        if why:
            logger.warning("mini: the Kokoro voices are left out (%s); the corpus uses the flite and espeak-ng "
                           "talkers only", why)
            cfg = dataclasses.replace(cfg, kokoro_voices={s: [] for s in SPLITS})
        else:
            kokoro.model_path()  # joined once here, not by every job
    engines = {"flite"} if any(cfg.flite_voices.values()) else set()
    if sum(cfg.espeak_speakers.values()) + sum(cfg.babble_speakers.values()):
        engines.add("espeak")
    if any(cfg.kokoro_voices.values()):
        engines.add("kokoro")
    check_engines(engines)
    out_dir = os.path.abspath(out_dir)
    speech, counts = _synth_speech(cfg, seed, out_dir, nj, cmd)
    counts.update(_noises_and_rirs(cfg, rir_cfg, seed, speech, out_dir, nj, cmd))
    return counts
