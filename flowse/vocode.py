"""Decode a feature scp to a directory of wav files with a vocoder, in length-sorted batches.

Output: ``<out_dir>/<utt>.wav`` (16-bit PCM, atomic) and ``<out_dir>/wav.scp`` (absolute paths,
C-sorted) written last, so a directory with a ``wav.scp`` is complete. When the noisy scp is
given, each output is zero-padded (or cut) to its noisy input's length so that it aligns
sample for sample with the reference (the vocoder itself gives ``frames * hop`` samples,
up to ``hop - 1`` fewer).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from flowse.features.audio import validate, write_wav
from flowse.data.kaldi import ScpReader
from flowse.models.vocoders.base import Vocoder
from flowse.utils.fileio import check_same_keys, read_kv, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def _pad_stack(arrays: list[np.ndarray], value: float) -> torch.Tensor:
    n = max(a.shape[0] for a in arrays)
    out = np.full((len(arrays), n, *arrays[0].shape[1:]), value, dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.from_numpy(out)


def decode_scp(
    vocoder: Vocoder,
    feats_scp: str,
    out_dir: str,
    noisy_scp: str | None = None,
    batch_size: int = 4,
) -> int:
    """Decode every utterance of ``feats_scp`` (log-mel ``[T, n_mels]``); returns the count written.

    ``noisy_scp`` (a ``wav.scp``) is required when ``vocoder.needs_noisy``; its keys must equal
    the feature keys.
    """
    feats = ScpReader(feats_scp)
    noisy = None
    if noisy_scp:
        noisy_entries = read_kv(noisy_scp)
        check_same_keys({feats_scp: list(feats), noisy_scp: list(noisy_entries)})
        noisy = ScpReader(noisy_scp, vocoder.sample_rate)
    elif vocoder.needs_noisy:
        raise ValueError(f"vocoder {vocoder.name} needs the noisy waveforms: give noisy_scp for {feats_scp}")
    keys = list(feats)
    mels = {k: feats[k] for k in keys}
    for k, m in mels.items():
        if m.ndim != 2 or m.shape[1] != vocoder.mel_cfg.n_mels or m.shape[0] == 0:
            raise ValueError(f"{feats_scp}:{k}: expected a [frames, {vocoder.mel_cfg.n_mels}] log-mel, got {m.shape}")
    keys.sort(key=lambda k: -mels[k].shape[0])
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    floor = float(np.log(vocoder.mel_cfg.log_floor))
    written = {}
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        mel = _pad_stack([mels[k] for k in batch], floor)
        lengths = torch.tensor([mels[k].shape[0] for k in batch])
        wavs = [validate(noisy[k], f"{noisy_scp}:{k}") for k in batch] if noisy is not None else None
        noisy_t = _pad_stack([w[:, None] for w in wavs], 0.0)[..., 0] if wavs and vocoder.needs_noisy else None
        out = vocoder.decode(mel, lengths, noisy_t).cpu().numpy()
        for i, k in enumerate(batch):
            y = out[i, : int(lengths[i]) * vocoder.hop_length]
            if wavs is not None:
                n = wavs[i].shape[0]
                y = np.pad(y, (0, max(0, n - y.shape[0])))[:n]
            path = os.path.join(out_dir, f"{k}.wav")
            write_wav(path, y, vocoder.sample_rate)
            written[k] = path
        logger.info("%s: %d/%d utterances decoded", out_dir, len(written), len(keys))
    write_kv(os.path.join(out_dir, "wav.scp"), written)
    return len(written)


def vocoder_ceiling(
    vocoder: Vocoder, data_dir: str, dump_dir: str, out_root: str, sets: list[str], force: bool = False,
    batch_size: int = 4, vocoder_key: dict | None = None,
) -> list[str]:
    """The vocoder ceiling: clean mel (``dump/<set>/spk1_feats.scp``) -> ``<out_root>/enhanced_<set>/``.

    The noisy ``data/<set>/wav.scp`` gives the output lengths (and the noisy input of mel-gain).
    Sets without clean features (e.g. real recordings) are skipped with a log line. A set's
    ``.ceiling.done`` marker is keyed on ``vocoder_key`` (what identifies the vocoder: stage 3
    passes its marker key, so an edited vocoder yaml redoes the ceiling) and the set's input
    lists; a set done with the same key is skipped unless ``force``. Returns the sets decoded or found done.
    """
    from flowse.utils import stage

    done = []
    for name in sets:
        feats = os.path.join(dump_dir, name, "spk1_feats.scp")
        noisy = os.path.join(data_dir, name, "wav.scp")
        out_dir = os.path.join(out_root, f"enhanced_{name}")
        if not os.path.exists(feats):
            logger.info("vocoder ceiling: skipping %s (no clean reference features %s)", name, feats)
            continue
        key = stage.step_key(files=[feats, noisy], vocoder=vocoder_key)
        if stage.is_done(out_dir, "ceiling", key, force):
            logger.info("vocoder ceiling: %s already done (%s); --force true redoes it", name, out_dir)
            done.append(name)
            continue
        if not os.path.exists(noisy):
            if vocoder.needs_noisy:
                raise FileNotFoundError(f"vocoder ceiling for {name}: {noisy} not found ({vocoder.name} needs it)")
            noisy = None
        stage.clear(out_dir, "ceiling")
        n = decode_scp(vocoder, feats, out_dir, noisy, batch_size)
        stage.mark_done(out_dir, "ceiling", key)
        logger.info("vocoder ceiling: %s -> %s (%d utterances, vocoder %s)", name, out_dir, n, vocoder.name)
        done.append(name)
    return done
