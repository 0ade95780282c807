"""Speech enhancement with a trained model dir: waveform in, enhanced mono float32 waveform out.

    from flowse import Enhancer
    enh = Enhancer.from_model_dir("exp/pretrain_mini", device="cpu")
    clean = enh(noisy, sr)                 # np.ndarray, any rate, mono or multi-channel
    clean16k = enh(noisy, sr, out_sr=16000)
    outs = enh.enhance_batch([a, b, c])    # 16 kHz inputs (or pass sr=...)
    enhance_files(enh, ["data/test/wav.scp"], "out_dir")   # <out_dir>/<utt>.wav + wav.scp

Rates: the model reads log-mels at its feature rate ``enh.sample_rate`` (the mel config's
``sample_rate``) and the vocoder writes at its rate ``enh.output_rate`` (the same mel config,
so the same rate). Inputs at any rate are resampled to the feature rate; outputs are at the
vocoder's rate unless ``out_sr`` asks for another.

Pipeline per utterance: downmix (mean over channels) and resample to the feature rate; split into
chunks; per chunk log-mel -> normalise -> Euler ODE (``nfe`` steps, CFG weight
``cfg_strength``) -> de-normalise -> vocoder (the mel-gain vocoder also gets the noisy
chunk) -> overlap-add.

Long inputs: chunks of ``chunk_seconds`` (default 10 s) start every ``chunk_seconds -
overlap_seconds`` (default 1 s overlap), the last one aligned to the end of the file;
consecutive chunks are cross-faded linearly over their overlap, so memory (attention is
quadratic in frames) stays bounded whatever the file length. Chunks of all inputs are
sorted by length and run in batches of ``batch_size``. The initial noise of chunk k of an
utterance is drawn from a generator seeded with ``(seed, k)`` on the CPU, so an output
does not depend on what else is in the batch or on the device (up to float rounding).
Output: float32 mono at ``out_sr`` (default: the vocoder's rate), as many samples as the input
resampled to that rate, not clipped (writers clip to [-1, 1]).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from flowse.features.audio import SAMPLE_RATE, AudioError, resample, validate, write_wav
from flowse.features.mel import LogMel, MelConfig
from flowse.sampling.ode import ode_sample
from flowse.utils.config import check, save_config
from flowse.utils.fileio import read_kv, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


@dataclass
class EnhanceConfig:
    """Inference settings; ``nfe`` / ``cfg_strength`` None = the model's defaults (``flow`` section)."""

    nfe: int | None = None
    cfg_strength: float | None = None
    chunk_seconds: float = 10.0
    overlap_seconds: float = 1.0
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        check(self.nfe is None or self.nfe >= 1, f"nfe must be >= 1, got {self.nfe}")
        check(self.cfg_strength is None or self.cfg_strength >= 0, "cfg_strength must be >= 0")
        check(self.chunk_seconds >= 1.0, f"chunk_seconds must be >= 1, got {self.chunk_seconds}")
        check(0.0 <= self.overlap_seconds <= self.chunk_seconds / 2,
              f"overlap_seconds must be in [0, chunk_seconds / 2], got {self.overlap_seconds}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return dev


def to_mono(wav: np.ndarray, sr: int, out_sr: int = SAMPLE_RATE, name: str = "input") -> np.ndarray:
    """Float32 mono at ``out_sr``, validated. 2-D arrays are ``[samples, channels]`` (soundfile) or, when the first
    axis is the short one (<= 8), ``[channels, samples]`` (torchaudio)."""
    x = np.asarray(wav)
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] <= 8 and x.shape[0] < x.shape[1] else x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D or 2-D waveform, got shape {x.shape}")
    x = resample(x, int(sr), int(out_sr))
    return validate(x, name, sr=out_sr)


