"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808, identical to the reference procedure, batched.

Reference: Microsoft's ``dnsmos_local.py`` as packaged in ``speechmos`` 0.0.1.1
(``speechmos/dnsmos.py``). Reproduced exactly, quirks included:
- a clip shorter than 9.01 s is *doubled* (``np.append(audio, audio)``) until it is
  at least 144160 samples long;
- ``num = int(floor(len / fs) - 9.01) + 1`` windows start every second; window
  ``i`` is ``audio[int(i * fs) : int((i + 9.01) * fs)]`` and is dropped when float
  rounding makes it one sample short (windows 7-23, 119-122, ... of long clips);
- P.835 gets the raw 144160-sample window, P.808 a librosa mel of the window minus
  its last 160 samples (n_fft 321, hop 160, 120 mels, power_to_db with the window's
  max as reference, top_db 80, then ``(db + 40) / 40``), reproduced in torch;
- raw P.835 outputs are mapped by the polynomials below, then every score is
  averaged over the windows of the clip.
The level is never normalised (DNSMOS is level-sensitive). Unlike the reference,
values beyond [-1, 1] are not an error: callers clip them (see ``flowse.metrics.suite``).

All windows of all clips of a call go through onnxruntime together, in chunks of
``batch_size`` windows; thread and batch defaults come from ``flowse.bin.bench_metrics``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import site
import sys
from typing import Sequence

import numpy as np
import torch

from flowse.metrics.config import DnsmosConfig
from flowse.metrics.melspec import PowerMelSpectrogram
from flowse.utils.log import get_logger

logger = get_logger(__name__)

SR = 16000
INPUT_LENGTH = 9.01
WINDOW = int(INPUT_LENGTH * SR)  # 144160
P808_FRAMES = 900

MODEL_FILES = {"sig_bak_ovr.onnx": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
               "model_v8.onnx": "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91"}

POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
POLY_OVRL = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


def speechmos_model_dir() -> str:
    """``dnsmos_models/`` of the installed ``speechmos`` wheel, located without importing it."""
    candidates = []
    try:
        spec = importlib.util.find_spec("speechmos")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += list(spec.submodule_search_locations)
    for d in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        candidates.append(os.path.join(d, "speechmos"))
    for c in candidates:
        d = os.path.join(c, "dnsmos_models")
        if os.path.isfile(os.path.join(d, "sig_bak_ovr.onnx")):
            return d
    raise FileNotFoundError(
        "DNSMOS models not found: install the speechmos wheel (pip install speechmos==0.0.1.1 --no-deps) "
        "or set dnsmos.model_dir to a folder with sig_bak_ovr.onnx and model_v8.onnx"
    )


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tile(audio: np.ndarray) -> np.ndarray:
    """The reference's tiling: double a clip (``np.append(audio, audio)``) until >= 144160 samples."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"DNSMOS needs a non-empty 1-D waveform, got shape {audio.shape}")
    while len(audio) < WINDOW:
        audio = np.append(audio, audio)
    return audio


def window_starts(n: int) -> list[int]:
    """Start samples of the reference's windows in a (tiled) clip of ``n`` samples."""
    num_hops = int(np.floor(n / SR) - INPUT_LENGTH) + 1
    starts = [int(i * SR) for i in range(num_hops) if int((i + INPUT_LENGTH) * SR) - int(i * SR) >= WINDOW]
    return [s for s in starts if s + WINDOW <= n]


def reference_windows(audio: np.ndarray) -> np.ndarray:
    """The reference's 9.01 s windows of one clip, ``[n_windows, 144160]`` float32 (see module doc)."""
    tiled = tile(audio)
    return np.lib.stride_tricks.sliding_window_view(tiled, WINDOW)[window_starts(len(tiled))]


