"""Vocoders: log-mel ``[B, T, 80]`` -> waveform ``[B, T * 256]`` (see ``base.Vocoder.decode``).

Types (``vocoder.yaml`` ``type``):
- ``griffinlim``: inverse mel + fast Griffin-Lim, no weights;
- ``melgain``: enhanced/noisy mel ratio as a gain on the noisy STFT, no weights, needs the noisy wav;
- ``hifigan``: HiFi-GAN generator, weights in ``vocoder.pt`` (jik876 ``{"generator": ...}`` format);
- ``onnx``: any user-exported vocoder, ``[B, 80, T]`` log-mel in, waveform out.

A vocoder dir holds ``vocoder.yaml`` (a resolved ``VocoderConfig``, mel config included) and,
for hifigan, ``vocoder.pt``; for onnx, the model file (``vocoder.onnx``) it names.
"""
from __future__ import annotations

import os

import torch

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import Vocoder
from flowse.models.vocoders.config import VOCODER_TYPES, VocoderConfig
from flowse.utils.config import load_config

__all__ = ["Vocoder", "VocoderConfig", "VOCODER_TYPES", "build_vocoder", "load_vocoder", "WEIGHTS_FILE", "CONFIG_FILE"]

CONFIG_FILE = "vocoder.yaml"
WEIGHTS_FILE = "vocoder.pt"


def build_vocoder(cfg: VocoderConfig, device: str | torch.device = "cpu", base_dir: str = ".") -> Vocoder:
    """Construct the vocoder ``cfg.type`` (hifigan with its initial, untrained weights)."""
    mel = cfg.mel or MelConfig()
    if cfg.type == "griffinlim":
        from flowse.models.vocoders.griffinlim import GriffinLimVocoder

        voc: Vocoder = GriffinLimVocoder(mel, cfg.griffinlim)
    elif cfg.type == "melgain":
        from flowse.models.vocoders.melgain import MelGainVocoder

        voc = MelGainVocoder(mel, cfg.melgain)
    elif cfg.type == "hifigan":
        from flowse.models.vocoders.hifigan import HiFiGANVocoder

        voc = HiFiGANVocoder(mel, cfg.hifigan)
    elif cfg.type == "onnx":
        from flowse.models.vocoders.onnx import OnnxVocoder

        return OnnxVocoder(mel, cfg.onnx, base_dir=base_dir, device=str(device)).eval()
    else:
        raise ValueError(f"unknown vocoder type {cfg.type!r}; choose one of {list(VOCODER_TYPES)}")
    return voc.to(device).eval()


def load_vocoder(vocoder_dir: str, device: str | torch.device = "cpu") -> Vocoder:
    """Load ``<vocoder_dir>/vocoder.yaml`` (+ ``vocoder.pt`` for hifigan) on ``device``."""
    path = os.path.join(vocoder_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{vocoder_dir}: no {CONFIG_FILE} (run stage 3 to prepare the vocoder)")
    cfg = load_config(VocoderConfig, path)
    if cfg.mel is None:
        raise ValueError(f"{path}: no mel section (a vocoder.yaml written by stage 3 always has one)")
    voc = build_vocoder(cfg, "cpu", base_dir=vocoder_dir) if cfg.type != "onnx" else None
    if cfg.type == "hifigan":
        weights = os.path.join(vocoder_dir, WEIGHTS_FILE)
        if not os.path.exists(weights):
            raise FileNotFoundError(f"{vocoder_dir}: hifigan vocoder without {WEIGHTS_FILE}")
        voc.load_weights(weights)
    if voc is None:
        return build_vocoder(cfg, device, base_dir=vocoder_dir)
    return voc.to(device).eval()
