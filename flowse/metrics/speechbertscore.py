"""SpeechBERTScore (Saeki et al. 2024): BERTScore over self-supervised speech features.

As the reference ``discrete_speech_metrics.SpeechBERTScore``: the raw 16 kHz
waveform (no normalisation, no attention mask) goes through the SSL model with
``output_hidden_states=True``; features are ``hidden_states[layer]`` (index 0 is
the input of the first transformer layer); the cosine matrix ``S[i, j]`` between
estimate frame i and reference frame j gives precision = mean_i max_j S,
recall = mean_j max_i S, F1 = 2PR / (P + R).

The backbone is a LOCAL HuggingFace-format dir (``save_pretrained`` layout) of
WavLM, HuBERT or wav2vec2; nothing is downloaded. Batching only groups waveforms
of identical length, so every feature equals the unbatched reference's (padding
would change group-norm feature extractors and attention).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from flowse.metrics.batching import dedup_arrays
from flowse.metrics.registry import Metric, Output
from flowse.utils.config import check
from flowse.utils.log import get_logger

logger = get_logger(__name__)


SBS_HINT = (
    "SBS is n/a: no SSL model configured; set sbs.model_dir to a local HuggingFace model dir "
    "(e.g. microsoft/wavlm-large saved with save_pretrained; layer 14 as in the SpeechBERTScore paper)"
)


@dataclass
class SBSConfig:
    """SpeechBERTScore backbone: a local HuggingFace dir (WavLM/HuBERT/wav2vec2), hidden-state ``layer``.

    yaml section ``sbs``. ``model_dir`` null: SBS is reported as n/a (never replaced by
    another metric). ``variant``: which SpeechBERTScore value is SBS (precision is the paper's).
    """

    model_dir: str | None = None
    layer: int = 14
    variant: Literal["precision", "recall", "f1"] = "precision"
    max_batch_seconds: float = 120.0

    def __post_init__(self):
        check(self.layer >= 0, f"sbs.layer must be >= 0, got {self.layer}")
        check(self.max_batch_seconds > 0, "sbs.max_batch_seconds must be > 0")


def bert_score(gen: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """Precision, recall, F1 of features ``gen [T1, D]`` against ``ref [T2, D]``."""
    sim = (gen @ ref.T) / (torch.norm(gen, dim=1, keepdim=True) * torch.norm(ref, dim=1)[None, :])
    p = sim.max(dim=1).values.mean().item()
    r = sim.max(dim=0).values.mean().item()
    f1 = 2 * p * r / (p + r) if p + r != 0 else float("nan")
    return p, r, f1


class SpeechBERTScore:
    """``score(est, ref) -> {"precision", "recall", "f1"}`` arrays ``[B]``; ``SBS`` is ``cfg.variant``."""

    def __init__(self, cfg: SBSConfig, device: str = "cpu"):
        if not cfg.model_dir:
            raise ValueError("SpeechBERTScore needs sbs.model_dir")
        if not os.path.isfile(os.path.join(cfg.model_dir, "config.json")):
            raise FileNotFoundError(
                f"sbs.model_dir {cfg.model_dir}: no config.json; expected a HuggingFace model dir "
                "written by save_pretrained (WavLM, HuBERT or wav2vec2)"
            )
        from transformers import AutoModel

        self.cfg = cfg
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(cfg.model_dir, local_files_only=True).eval().to(self.device)
        n_layers = getattr(self.model.config, "num_hidden_layers", None)
        if n_layers is not None and cfg.layer > n_layers:
            raise ValueError(f"sbs.layer {cfg.layer} > {n_layers}, the number of layers of {cfg.model_dir}")

    @torch.inference_mode()
    def features(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Layer features ``[T_i, D]`` (float32, on the model's device) per waveform."""
        out: list[torch.Tensor | None] = [None] * len(wavs)
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(wavs):
            by_len.setdefault(len(w), []).append(i)
        for n, idx in by_len.items():
            per = max(1, int(self.cfg.max_batch_seconds * 16000 // max(n, 1)))
            for k in range(0, len(idx), per):
                chunk = idx[k : k + per]
                x = torch.from_numpy(np.stack([np.asarray(wavs[i], dtype=np.float32) for i in chunk])).to(self.device)
                hs = self.model(x, output_hidden_states=True).hidden_states[self.cfg.layer].float()
                for i, h in zip(chunk, hs):
                    out[i] = h
        return out  # type: ignore[return-value]

    def score(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        ref_list, ref_index = dedup_arrays(ref)
        feats = self.features(list(est) + ref_list)
        res = np.array([bert_score(feats[i], feats[len(est) + j]) for i, j in enumerate(ref_index)]).reshape(-1, 3)
        return {"precision": res[:, 0], "recall": res[:, 1], "f1": res[:, 2]}

    def sbs(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> np.ndarray:
        return self.score(est, ref)[self.cfg.variant]

    def __call__(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray], outputs=("SBS",)) -> dict[str, np.ndarray]:
        return {"SBS": self.sbs(est, ref)}


METRIC = Metric(
    key="sbs",
    outputs=(Output("SBS", 1.0, "SBS", ".4f"),),
    needs_ref=True,
    build=SpeechBERTScore,
    config_key="sbs",
    config=SBSConfig,
    available=lambda cfg: bool(cfg.model_dir),
    hint=SBS_HINT,
)