def chunk_spans(n: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` covering ``[0, n)``: chunks of ``chunk`` samples every ``chunk - overlap``,
    the last one ending at ``n``; a single span when ``n <= chunk``."""
    if n <= chunk:
        return [(0, n)]
    step = chunk - overlap
    starts = list(range(0, n - chunk, step)) + [n - chunk]
    return [(s, s + chunk) for s in starts]


def overlap_add(pieces: list[np.ndarray], spans: list[tuple[int, int]], n: int) -> np.ndarray:
    """Join chunk outputs, cross-fading linearly where consecutive spans overlap."""
    out = np.zeros(n, dtype=np.float32)
    prev_end = 0
    for k, ((s, e), y) in enumerate(zip(spans, pieces)):
        y = y[: e - s].astype(np.float32)
        ov = max(0, prev_end - s) if k > 0 else 0
        if ov:
            r = (np.arange(ov, dtype=np.float32) + 0.5) / ov
            out[s : s + ov] = out[s : s + ov] * (1.0 - r) + y[:ov] * r
        out[s + ov : e] = y[ov:]
        prev_end = e
    return out


class Enhancer:
    """Model + vocoder + chunked, batched inference (see the module doc)."""

    def __init__(self, model, vocoder, cfg: EnhanceConfig | None = None, device: str | torch.device | None = None,
                 mel_cfg: MelConfig | None = None):
        self.cfg = cfg or EnhanceConfig()
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.vocoder = vocoder.to(self.device).eval() if hasattr(vocoder, "to") else vocoder
        mel_cfg = mel_cfg or getattr(vocoder, "mel_cfg", None) or MelConfig()
        if mel_cfg.n_mels != model.n_mels:
            raise ValueError(f"vocoder mel config has {mel_cfg.n_mels} bins, the model {model.n_mels}")
        self.mel_cfg = mel_cfg
        self.logmel = LogMel(mel_cfg).to(self.device)
        self.hop = mel_cfg.hop_length
        self.sample_rate = mel_cfg.sample_rate
        self.output_rate = getattr(vocoder, "sample_rate", mel_cfg.sample_rate)
        if self.output_rate != self.sample_rate:
            raise ValueError(f"vocoder writes {self.output_rate} Hz, the mel config reads {self.sample_rate} Hz")

    @classmethod
    def from_model_dir(cls, model_dir: str, device: str | torch.device | None = "auto",
                       vocoder_dir: str | None = None, cfg: EnhanceConfig | None = None, **overrides) -> "Enhancer":
        """Load ``model_dir`` (and the vocoder it names, or ``vocoder_dir``); ``overrides`` are
        ``EnhanceConfig`` fields (``nfe=``, ``cfg_strength=``, ``chunk_seconds=``...)."""
        from dataclasses import replace

        from flowse.models.io import load_model_dir, read_vocoder_dir
        from flowse.models.vocoders import load_vocoder

        dev = resolve_device(device)
        model, _ = load_model_dir(model_dir, dev)
        vdir = vocoder_dir or read_vocoder_dir(model_dir)
        if vdir is None:
            raise FileNotFoundError(f"{model_dir}: no vocoder_dir file; pass vocoder_dir=")
        vocoder = load_vocoder(vdir, dev)
        cfg = replace(cfg or EnhanceConfig(), **overrides)
        return cls(model, vocoder, cfg, dev)

    @property
    def nfe(self) -> int:
        return self.cfg.nfe or self.model.flow_cfg.nfe

    @property
    def cfg_strength(self) -> float:
        return self.model.flow_cfg.cfg_strength if self.cfg.cfg_strength is None else self.cfg.cfg_strength

    def __call__(self, wav: np.ndarray, sr: int = SAMPLE_RATE, out_sr: int | None = None) -> np.ndarray:
        return self.enhance_batch([wav], sr, out_sr)[0]

    def enhance_batch(self, wavs: list[np.ndarray], sr: int = SAMPLE_RATE, out_sr: int | None = None) -> list[np.ndarray]:
        """Enhance several waveforms (all at rate ``sr``); returns float32 arrays at ``out_sr``
        (None: ``self.output_rate``, the vocoder's), same order."""
        xs = [to_mono(w, sr, self.sample_rate, f"input {i}") for i, w in enumerate(wavs)]
        chunk = max(self.hop, int(round(self.cfg.chunk_seconds * self.sample_rate / self.hop)) * self.hop)
        overlap = int(round(self.cfg.overlap_seconds * self.sample_rate / self.hop)) * self.hop
        jobs = []  # (utt index, chunk index, start, end)
        spans = []
        for i, x in enumerate(xs):
            sp = chunk_spans(len(x), chunk, overlap)
            spans.append(sp)
            jobs += [(i, k, s, e) for k, (s, e) in enumerate(sp)]
        jobs.sort(key=lambda j: j[3] - j[2])
        results: dict[tuple[int, int], np.ndarray] = {}
        for b in range(0, len(jobs), self.cfg.batch_size):
            group = jobs[b : b + self.cfg.batch_size]
            outs = self._enhance_chunks([xs[i][s:e] for i, _, s, e in group], [k for _, k, _, _ in group])
            for (i, k, _, _), y in zip(group, outs):
                results[(i, k)] = y
        outs = [overlap_add([results[(i, k)] for k in range(len(sp))], sp, len(xs[i])) for i, sp in enumerate(spans)]
        return [resample(y, self.output_rate, out_sr or self.output_rate) for y in outs]

    def _chunk_noise(self, chunk_index: int, frames: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + chunk_index)
        return torch.randn(frames, self.model.n_mels, generator=g)

    @torch.no_grad()
    def _enhance_chunks(self, segs: list[np.ndarray], chunk_ids: list[int]) -> list[np.ndarray]:
        """Waveform chunks (at the feature rate) -> enhanced chunks of the same lengths."""
        dev = self.device
        min_len = self.mel_cfg.n_fft
        padded = [np.pad(s, (0, max(min_len - len(s), (-len(s)) % self.hop))) for s in segs]
        frames = [len(p) // self.hop for p in padded]
        t_max = max(frames)
        b = len(segs)
        wav = torch.zeros(b, t_max * self.hop, device=dev)
        mel = torch.zeros(b, t_max, self.model.n_mels, device=dev)
        x0 = torch.zeros(b, t_max, self.model.n_mels)
        for j, (p, n) in enumerate(zip(padded, frames)):
            w = torch.from_numpy(p).to(dev)
            wav[j, : len(p)] = w
            mel[j, :n] = self.logmel(w[None])[0, :n]
            x0[j, :n] = self._chunk_noise(chunk_ids[j], n)
        lengths = torch.tensor(frames, device=dev)
        mask = torch.arange(t_max, device=dev)[None] < lengths[:, None]
        est = self.enhance_mel(mel, mask, x0.to(dev))
        needs_noisy = getattr(self.vocoder, "needs_noisy", False)
        outs: list[np.ndarray] = [np.zeros(0, np.float32)] * b
        for n in sorted(set(frames)):  # decode equal lengths together: padding never reaches a vocoder input
            idx = [j for j in range(b) if frames[j] == n]
            sel = torch.tensor(idx, device=dev)
            y = self.vocoder.decode(est[sel, :n], lengths[sel], wav[sel, : n * self.hop] if needs_noisy else None)
            for j, row in zip(idx, y.float().cpu().numpy()):
                outs[j] = row[: len(segs[j])]
        return outs

    def enhance_mel(self, noisy_mel: torch.Tensor, mask: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
        """Noisy log-mel ``[B, T, F]`` -> enhanced log-mel (ODE with this enhancer's nfe and CFG)."""
        cond = self.model.normalize(noisy_mel, "noisy") * mask[..., None]
        x1 = ode_sample(self.model, cond, mask, self.nfe, self.cfg_strength, x0=x0)
        return self.model.denormalize(x1).masked_fill(~mask[..., None], math.log(self.mel_cfg.log_floor))


class NoUsableInput(RuntimeError):
    """``enhance_files`` found no input it could enhance (the message says how many were given)."""


def collect_inputs(inputs: Sequence[str]) -> dict[str, tuple[str, int]]:
    """``{utt: (source, ark rate)}`` from wav.scp files, directories and audio files (see ``enhance_files``).

    ``ark rate`` is the rate of float32 ark audio of an scp's data dir (``flowse.data.datadir``);
    audio files carry their own. Duplicate utts are an error; a missing path is skipped with a warning.
    """
    from flowse.data.datadir import read_sample_rate

    out: dict[str, tuple[str, int]] = {}

    def add(key: str, value: str, where: str, rate: int = SAMPLE_RATE) -> None:
        if key in out:
            raise ValueError(f"duplicate utterance id {key!r} ({where} and {out[key][0]})")
        out[key] = (value, rate)

    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                for f in sorted(files):
                    if f.lower().endswith(AUDIO_EXTS):
                        add(os.path.splitext(f)[0], os.path.join(root, f), item)
        elif item.endswith(".scp"):
            rate = read_sample_rate(os.path.dirname(item))
            for k, v in read_kv(item).items():
                add(k, v, item, rate)
        elif os.path.exists(item):
            add(os.path.splitext(os.path.basename(item))[0], item, item)
        else:
            logger.warning("skipping %s: no such file or directory", item)
    return out


def _load(key: str, value: str, ark_rate: int, sr: int) -> tuple[np.ndarray, int]:
    """``(audio, its rate)``: files as stored (any layout, see ``to_mono``), scp entries at ``sr``."""
    import soundfile as sf

    from flowse.data.kaldi import load_entry

    if os.path.exists(value):
        try:
            x, file_sr = sf.read(value, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise AudioError(f"{value}: cannot read audio ({e})") from None
        return x, file_sr
    return load_entry(value, key, sr, ark_rate), sr


def _duration(value: str, ark_rate: int) -> float:
    """Seconds of audio (header only for files; ark entries are loaded)."""
    import soundfile as sf

    from flowse.data.kaldi import load_entry

    if os.path.exists(value):
        info = sf.info(value)
        return info.frames / info.samplerate
    return len(load_entry(value, sr=ark_rate, stored_sr=ark_rate)) / ark_rate


def enhance_files(enhancer: Enhancer, inputs: Sequence[str], out_dir: str, out_sr: int | None = None) -> dict:
    """Enhance files into ``<out_dir>/<utt>.wav`` + ``<out_dir>/wav.scp``; what stage 6 and ``flowse-enhance`` run.

    ``inputs``: Kaldi ``wav.scp`` files (``<utt> <path or ark:offset>``; float32 ark audio at the
    rate of the scp's data dir), directories (every wav/flac/ogg/mp3/opus file below, utt = file
    name without extension) and audio files (utt = name without extension), mixed freely, at any
    rate and channel count (downmixed, resampled to the model's feature rate).
    ``out_sr``: rate of the written wavs (None: ``enhancer.output_rate``, the vocoder's).
    Writes ``<out_dir>/enhance.yaml`` (the resolved ``EnhanceConfig``) first, ``<utt>.wav``
    (mono 16-bit PCM), then ``wav.scp`` (absolute paths, C-sorted) last and atomically.
    Unreadable or unusable inputs are skipped with one warning line each. Utterances are
    enhanced shortest first in groups of about ``batch_size`` chunks.
    Returns ``{"written", "given", "audio_seconds" (input), "elapsed", "rtf", "sample_rate"}``;
    raises ``NoUsableInput`` (and writes no ``wav.scp``) when no input could be enhanced.
    """
    sources = collect_inputs(inputs)
    if not sources:
        raise NoUsableInput(f"no inputs found in {list(inputs)}")
    os.makedirs(out_dir, exist_ok=True)
    save_config(replace(enhancer.cfg, nfe=enhancer.nfe, cfg_strength=enhancer.cfg_strength),
                os.path.join(out_dir, "enhance.yaml"))
    rate_out = out_sr or enhancer.output_rate
    durations = {}
    for key, (value, ark_rate) in sources.items():
        try:
            durations[key] = _duration(value, ark_rate)
        except Exception as e:  # noqa: BLE001 - one warning line per bad input
            logger.warning("skipping %s: cannot read %s (%s)", key, value, e)
    written: dict[str, str] = {}
    audio_seconds = 0.0
    t0 = time.time()

    def flush(keys: list[str]) -> None:
        nonlocal audio_seconds
        wavs, names = [], []
        for key in keys:
            value, ark_rate = sources[key]
            try:
                x, sr = _load(key, value, ark_rate, enhancer.sample_rate)
                wavs.append(to_mono(x, sr, enhancer.sample_rate, f"{key} ({value})"))
                names.append(key)
            except (AudioError, ValueError) as e:
                logger.warning("skipping %s: %s", key, e)
        if not wavs:
            return
        outs = enhancer.enhance_batch(wavs, enhancer.sample_rate, rate_out)
        for key, x, y in zip(names, wavs, outs):
            path = os.path.abspath(os.path.join(out_dir, f"{key}.wav"))
            write_wav(path, y, rate_out)
            written[key] = path
            audio_seconds += len(x) / enhancer.sample_rate

    group: list[str] = []
    group_chunks = 0.0
    for key in sorted(durations, key=lambda k: durations[k]):
        group.append(key)
        group_chunks += max(1.0, durations[key] / enhancer.cfg.chunk_seconds)
        if group_chunks >= enhancer.cfg.batch_size:
            flush(group)
            group, group_chunks = [], 0.0
    if group:
        flush(group)
    elapsed = time.time() - t0
    if not written:
        raise NoUsableInput(f"no input could be enhanced ({len(sources)} given)")
    write_kv(os.path.join(out_dir, "wav.scp"), written)
    return {"written": len(written), "given": len(sources), "audio_seconds": audio_seconds, "elapsed": elapsed,
            "rtf": elapsed / max(audio_seconds, 1e-9), "sample_rate": rate_out}
