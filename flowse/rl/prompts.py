"""GRPO prompts: noisy training utterances as (noisy log-mel, noisy wav, clean reference wav).

Sources (stage 5 reads the GRPO data set): ``dump/<set>/feats.scp`` (noisy log-mel
``[frames, 80]``), ``data/<set>/wav.scp`` (noisy waveform; the mel-gain vocoder needs it)
and ``data/<set>/spk1.scp`` (clean reference for SPK / SBS / intrusive metrics).
Any ``Mapping[key, np.ndarray]`` works as a source (``flowse.data.kaldi.ScpReader`` for
files, plain dicts in tests).

Cropping keeps wav and mel aligned: a crop of frames ``[f0, f0 + n)`` takes samples
``[f0 * hop, (f0 + n) * hop)`` (the log-mel of ``n * hop`` samples has ``n`` frames).
Shorter utterances are zero-padded to the crop length, with a frame mask, so every
candidate of an iteration has the same padded length (the rollout and the
log-prob recomputation then see identical per-sample inputs whatever the batching).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from flowse.data.kaldi import ScpReader
from flowse.utils.fileio import c_sorted, read_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)


@dataclass
class PromptBatch:
    """``P`` prompts padded to ``T`` frames."""

    keys: list[str]
    mel: torch.Tensor  # [P, T, F] noisy log-mel, zero-padded
    mask: torch.Tensor  # [P, T] bool
    noisy_wav: list[np.ndarray]  # P waveforms of lengths[p] * hop samples
    ref_wav: list[np.ndarray] | None  # clean references, same crops (None: no reference source)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)

    def __len__(self) -> int:
        return len(self.keys)

    def noisy_tensor(self, hop: int) -> torch.Tensor:
        """Noisy waveforms as ``[P, T * hop]`` zero-padded."""
        out = torch.zeros(len(self), self.mel.shape[1] * hop)
        for i, w in enumerate(self.noisy_wav):
            out[i, : min(len(w), out.shape[1])] = torch.from_numpy(np.array(w[: out.shape[1]], dtype=np.float32))
        return out

    def repeat(self, g: int) -> "PromptBatch":
        """Each prompt ``g`` times in a row (prompt-major order: p0 x g, p1 x g, ...)."""
        rep = lambda xs: [x for x in xs for _ in range(g)]  # noqa: E731
        return PromptBatch(rep(self.keys), self.mel.repeat_interleave(g, 0), self.mask.repeat_interleave(g, 0),
                           rep(self.noisy_wav), rep(self.ref_wav) if self.ref_wav is not None else None)


class PromptSet:
    """Random access to prompts; ``get(i, crop_frames, rng)`` crops and pads one utterance."""

    def __init__(self, mels: Mapping[str, np.ndarray], noisy_wavs: Mapping[str, np.ndarray] | None = None,
                 refs: Mapping[str, np.ndarray] | None = None, hop: int = 256, min_frames: int = 1,
                 keys: Sequence[str] | None = None, name: str = "prompts"):
        self.name = name
        self.mels, self.noisy_wavs, self.refs, self.hop, self.min_frames = mels, noisy_wavs, refs, hop, min_frames
        keys = c_sorted(mels.keys()) if keys is None else list(keys)
        missing = [k for k in keys if (noisy_wavs is not None and k not in noisy_wavs) or (refs is not None and k not in refs)]
        if missing:
            logger.warning("%s: %d utterances lack a noisy wav or a reference and are skipped, e.g. %s",
                           name, len(missing), missing[:3])
        self.keys = [k for k in keys if k not in set(missing)]
        if not self.keys:
            raise ValueError(f"{name}: no usable prompts")

    @classmethod
    def from_dirs(cls, dump_set_dir: str, data_set_dir: str, need_ref: bool, hop: int = 256, min_frames: int = 1,
                  max_utts: int = 0, sample_rate: int = 16000) -> "PromptSet":
        """Prompts of one set: ``<dump_set_dir>/feats.scp``, ``<data_set_dir>/{wav,spk1}.scp`` read at
        ``sample_rate`` (the features' and the vocoder's rate, so ``hop`` samples make a frame)."""
        feats = os.path.join(dump_set_dir, "feats.scp")
        wav = os.path.join(data_set_dir, "wav.scp")
        ref = os.path.join(data_set_dir, "spk1.scp")
        for p in [feats, wav] + ([ref] if need_ref else []):
            if not os.path.exists(p):
                raise FileNotFoundError(f"{p} not found (stages 1-2 make it)")
        keys = c_sorted(read_kv(feats))
        n2f = os.path.join(dump_set_dir, "utt2num_frames")
        if os.path.exists(n2f):
            frames = {k: int(v) for k, v in read_kv(n2f).items()}
            short = [k for k in keys if frames.get(k, min_frames) < min_frames]
            if short:
                logger.warning("%s: %d utterances shorter than %d frames skipped, e.g. %s", dump_set_dir, len(short),
                               min_frames, short[:3])
            keys = [k for k in keys if k not in set(short)]
        if max_utts:
            keys = keys[:max_utts]
        refs = ScpReader(ref, sample_rate) if os.path.exists(ref) else None
        return cls(ScpReader(feats), ScpReader(wav, sample_rate), refs, hop, min_frames, keys, name=dump_set_dir)

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, i: int, crop_frames: int = 0, rng: np.random.Generator | None = None
            ) -> tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(key, mel [n, F], noisy [n * hop] | None, ref [n * hop] | None)``, randomly cropped to ``crop_frames``."""
        key = self.keys[i]
        mel = np.asarray(self.mels[key], dtype=np.float32)
        if mel.ndim != 2 or not np.isfinite(mel).all():
            raise ValueError(f"{self.name}: utterance {key}: bad noisy features (shape {mel.shape} or NaN/Inf)")
        n = mel.shape[0]
        f0 = 0
        if crop_frames and n > crop_frames:
            f0 = int(rng.integers(0, n - crop_frames + 1)) if rng is not None else 0
            n = crop_frames
        mel = mel[f0 : f0 + n]
        s0, s1 = f0 * self.hop, (f0 + n) * self.hop

        def cut(src: Mapping[str, np.ndarray] | None, what: str) -> np.ndarray | None:
            if src is None:
                return None
            w = np.asarray(src[key], dtype=np.float32)
            if w.ndim != 1:
                raise ValueError(f"{self.name}: utterance {key}: {what} audio must be 1-d, got {w.shape}")
            seg = w[s0:s1]
            return np.pad(seg, (0, (s1 - s0) - len(seg))) if len(seg) < s1 - s0 else seg

        return key, mel, cut(self.noisy_wavs, "noisy"), cut(self.refs, "reference")

    def batch(self, indices: Sequence[int], crop_frames: int = 0, rngs: Sequence[np.random.Generator] | None = None,
              pad_to: int = 0) -> PromptBatch:
        """Prompts ``indices`` cropped (one rng each) and padded to ``max(pad_to, longest)`` frames."""
        items = [self.get(i, crop_frames, rngs[j] if rngs is not None else None) for j, i in enumerate(indices)]
        t = max([pad_to] + [it[1].shape[0] for it in items])
        f = items[0][1].shape[1]
        mel = torch.zeros(len(items), t, f)
        mask = torch.zeros(len(items), t, dtype=torch.bool)
        for j, it in enumerate(items):
            mel[j, : it[1].shape[0]] = torch.from_numpy(np.array(it[1], dtype=np.float32))
            mask[j, : it[1].shape[0]] = True
        noisy = [it[2] if it[2] is not None else np.zeros(it[1].shape[0] * self.hop, np.float32) for it in items]
        refs = [it[3] for it in items] if self.refs is not None else None
        return PromptBatch([it[0] for it in items], mel, mask, noisy, refs)
