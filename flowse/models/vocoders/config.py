"""Vocoder config schema: one yaml for stage 3 (``conf/*/vocoder.yaml``) and for ``exp/vocoder_*/vocoder.yaml``.

Stage 3 reads the conf yaml (``mel`` left out: it is taken from ``dump/mel.yaml``) and
writes the resolved config, ``mel`` filled in, as ``<exp>/vocoder.yaml``; ``load_vocoder``
reads that file back. Only the section named by ``type`` is used; the others are kept
so that a resolved file says everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from flowse.features.mel import MelConfig
from flowse.utils.config import check

VOCODER_TYPES = ("griffinlim", "melgain", "hifigan", "onnx")


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
class HiFiGANTrainConfig:
    """Stage-3 HiFi-GAN training (jik876 defaults: AdamW 2e-4, betas 0.8/0.99, mel L1 x45)."""

    steps: int = 2000
    batch_size: int = 16
    segment_size: int = 8192  # samples; a multiple of the hop length
    lr: float = 2e-4
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    # lr = lr * lr_decay ** (step / lr_decay_steps) (jik876: 0.999 per epoch).
    lr_decay: float = 0.999
    lr_decay_steps: int = 1000
    lambda_mel: float = 45.0
    lambda_fm: float = 1.0  # multiplies jik876's feature_loss (which already carries its factor 2)
    # Scales the discriminators' channel counts (1.0: HiFi-GAN's MPD 41.1M + MSD 29.6M parameters);
    # smaller values only for quick CPU experiments and tests.
    disc_width: float = 1.0
    log_interval: int = 50
    checkpoint_interval: int = 1000
    keep_checkpoints: int = 2
    valid_utts: int = 4  # utterances of the valid set for the mel-L1 log line at each checkpoint
    num_workers: int = 0
    seed: int = 1234

    def __post_init__(self):
        check(self.steps >= 0, "train.steps must be >= 0")
        check(self.batch_size >= 1, "train.batch_size must be >= 1")
        check(self.lr > 0 and 0 < self.lr_decay <= 1 and self.lr_decay_steps > 0, "train: bad lr schedule")
        check(0 < self.disc_width <= 1.0, "train.disc_width must be in (0, 1]")
        check(self.log_interval >= 1 and self.checkpoint_interval >= 1, "train: intervals must be >= 1")


@dataclass
class OnnxConfig:
    """A user-exported vocoder: input ``mel`` float32 ``[B, n_mels, T]`` (natural-log mel of
    flowse.features.mel), output waveform ``[B, n]`` or ``[B, 1, n]``, ``n >= T * hop``."""

    path: str = ""  # stage 3 copies it into the exp dir as vocoder.onnx; relative paths resolve there
    input_name: str = ""  # default: the model's first input
    intra_op_threads: int = 0  # 0: onnxruntime's default

    def __post_init__(self):
        check(self.intra_op_threads >= 0, "onnx.intra_op_threads must be >= 0")


@dataclass
class VocoderConfig:
    type: Literal["griffinlim", "melgain", "hifigan", "onnx"] = "griffinlim"
    griffinlim: GriffinLimConfig = field(default_factory=GriffinLimConfig)
    melgain: MelGainConfig = field(default_factory=MelGainConfig)
    hifigan: HiFiGANConfig = field(default_factory=HiFiGANConfig)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    # hifigan: a standard generator checkpoint ({"generator": state_dict}) loaded instead of training;
    # its config.json (jik876 layout) is read from pretrained_config or from beside the checkpoint.
    pretrained: str = ""
    pretrained_config: str = ""
    train: HiFiGANTrainConfig = field(default_factory=HiFiGANTrainConfig)
    # Utterances per batch for the stage-3 ceiling decode.
    decode_batch_size: int = 4
    # None in conf yaml: stage 3 fills it from dump/mel.yaml (a different explicit value is an error).
    mel: Optional[MelConfig] = None

    def __post_init__(self):
        check(self.decode_batch_size >= 1, "decode_batch_size must be >= 1")