class P808Features(torch.nn.Module):
    """``windows [W, 144160]`` -> P.808 model input ``[W, 900, 120]`` (the reference's librosa mel)."""

    def __init__(self):
        super().__init__()
        self.mel = PowerMelSpectrogram(SR, n_fft=321, hop_length=160, n_mels=120)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        mel = self.mel(windows[:, :-160])
        ref = mel.amax(dim=(1, 2), keepdim=True)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10)) - 10.0 * torch.log10(ref.clamp_min(1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)
        return (db + 40.0) / 40.0


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class DNSMOS:
    """Batched DNSMOS scorer: ``score(list of 16 kHz waveforms) -> {"SIG", "BAK", "OVRL", "P808"}``."""

    def __init__(self, cfg: DnsmosConfig | None = None, device: str = "cpu"):
        import onnxruntime as ort

        self.cfg = cfg = cfg or DnsmosConfig()
        self.model_dir = cfg.model_dir or speechmos_model_dir()
        paths = {}
        for name, digest in MODEL_FILES.items():
            path = os.path.join(self.model_dir, name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"DNSMOS model missing: {path}")
            if cfg.verify_sha256:
                got = sha256(path)
                if got != digest:
                    raise ValueError(
                        f"{path}: sha256 {got} differs from the reference model's {digest}; "
                        "use the speechmos 0.0.1.1 models or set dnsmos.verify_sha256 false"
                    )
            paths[name] = path
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif str(device).startswith("cuda"):
            logger.info("onnxruntime has no CUDA provider here: DNSMOS runs on CPU")
        so = ort.SessionOptions()
        so.intra_op_num_threads = cfg.threads or _cpu_count()
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(paths["sig_bak_ovr.onnx"], so, providers=providers)
        self.p808_sess = ort.InferenceSession(paths["model_v8.onnx"], so, providers=providers)
        self.features = P808Features()

    def score_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs for windows ``[W, 144160]``: P.835 ``[W, 3]`` (sig, bak, ovrl) and P.808 ``[W]``."""
        raw = np.empty((len(windows), 3), dtype=np.float32)
        p808 = np.empty(len(windows), dtype=np.float32)
        bs = self.cfg.batch_size
        for i in range(0, len(windows), bs):
            chunk = np.ascontiguousarray(windows[i : i + bs], dtype=np.float32)
            raw[i : i + bs] = self.sess.run(None, {"input_1": chunk})[0]
            with torch.inference_mode():
                feats = self.features(torch.from_numpy(chunk)).numpy()
            p808[i : i + bs] = self.p808_sess.run(None, {"input_1": feats})[0][:, 0]
        return raw, p808

    def score(self, wavs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Per-clip SIG, BAK, OVRL, P808 (float64 ``[B]``) of 16 kHz float waveforms.

        A tiled clip is periodic, so its windows that start at the same phase are equal
        sample for sample: each distinct window is scored once (exact; e.g. a 1 s clip
        has 7 identical windows, a 2 s clip 2 distinct ones among 7).
        """
        keys = ("SIG", "BAK", "OVRL", "P808")
        if len(wavs) == 0:
            return {k: np.zeros(0) for k in keys}
        unique: list[np.ndarray] = []
        per_clip: list[list[int]] = []
        for w in wavs:
            tiled = tile(w)
            period = len(w) if len(tiled) > len(w) else len(tiled) + WINDOW
            seen: dict[int, int] = {}
            rows = []
            for s in window_starts(len(tiled)):
                phase = s % period
                if phase not in seen:
                    seen[phase] = len(unique)
                    unique.append(tiled[phase : phase + WINDOW])
                rows.append(seen[phase])
            per_clip.append(rows)
        raw, p808 = self.score_windows(np.stack(unique))
        seg = {"SIG": POLY_SIG(raw[:, 0]), "BAK": POLY_BAK(raw[:, 1]), "OVRL": POLY_OVRL(raw[:, 2]),
               "P808": p808.astype(np.float64)}
        return {k: np.array([seg[k][rows].mean() for rows in per_clip]) for k in keys}
