"""Vocoder decoding into directories of wav files: the stage-3 ceiling and copy synthesis.

Output: ``<out_dir>/<utt>.wav`` (16-bit PCM at the vocoder's rate, atomic) and
``<out_dir>/wav.scp`` (absolute paths, C-sorted) written last, so a directory with a
``wav.scp`` is complete. When the reference waveforms are given (the noisy scp of the
ceiling, the input of copy synthesis), each output is zero-padded (or cut) to its reference's
length so that it aligns sample for sample with it (the vocoder itself gives
``frames * hop`` samples, up to ``hop - 1`` fewer).

Copy synthesis (``copy_synthesis``, ``python -m flowse.bin.vocode``): audio -> log-mel of the
mel config -> vocoder -> audio, the vocoder's ceiling on any audio without a recipe. The
vocoder comes from a stage-3 yaml with its weights (``configured_vocoder``). Mel-gain gets the
input as its "noisy" waveform: the mel is the input's own, the gain is 1 and copy synthesis
returns the input (the identity; it measures nothing but the framing).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from flowse.features.audio import validate, write_wav
from flowse.features.mel import LogMel, MelConfig
from flowse.data.kaldi import ArkWriter, ScpReader, load_audio
from flowse.models.vocoders import Vocoder, build_vocoder
from flowse.utils.config import ConfigError
from flowse.utils.errors import UserError
from flowse.utils.fileio import check_same_keys, read_kv, write_kv
from flowse.utils.log import get_logger

logger = get_logger(__name__)


def _pad_stack(arrays: list[np.ndarray], value: float) -> torch.Tensor:
    n = max(a.shape[0] for a in arrays)
    out = np.full((len(arrays), n, *arrays[0].shape[1:]), value, dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.from_numpy(out)


def decode_to_dir(
    vocoder: Vocoder,
    mels: Mapping[str, np.ndarray],
    out_dir: str,
    refs: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 4,
    where: str = "",
) -> dict[str, str]:
    """Decode ``mels`` (``{utt: log-mel [T, n_mels]}``) in length-sorted batches; returns ``{utt: wav path}``.

    ``refs``: ``{utt: waveform at the vocoder's rate}`` (lazy mappings welcome): the lengths of
    the outputs and the noisy input of a vocoder that ``needs_noisy``. ``where`` names the
    source in errors.
    """
    if refs is None and vocoder.needs_noisy:
        raise ValueError(f"vocoder {vocoder.name} needs the noisy waveforms: none given for {where}")
    n_mels = vocoder.mel_cfg.n_mels
    for k, m in mels.items():
        if m.ndim != 2 or m.shape[1] != n_mels or m.shape[0] == 0:
            raise ValueError(f"{where}:{k}: expected a [frames, {n_mels}] log-mel, got {m.shape}")
    keys = sorted(mels, key=lambda k: -mels[k].shape[0])
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    floor = float(np.log(vocoder.mel_cfg.log_floor))
    written = {}
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        mel = _pad_stack([mels[k] for k in batch], floor)
        lengths = torch.tensor([mels[k].shape[0] for k in batch])
        wavs = [validate(refs[k], f"{where}:{k}") for k in batch] if refs is not None else None
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
    return written


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
        check_same_keys({feats_scp: list(feats), noisy_scp: list(read_kv(noisy_scp))})
        noisy = ScpReader(noisy_scp, vocoder.sample_rate)
    elif vocoder.needs_noisy:
        raise ValueError(f"vocoder {vocoder.name} needs the noisy waveforms: give noisy_scp for {feats_scp}")
    mels = {k: feats[k] for k in feats}
    return len(decode_to_dir(vocoder, mels, out_dir, noisy, batch_size, noisy_scp or feats_scp))


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


def hift_checkpoint_path(checkpoint: str) -> str:
    """The absolute path of CosyVoice2's ``hift.pt`` named by ``hift.checkpoint``; the paper's vocoder needs it."""
    path = os.path.expanduser(checkpoint)
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"vocoder type hift needs CosyVoice2's pretrained HiFT: set hift.checkpoint to the hift.pt of "
            f"CosyVoice2-0.5B (e.g. --vocoder_args \"--hift.checkpoint /path/CosyVoice2-0.5B/hift.pt\"; the file "
            f"comes with the CosyVoice2-0.5B model release, Apache-2.0); got {checkpoint!r}")
    return os.path.abspath(path)


def configured_vocoder(cfg, mel_cfg: MelConfig, device: str | torch.device = "cpu") -> Vocoder:
    """The vocoder of a stage-3 yaml (``VocoderConfig`` fields) with its weights, without a stage-3 dir.

    hifigan needs ``pretrained`` (a jik876 checkpoint, e.g. a stage-3 ``vocoder.pt`` beside its
    ``config.json``, or ``package:...``); hift needs ``hift.checkpoint``; onnx paths resolve
    against the working directory. A ``mel`` section in ``cfg`` must equal ``mel_cfg``.
    """
    from dataclasses import replace

    from flowse.models.vocoders.hifigan import HiFiGANVocoder

    if cfg.mel is not None and cfg.mel != mel_cfg:
        raise ConfigError(f"the vocoder yaml's mel section {cfg.mel} differs from the mel config {mel_cfg}")
    cfg = replace(cfg, mel=mel_cfg)
    if cfg.type == "hifigan":
        if not cfg.pretrained:
            raise UserError("vocoder type hifigan: set pretrained to a trained generator (a jik876 checkpoint with "
                            "its config.json, e.g. exp/vocoder_x/vocoder.pt, or package:<package>/<file>)")
        return HiFiGANVocoder.from_pretrained(mel_cfg, cfg.pretrained, cfg.pretrained_config, device)
    if cfg.type == "hift":
        cfg = replace(cfg, hift=replace(cfg.hift, checkpoint=hift_checkpoint_path(cfg.hift.checkpoint)))
    return build_vocoder(cfg, device, base_dir=os.getcwd())


def copy_synthesis(vocoder: Vocoder, inputs: Sequence[str], out_dir: str, batch_size: int = 4) -> dict[str, str]:
    """Audio -> log-mel -> ``vocoder`` -> ``<out_dir>/<utt>.wav``; returns ``{utt: wav path}``.

    ``inputs``: wav.scp files, directories and audio files (as ``flowse.enhance.collect_inputs``),
    resampled to the vocoder's (= the mel's) rate. Also writes the log-mel it computed,
    ``[frames, n_mels]`` with ``frames = samples // hop``, to ``<out_dir>/feats.scp`` (+ ``feats.ark``).
    Outputs have their input's length at the vocoder's rate. Inputs shorter than one hop are an error.
    """
    from flowse.enhance import collect_inputs

    sources = collect_inputs(inputs)
    if not sources:
        raise UserError(f"no input audio found in {list(inputs)}")
    sr, hop = vocoder.sample_rate, vocoder.hop_length
    wavs = {k: load_audio(v, k, sr=sr, stored_sr=rate) for k, (v, rate) in sources.items()}
    short = [k for k, w in wavs.items() if w.shape[0] < hop]
    if short:
        raise UserError(f"input(s) shorter than one mel frame ({hop} samples at {sr} Hz): {short[:4]}")
    logmel = LogMel(vocoder.mel_cfg)
    os.makedirs(out_dir, exist_ok=True)
    mels = {}
    with ArkWriter(os.path.join(out_dir, "feats.ark"), os.path.join(out_dir, "feats.scp")) as ark, torch.no_grad():
        for k, w in wavs.items():
            mels[k] = logmel(torch.from_numpy(w)[None])[0].numpy()
            ark[k] = mels[k]
    return decode_to_dir(vocoder.eval(), mels, out_dir, wavs, batch_size, "copy synthesis")
