"""Config schemas of the metrics: model locations shared by ``score.yaml`` and the GRPO reward.

Metric names (files of the scoring CLI, keys of every result dict):
``SIG BAK OVRL P808`` (DNSMOS P.835 and P.808, non-intrusive), ``SPK`` (speaker
similarity), ``SBS`` (SpeechBERTScore), ``PESQ`` (wide band), ``ESTOI``, ``SISDR``
(dB). The scoring CLI selects them by group: ``dnsmos spk sbs pesq estoi sisdr``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowse.utils.config import ConfigError, check

METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "dnsmos": ("SIG", "BAK", "OVRL", "P808"),
    "spk": ("SPK",),
    "sbs": ("SBS",),
    "pesq": ("PESQ",),
    "estoi": ("ESTOI",),
    "sisdr": ("SISDR",),
}
ALL_METRICS: tuple[str, ...] = tuple(m for ms in METRIC_GROUPS.values() for m in ms)
NEEDS_REF: frozenset[str] = frozenset({"SPK", "SBS", "PESQ", "ESTOI", "SISDR"})
GROUP_OF: dict[str, str] = {m: g for g, ms in METRIC_GROUPS.items() for m in ms}

SBS_HINT = (
    "SBS is n/a: no SSL model configured; set sbs.model_dir to a local HuggingFace model dir "
    "(e.g. microsoft/wavlm-large saved with save_pretrained; layer 14 as in the SpeechBERTScore paper)"
)


def expand_metrics(names: list[str] | str) -> list[str]:
    """``"dnsmos,spk"`` or ``["OVRL", "pesq"]`` -> metric names in canonical order; unknown names raise."""
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    out: set[str] = set()
    for n in names:
        if n.lower() in METRIC_GROUPS:
            out.update(METRIC_GROUPS[n.lower()])
        elif n.upper() in ALL_METRICS:
            out.add(n.upper())
        else:
            raise ConfigError(
                f"unknown metric {n!r}; allowed: groups {list(METRIC_GROUPS)} or metrics {list(ALL_METRICS)}"
            )
    return [m for m in ALL_METRICS if m in out]


@dataclass
class DnsmosConfig:
    """DNSMOS P.835 (``sig_bak_ovr.onnx``) and P.808 (``model_v8.onnx``).

    ``model_dir`` null: the ``dnsmos_models/`` folder of the installed ``speechmos``
    wheel (found without importing it). ``threads`` 0: one onnxruntime intra-op
    thread per available core. ``batch_size``: 9.01 s windows per onnxruntime call.
    ``share_overlap``: run P.835's convolutions once over the overlapping windows of
    a clip (same values to float rounding; see ``flowse.metrics.dnsmos.SharedTrunk``);
    false scores every window with the whole model, as the reference does.
    """

    model_dir: str | None = None
    verify_sha256: bool = True
    threads: int = 0
    batch_size: int = 1
    share_overlap: bool = True

    def __post_init__(self):
        check(self.threads >= 0, f"dnsmos.threads must be >= 0, got {self.threads}")
        check(self.batch_size >= 1, f"dnsmos.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class SpeakerConfig:
    """Speaker encoder for SPK (cosine similarity of embeddings).

    ``onnx_path`` null: Resemblyzer's GE2E encoder (``resemblyzer_weights`` null = the
    ``pretrained.pt`` inside the installed Resemblyzer wheel). An ONNX path selects
    that model instead (e.g. CosyVoice ``campplus.onnx``): Kaldi fbank of
    ``onnx_num_mel_bins`` bins (25/10 ms, dither 0) of the waveform times
    ``onnx_wav_scale`` (1.0 as CosyVoice, 32768 as wespeaker), minus its per-utterance
    mean, fed as ``[1, frames, bins]``.
    ``vad_trim``: Resemblyzer's ``trim_long_silences`` (needs ``webrtcvad``) before
    embedding; off by default (see ``flowse.metrics.speaker``).
    """

    onnx_path: str | None = None
    onnx_num_mel_bins: int = 80
    onnx_wav_scale: float = 1.0
    resemblyzer_weights: str | None = None
    vad_trim: bool = False
    rate: float = 1.3
    min_coverage: float = 0.75
    batch_size: int = 128

    def __post_init__(self):
        check(0.625 <= self.rate <= 100, f"speaker.rate must be in [0.625, 100] partials/s, got {self.rate}")
        check(0 < self.min_coverage <= 1, f"speaker.min_coverage must be in (0, 1], got {self.min_coverage}")
        check(self.batch_size >= 1, "speaker.batch_size must be >= 1")
        check(self.onnx_wav_scale > 0, "speaker.onnx_wav_scale must be > 0")


@dataclass
class SBSConfig:
    """SpeechBERTScore backbone: a local HuggingFace dir (WavLM/HuBERT/wav2vec2), hidden-state ``layer``.

    ``model_dir`` null: SBS is reported as n/a (never replaced by another metric).
    ``variant``: which SpeechBERTScore value is SBS (precision is the paper's).
    """

    model_dir: str | None = None
    layer: int = 14
    variant: Literal["precision", "recall", "f1"] = "precision"
    max_batch_seconds: float = 120.0

    def __post_init__(self):
        check(self.layer >= 0, f"sbs.layer must be >= 0, got {self.layer}")
        check(self.max_batch_seconds > 0, "sbs.max_batch_seconds must be > 0")


@dataclass
class ScoreModelsConfig:
    dnsmos: DnsmosConfig = field(default_factory=DnsmosConfig)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)
    sbs: SBSConfig = field(default_factory=SBSConfig)


@dataclass
class ScoreConfig:
    """``score.yaml``: metric defaults of the scoring CLI plus the model locations.

    ``min_seconds``: shorter utterances are skipped (logged, listed in summary.json).
    ``batch_size``: utterances scored together (DNSMOS windows and SPK partials are batched).
    """

    metrics: list[str] = field(default_factory=lambda: ["dnsmos", "spk", "sbs", "pesq", "estoi", "sisdr"])
    models: ScoreModelsConfig = field(default_factory=ScoreModelsConfig)
    batch_size: int = 16
    min_seconds: float = 0.5

    def __post_init__(self):
        expand_metrics(self.metrics)
        check(self.batch_size >= 1, "batch_size must be >= 1")
        check(self.min_seconds >= 0, "min_seconds must be >= 0")
