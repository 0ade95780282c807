"""Speaker similarity (SPK): cosine of speaker embeddings of estimate and reference.

Default encoder: Resemblyzer's GE2E weights (``resemblyzer/pretrained.pt`` of the
installed wheel, loaded with ``weights_only=True``), re-implemented as a batched
torch module (CPU or GPU) that reproduces ``VoiceEncoder.embed_utterance``:
40-band power mel (librosa convention, 25 ms / 10 ms), partial utterances of 160
frames every ``round(16000 / rate / 160)`` frames (rate 1.3/s), a last partial kept
when it covers >= ``min_coverage``, zero padding to the last partial, 3-layer LSTM
(40 -> 256) -> Linear(256, 256) -> ReLU -> L2 norm per partial, then the L2-normed
mean of the partials. Zero padding a batch to its longest member gives every
utterance exactly the frames the reference computes for it alone.

Preprocessing reproduced from ``resemblyzer.preprocess_wav``: ``normalize_volume``
to -30 dBFS (increase only) always; ``trim_long_silences`` (webrtcvad, aggressiveness
3, 30 ms windows) only with ``vad_trim: true``: it is data-dependent (the VAD decides
differently on an enhanced output and on its clean reference, and its decisions
cannot be batched), and estimate and reference here are time-aligned anyway.
An all-zero waveform has no defined embedding: its similarity is NaN.

Alternative: any ONNX speaker model (``speaker.onnx_path``), e.g. CosyVoice's
``campplus.onnx`` (192-dim CAM++), fed Kaldi fbank features minus their mean.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from flowse.metrics.batching import dedup_arrays
from flowse.metrics.melspec import PowerMelSpectrogram
from flowse.metrics.registry import Metric, Output, Scores
from flowse.utils.config import check
from flowse.utils.log import get_logger
from flowse.utils.packages import find_package_file

logger = get_logger(__name__)

SR = 16000
HOP = 160
PARTIAL_FRAMES = 160
INT16_MAX = 2**15 - 1


@dataclass
class SpeakerConfig:
    """Speaker encoder for SPK (cosine similarity of embeddings); yaml section ``speaker``.

    ``onnx_path`` null: Resemblyzer's GE2E encoder (``resemblyzer_weights`` null = the
    ``pretrained.pt`` inside the installed Resemblyzer wheel). An ONNX path selects
    that model instead (e.g. CosyVoice ``campplus.onnx``): Kaldi fbank of
    ``onnx_num_mel_bins`` bins (25/10 ms, dither 0) of the waveform times
    ``onnx_wav_scale`` (1.0 as CosyVoice, 32768 as wespeaker), minus its per-utterance
    mean, fed as ``[1, frames, bins]``.
    ``vad_trim``: Resemblyzer's ``trim_long_silences`` (needs ``webrtcvad``) before
    embedding; off by default (see the module doc).
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


