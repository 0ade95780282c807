"""Speech enhancement with a trained model dir: waveform in, enhanced 16 kHz mono float32 waveform out.

    from flowse import Enhancer
    enh = Enhancer.from_model_dir("exp/pretrain_mini", device="cpu")
    clean = enh(noisy, sr)                 # np.ndarray, any rate, mono or multi-channel
    outs = enh.enhance_batch([a, b, c])    # 16 kHz inputs (or pass sr=...)

Pipeline per utterance: downmix (mean over channels) and resample to 16 kHz; split into
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
Output: float32 16 kHz mono, the same number of samples as the (resampled) input, not
clipped (writers clip to [-1, 1]).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flowse.features.audio import SAMPLE_RATE, resample, validate
from flowse.features.mel import LogMel, MelConfig
from flowse.sampling.ode import ode_sample
from flowse.utils.config import check


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


def to_mono_16k(wav: np.ndarray, sr: int, name: str = "input") -> np.ndarray:
    """Float32 mono 16 kHz. 2-D arrays are ``[samples, channels]`` (soundfile) or, when the first
    axis is the short one (<= 8), ``[channels, samples]`` (torchaudio)."""
    x = np.asarray(wav)
    if x.dtype.kind in "iu":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=0) if x.shape[0] <= 8 and x.shape[0] < x.shape[1] else x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D or 2-D waveform, got shape {x.shape}")
    x = resample(x, int(sr), SAMPLE_RATE)
    return validate(x, name)


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

    def __call__(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        return self.enhance_batch([wav], sr)[0]

    def enhance_batch(self, wavs: list[np.ndarray], sr: int = SAMPLE_RATE) -> list[np.ndarray]:
        """Enhance several waveforms (all at rate ``sr``); returns 16 kHz float32 arrays, same order."""
        xs = [to_mono_16k(w, sr, f"input {i}") for i, w in enumerate(wavs)]
        chunk = max(self.hop, int(round(self.cfg.chunk_seconds * SAMPLE_RATE / self.hop)) * self.hop)
        overlap = int(round(self.cfg.overlap_seconds * SAMPLE_RATE / self.hop)) * self.hop
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
        return [overlap_add([results[(i, k)] for k in range(len(sp))], sp, len(xs[i])) for i, sp in enumerate(spans)]

    def _chunk_noise(self, chunk_index: int, frames: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + chunk_index)
        return torch.randn(frames, self.model.n_mels, generator=g)

    @torch.no_grad()
    def _enhance_chunks(self, segs: list[np.ndarray], chunk_ids: list[int]) -> list[np.ndarray]:
        """Waveform chunks (16 kHz) -> enhanced chunks of the same lengths."""
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
