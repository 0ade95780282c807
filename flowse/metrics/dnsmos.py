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

Speed (``DNSMOS.score``), with values unchanged: distinct windows only (a tiled
clip is periodic), P.835's convolutions shared by overlapping windows
(``SharedTrunk``), windows queued across clips in onnxruntime calls of
``batch_size``. On a 2-core CPU batching windows did not help (batch 1 is the
default); ``flowse.bench.metrics`` measures it and the speed against the reference.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from flowse.metrics.dnsmos_trunk import INPUT_LENGTH, P808_FRAMES, SR, WINDOW, SharedTrunk
from flowse.metrics.melspec import PowerMelSpectrogram
from flowse.metrics.registry import Metric, Output
from flowse.utils.config import check
from flowse.utils.packages import find_package_file
from flowse.utils.log import get_logger

logger = get_logger(__name__)

MODEL_FILES = {"sig_bak_ovr.onnx": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
               "model_v8.onnx": "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91"}

OUTPUTS = ("SIG", "BAK", "OVRL", "P808")

POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
POLY_OVRL = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


@dataclass
class DnsmosConfig:
    """DNSMOS P.835 (``sig_bak_ovr.onnx``) and P.808 (``model_v8.onnx``); yaml section ``dnsmos``.

    ``model_dir`` null: the ``dnsmos_models/`` folder of the installed ``speechmos``
    wheel (found without importing it). ``threads`` 0: one onnxruntime intra-op
    thread per available core. ``batch_size``: 9.01 s windows per onnxruntime call.
    ``share_overlap``: run P.835's convolutions once over the overlapping windows of
    a clip (same values to float rounding; see ``flowse.metrics.dnsmos_trunk.SharedTrunk``);
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


def speechmos_model_dir() -> str:
    """``dnsmos_models/`` of the installed ``speechmos`` wheel, located without importing it."""
    found = find_package_file("speechmos", os.path.join("dnsmos_models", "sig_bak_ovr.onnx"))
    if found:
        return os.path.dirname(found)
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
        self.trunk = None
        if cfg.share_overlap:
            try:
                self.trunk = SharedTrunk(paths["sig_bak_ovr.onnx"], so, providers)
            except ImportError:
                logger.warning("the onnx package is missing: DNSMOS scores every window separately (slower)")

    def _run_p835(self, windows: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {"input_1": np.ascontiguousarray(windows, dtype=np.float32)})[0]

    def _run_p808(self, windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            feats = self.features(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()
        return self.p808_sess.run(None, {"input_1": feats})[0][:, 0]

    def score_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs for windows ``[W, 144160]`` with the whole models (the reference's way):
        P.835 ``[W, 3]`` (sig, bak, ovrl) and P.808 ``[W]``."""
        raw = np.empty((len(windows), 3), dtype=np.float32)
        p808 = np.empty(len(windows), dtype=np.float32)
        bs = self.cfg.batch_size
        for i in range(0, len(windows), bs):
            raw[i : i + bs] = self._run_p835(windows[i : i + bs])
            p808[i : i + bs] = self._run_p808(windows[i : i + bs])
        return raw, p808

    def score(self, wavs: Sequence[np.ndarray], p808: bool = True) -> dict[str, np.ndarray]:
        """Per-clip SIG, BAK, OVRL and, when ``p808``, P808 (float64 ``[B]``) of 16 kHz float waveforms.

        ``p808=False`` skips the P.808 network (a quarter of the time on 2 s clips): the
        GRPO reward rarely needs it.

        Work saved without changing a value:
        - a tiled clip is periodic, so windows starting at the same phase are equal
          sample for sample: each distinct window is scored once (a 1 s clip has 7
          identical windows, a 2 s clip 2 distinct ones among 7);
        - when cheaper, P.835's convolutions run once over the clip's span of
          windows (``SharedTrunk``) instead of once per window, and for a tiled clip
          whose length is a multiple of 160 samples once over one period
          (``SharedTrunk.periodic_raw``; 2 s GRPO crops: 4x faster, measured).
        Windows scored one by one are queued across clips in groups of ``batch_size``.
        """
        keys = ("SIG", "BAK", "OVRL", "P808") if p808 else ("SIG", "BAK", "OVRL")
        if len(wavs) == 0:
            return {k: np.zeros(0) for k in keys}
        bs = self.cfg.batch_size
        rows_of: list[list[int]] = []
        raw_of: list[np.ndarray] = []  # per clip: [distinct, 3], or [windows, 3] when the trunk ran
        trunk_used: list[bool] = []
        p808_of: list[np.ndarray] = []
        q835: list[tuple[int, int, np.ndarray]] = []
        q808: list[tuple[int, int, np.ndarray]] = []

        def flush(queue, run, store) -> None:
            if queue:
                out = run(np.stack([w for _, _, w in queue]))
                for (ci, j, _), v in zip(queue, out):
                    store[ci][j] = v
                queue.clear()

        for ci, w in enumerate(wavs):
            tiled = tile(w)
            starts = window_starts(len(tiled))
            period = len(w) if len(tiled) > len(w) else None
            seen: dict[int, int] = {}
            distinct: list[int] = []
            rows = []
            for st in starts:
                phase = st % period if period else st
                if phase not in seen:
                    seen[phase] = len(distinct)
                    distinct.append(phase)
                rows.append(seen[phase])
            rows_of.append(rows)
            span = (starts[-1] - starts[0]) // 160 + P808_FRAMES + 2 * SharedTrunk.EDGE_CHUNK * len(starts)
            periodic = self.trunk is not None and period is not None and period % 160 == 0
            use_trunk = not periodic and self.trunk is not None and span < P808_FRAMES * len(distinct)
            trunk_used.append(use_trunk)
            if periodic:
                raw_of.append(self.trunk.periodic_raw(np.asarray(w, dtype=np.float32), distinct))
            elif use_trunk:
                raw_of.append(self.trunk.clip_raw(tiled, starts))
            else:
                raw_of.append(np.empty((len(distinct), 3), np.float32))
            p808_of.append(np.empty(len(distinct), np.float32))
            for j, st in enumerate(distinct):
                win = tiled[st : st + WINDOW]
                if p808:
                    q808.append((ci, j, win))
                if not (use_trunk or periodic):
                    q835.append((ci, j, win))
            if len(q835) >= bs:
                flush(q835, self._run_p835, raw_of)
            if len(q808) >= bs:
                flush(q808, self._run_p808, p808_of)
        flush(q835, self._run_p835, raw_of)
        flush(q808, self._run_p808, p808_of)

        out = {k: np.empty(len(wavs)) for k in keys}
        for ci, rows in enumerate(rows_of):
            raw = raw_of[ci] if trunk_used[ci] else raw_of[ci][rows]
            out["SIG"][ci] = POLY_SIG(raw[:, 0]).mean()
            out["BAK"][ci] = POLY_BAK(raw[:, 1]).mean()
            out["OVRL"][ci] = POLY_OVRL(raw[:, 2]).mean()
            if p808:
                out["P808"][ci] = p808_of[ci][rows].astype(np.float64).mean()
        return out

    def __call__(self, est: Sequence[np.ndarray], ref=None, outputs: Sequence[str] = OUTPUTS) -> dict[str, np.ndarray]:
        """The registry's scorer call: P.808 runs only when ``outputs`` asks for it."""
        return self.score(est, p808="P808" in outputs)


METRIC = Metric(
    key="dnsmos",
    outputs=(Output("SIG", 0.25, "SIG", ".3f"), Output("BAK", 0.25, "BAK", ".3f"),
             Output("OVRL", 0.25, "OVRL", ".3f"), Output("P808", 0.25)),
    needs_ref=False,
    build=DNSMOS,
    config_key="dnsmos",
    config=DnsmosConfig,
)
