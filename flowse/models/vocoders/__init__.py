"""Vocoders: log-mel ``[B, T, n_mels]`` -> waveform ``[B, T * hop]`` at the mel config's rate (``base.Vocoder.decode``).

Types (``vocoder.yaml`` ``type``; the registry is ``config.VOCODERS``):
- ``griffinlim``: inverse mel + fast Griffin-Lim, no weights;
- ``melgain``: enhanced/noisy mel ratio as a gain on the noisy STFT, no weights, needs the noisy wav;
- ``hifigan``: HiFi-GAN generator, weights in ``vocoder.pt`` (jik876 ``{"generator": ...}`` format);
- ``onnx``: any user-exported vocoder, ``[B, n_mels, T]`` log-mel in, waveform out.

A vocoder dir holds ``vocoder.yaml`` (a resolved ``VocoderConfig``, mel config included) and
the files its type loads (``Vocoder.load_files``): for hifigan ``vocoder.pt``; for onnx, the
model file (``vocoder.onnx``) it names.
"""
from __future__ import annotations

import importlib
import os

import torch

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import WEIGHTS_FILE, Vocoder
from flowse.models.vocoders.config import VOCODER_TYPES, VOCODERS, VocoderConfig
from flowse.utils.config import ConfigError, load_known_sections

__all__ = ["Vocoder", "VocoderConfig", "VOCODERS", "VOCODER_TYPES", "build_vocoder", "load_vocoder", "vocoder_class",
           "read_vocoder_config", "WEIGHTS_FILE", "CONFIG_FILE"]

CONFIG_FILE = "vocoder.yaml"


def vocoder_class(kind: str) -> type[Vocoder]:
    """The class registered for vocoder type ``kind`` (imports its module)."""
    if kind not in VOCODERS:
        raise ConfigError(f"unknown vocoder type {kind!r}; choose one of {list(VOCODERS)}")
    module, _, name = VOCODERS[kind].cls.partition(":")
    return getattr(importlib.import_module(module), name)


def build_vocoder(cfg: VocoderConfig, device: str | torch.device = "cpu", base_dir: str = ".") -> Vocoder:
    """Construct the vocoder ``cfg.type`` (trainable types with their initial, untrained weights)."""
    section = getattr(cfg, VOCODERS[cfg.type].section) if cfg.type in VOCODERS else None
    return vocoder_class(cfg.type).from_config(cfg.mel or MelConfig(), section, base_dir, device)


def read_vocoder_config(path: str) -> VocoderConfig:
    """``VocoderConfig`` of a written vocoder.yaml; sections it does not know (stage-3 settings) are ignored."""
    return load_known_sections(VocoderConfig, path)


def load_vocoder(vocoder_dir: str, device: str | torch.device = "cpu") -> Vocoder:
    """Load the prepared vocoder of ``vocoder_dir`` (``vocoder.yaml`` + its files) on ``device``."""
    path = os.path.join(vocoder_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{vocoder_dir}: no {CONFIG_FILE} (run stage 3 to prepare the vocoder)")
    cfg = read_vocoder_config(path)
    if cfg.mel is None:
        raise ValueError(f"{path}: no mel section (a vocoder.yaml written by stage 3 always has one)")
    section = getattr(cfg, VOCODERS[cfg.type].section)
    return vocoder_class(cfg.type).load(vocoder_dir, cfg.mel, section, device)