def resemblyzer_weights_path() -> str:
    """``pretrained.pt`` of the installed Resemblyzer wheel, located without importing it (it imports librosa)."""
    found = find_package_file("resemblyzer", "pretrained.pt")
    if found:
        return found
    raise FileNotFoundError(
        "Resemblyzer weights not found: pip install Resemblyzer --no-deps, or set speaker.resemblyzer_weights "
        "to a GE2E pretrained.pt, or speaker.onnx_path to an ONNX speaker model"
    )


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[tuple[int, int]]:
    """Mel frame ranges of the partial utterances, as ``VoiceEncoder.compute_partial_slices``."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SR / rate) / HOP))
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    start, stop = slices[-1][0] * HOP, slices[-1][1] * HOP
    if (n_samples - start) / (stop - start) < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Resemblyzer's ``normalize_volume(..., increase_only=True)``; all-zero input is returned as is."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    if rms == 0:
        return wav
    change = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    if change < 0:
        return wav
    return (wav * (10 ** (change / 20))).astype(np.float32)


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``trim_long_silences`` (webrtcvad mode 3, 30 ms, smoothing 8, max silence 6)."""
    try:
        import webrtcvad
    except ImportError as e:
        raise ImportError("speaker.vad_trim needs webrtcvad: pip install webrtcvad-wheels") from e
    from scipy.ndimage import binary_dilation

    win = 30 * SR // 1000
    wav = wav[: len(wav) - (len(wav) % win)]
    pcm = struct.pack("%dh" % len(wav), *(np.round(wav * INT16_MAX)).astype(np.int16))
    vad = webrtcvad.Vad(mode=3)
    flags = np.array([vad.is_speech(pcm[s * 2 : (s + win) * 2], sample_rate=SR) for s in range(0, len(wav), win)])
    width = 8
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    ret = np.cumsum(padded, dtype=float)
    ret[width:] = ret[width:] - ret[:-width]
    mask = np.round(ret[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(6 + 1))
    return wav[np.repeat(mask, win)]


class GE2EEncoder(torch.nn.Module):
    """Resemblyzer's network: mels ``[P, 160, 40]`` -> L2-normed embeddings ``[P, 256]``."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / torch.norm(e, dim=1, keepdim=True)

    @classmethod
    def from_checkpoint(cls, path: str) -> "GE2EEncoder":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("model_state", ckpt)
        model = cls()
        model.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
        return model.eval()


class ResemblyzerEmbedder:
    """Batched ``embed_utterance``: list of waveforms -> ``[B, 256]`` (NaN rows for all-zero input)."""

    def __init__(self, cfg: SpeakerConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = GE2EEncoder.from_checkpoint(cfg.resemblyzer_weights or resemblyzer_weights_path()).to(self.device)
        self.mel = PowerMelSpectrogram(SR, n_fft=400, hop_length=HOP, n_mels=40).to(self.device)

    def preprocess(self, wav: np.ndarray) -> np.ndarray:
        wav = normalize_volume(np.asarray(wav, dtype=np.float32))
        return trim_long_silences(wav) if self.cfg.vad_trim else wav

    @torch.inference_mode()
    def embed_preprocessed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.full((len(wavs), 256), np.nan, dtype=np.float32)
        items = [(i, w, partial_slices(len(w), self.cfg.rate, self.cfg.min_coverage))
                 for i, w in enumerate(wavs) if len(w) > 0 and np.any(w)]
        if not items:
            return out
        n_max = max(max(len(w), sl[-1][1] * HOP) for _, w, sl in items)
        batch = np.zeros((len(items), n_max), dtype=np.float32)
        for j, (_, w, _) in enumerate(items):
            batch[j, : len(w)] = w
        mels = self.mel(torch.from_numpy(batch).to(self.device))  # [B, frames, 40]
        idx_b, idx_f = [], []
        for j, (_, _, sl) in enumerate(items):
            for a, _ in sl:
                idx_b.append(j)
                idx_f.append(a)
        frames = torch.tensor(idx_f, device=self.device)[:, None] + torch.arange(PARTIAL_FRAMES, device=self.device)
        partials = mels[torch.tensor(idx_b, device=self.device)[:, None], frames]  # [P, 160, 40]
        embeds = torch.cat([self.model(partials[k : k + self.cfg.batch_size])
                            for k in range(0, len(partials), self.cfg.batch_size)])
        owner = torch.tensor(idx_b, device=self.device)
        sums = torch.zeros(len(items), embeds.shape[1], device=self.device).index_add_(0, owner, embeds)
        mean = sums / torch.bincount(owner, minlength=len(items))[:, None]
        mean = (mean / torch.norm(mean, dim=1, keepdim=True)).cpu().numpy()
        for j, (i, _, _) in enumerate(items):
            out[i] = mean[j]
        return out

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_preprocessed([self.preprocess(w) for w in wavs])


class OnnxEmbedder:
    """Any ONNX speaker model taking Kaldi fbank ``[1, frames, bins]`` (minus its mean) -> embedding."""

    def __init__(self, cfg: SpeakerConfig, device: str = "cpu"):
        import onnxruntime as ort

        self.cfg = cfg
        if not os.path.isfile(cfg.onnx_path):
            raise FileNotFoundError(f"speaker.onnx_path: no such file {cfg.onnx_path}")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        so = ort.SessionOptions()
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(cfg.onnx_path, so, providers=providers)
        self.input_name = self.sess.get_inputs()[0].name

    def features(self, wav: np.ndarray) -> np.ndarray:
        import torchaudio

        x = torch.from_numpy(np.asarray(wav, dtype=np.float32) * self.cfg.onnx_wav_scale)[None]
        feat = torchaudio.compliance.kaldi.fbank(
            x, num_mel_bins=self.cfg.onnx_num_mel_bins, frame_length=25.0, frame_shift=10.0,
            dither=0.0, sample_frequency=SR,
        )
        return (feat - feat.mean(dim=0, keepdim=True)).numpy()

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        rows: list[np.ndarray | None] = [None] * len(wavs)
        groups: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i, w in enumerate(wavs):
            if len(w) >= 400 and np.any(w):
                f = self.features(w)
                groups.setdefault(f.shape[0], []).append((i, f))
        for items in groups.values():  # equal lengths only: padding would change pooled statistics
            e = self.sess.run(None, {self.input_name: np.stack([f for _, f in items])})[0]
            e = e.reshape(len(items), -1)
            for (i, _), row in zip(items, e):
                rows[i] = row
        dim = next((r.shape[0] for r in rows if r is not None), 1)
        return np.stack([r if r is not None else np.full(dim, np.nan) for r in rows]).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (NaN where a row is NaN or zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sum(a * b, axis=1) / (na * nb)
    return np.where((na > 0) & (nb > 0), s, np.nan)


class SpeakerSimilarity:
    """SPK scorer: ``score(est, ref) -> [B]`` cosine similarities (NaN for all-zero signals)."""

    def __init__(self, cfg: SpeakerConfig | None = None, device: str = "cpu"):
        self.cfg = cfg = cfg or SpeakerConfig()
        self.embedder = OnnxEmbedder(cfg, device) if cfg.onnx_path else ResemblyzerEmbedder(cfg, device)

    def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self.embedder.embed(wavs)

    def score(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> np.ndarray:
        """Identical references (e.g. GRPO's G candidates of one prompt share one) are embedded once."""
        ref_list, ref_index = dedup_arrays(ref)
        e = self.embed(list(est) + ref_list)
        return cosine_rows(e[: len(est)], e[len(est) :][ref_index])

    def __call__(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray], outputs=("SPK",)) -> Scores:
        """The registry's scorer call: ``{"SPK": [B]}``, NaN (with the reason) for all-zero signals."""
        spk = self.score(est, ref)
        nan = [(i, "all-zero estimate or reference: no speaker embedding") for i in np.flatnonzero(np.isnan(spk))]
        return Scores({"SPK": spk}, {"SPK": [(int(i), why) for i, why in nan]} if nan else {})


METRIC = Metric(
    key="spk",
    outputs=(Output("SPK", 1.0, "SPK", ".4f"),),
    needs_ref=True,
    build=SpeakerSimilarity,
    config_key="speaker",
    config=SpeakerConfig,
)
