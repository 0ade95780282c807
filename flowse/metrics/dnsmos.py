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


class SharedTrunk:
    """P.835 network split after its 4th convolution, to share the work of overlapping windows.

    ``sig_bak_ovr.onnx`` computes a log10 power spectrogram (320-sample frames every
    160 samples, DFT as a matrix), four 3x3 convolutions at full resolution (about
    98% of its FLOPs), then pooling layers and a head. Windows start every second,
    i.e. every 100 frames, so neighbouring windows share 8 of their 9 seconds. The
    convolutions are shift-equivariant: run once over a clip's whole span of
    frames, their output cropped to a window equals the per-window output except in
    the 4 frames next to each window edge (where the per-window run sees zero
    padding); those are recomputed from 12-frame edge chunks. The head then runs per
    window. Same weights, same operations: results equal the per-window model to
    float rounding (~1e-6). The subgraphs are cut from the verified ONNX file with
    the ``onnx`` package.
    """

    TRUNK_IN = "adjusted_input6"
    TRUNK_OUT = "mos_estimator_logpow/conv2d_3/Relu:0"
    EDGE = 4  # frames of a window edge that the four 3x3 convolutions see padding in
    EDGE_CHUNK = 12
    CHUNK = 1000  # frames per trunk call (memory: about 0.1 MB per frame at 128 channels)
    MAX_SPAN = 3000  # frames of trunk output kept at once (about 60 MB)

    def __init__(self, path: str, so, providers: list[str]):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        model = onnx.load(path)
        g = model.graph
        inits = {t.name: t for t in g.initializer}
        nodes = {n.name: n for n in g.node}

        def const(node_name: str, idx: int) -> np.ndarray:
            return numpy_helper.to_array(inits[nodes[node_name].input[idx]])

        self.w_re = const("stft-real", 1)[:, :, 0].T.copy()  # [320, 161]
        self.w_im = const("stft-imag", 1)[:, :, 0].T.copy()
        self.floor = np.float32(const("mos_estimator_logpow/Maximum_max", 0))
        self.ln10 = np.float32(const("mos_estimator_logpow/truediv", 1))

        def sub(start: str, end: str, in_shape: list, out_shape: list) -> bytes:
            order = list(g.node)
            i0 = next(k for k, n in enumerate(order) if start in n.input)
            i1 = next(k for k, n in enumerate(order) if end in n.output)
            part = order[i0 : i1 + 1]
            used = {x for n in part for x in n.input}
            graph = helper.make_graph(
                part, "part", [helper.make_tensor_value_info(start, TensorProto.FLOAT, in_shape)],
                [helper.make_tensor_value_info(end, TensorProto.FLOAT, out_shape)],
                [t for t in g.initializer if t.name in used],
            )
            m = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
            onnx.checker.check_model(m)
            return m.SerializeToString()

        self.trunk = ort.InferenceSession(sub(self.TRUNK_IN, self.TRUNK_OUT, ["N", 1, "T", 161], ["N", 32, "T", 161]), so,
                                          providers=providers)
        self.head = ort.InferenceSession(sub(self.TRUNK_OUT, "Identity:0", ["N", 32, 900, 161], ["N", 3]), so,
                                         providers=providers)

    def log_power(self, x: np.ndarray) -> np.ndarray:
        """Samples -> the model's log10 power frames ``[(len - 160) // 160, 161]``."""
        n = (len(x) - 160) // 160
        frames = np.lib.stride_tricks.sliding_window_view(x, 320)[::160][:n]
        re = frames @ self.w_re
        im = frames @ self.w_im
        power = np.sqrt(re * re + im * im) ** 2
        return (np.log(np.maximum(self.floor, power)) / self.ln10).astype(np.float32)

    def _trunk(self, feats: np.ndarray) -> np.ndarray:
        return self.trunk.run(None, {self.TRUNK_IN: feats})[0]

    def span_trunk(self, feats: np.ndarray) -> np.ndarray:
        """Trunk over ``[F, 161]`` frames in chunks with a halo -> ``[32, F, 161]`` (edges not fixed)."""
        n = len(feats)
        out = np.empty((32, n, 161), dtype=np.float32)
        halo = 2 * self.EDGE
        for a in range(0, n, self.CHUNK):
            b = min(n, a + self.CHUNK)
            lo, hi = max(0, a - halo), min(n, b + halo)
            out[:, a:b] = self._trunk(feats[None, None, lo:hi])[0][:, a - lo : b - lo]
        return out

    def clip_raw(self, tiled: np.ndarray, starts: list[int]) -> np.ndarray:
        """Raw P.835 outputs ``[len(starts), 3]`` of the windows of one (tiled) clip.

        Windows are taken in groups spanning at most ``MAX_SPAN`` frames (memory bound).
        """
        raw = np.empty((len(starts), 3), dtype=np.float32)
        first = 0
        for k in range(1, len(starts) + 1):
            if k == len(starts) or (starts[k] - starts[first]) // 160 + P808_FRAMES > self.MAX_SPAN:
                raw[first:k] = self._group_raw(tiled, starts[first:k])
                first = k
        return raw

    def periodic_raw(self, clip: np.ndarray, phases: list[int]) -> np.ndarray:
        """Raw P.835 outputs ``[len(phases), 3]`` of the windows ``tile(clip)[p : p + 144160]``.

        For a clip shorter than a window and a multiple of 160 samples long: its tiling
        is periodic with a whole number ``Q`` of frames, so the log-power frames and the
        trunk output inside the tiled signal are periodic too. The trunk runs once over
        one period, circularly padded by a halo (``Q + 16`` frames instead of ~1500 for
        the 7 windows of a tiled clip); each window gathers its frames from that period
        and has its edges recomputed as in ``_group_raw``.
        """
        n = len(clip)
        assert n % 160 == 0 and n < WINDOW, n
        q = n // 160
        feats = self.log_power(np.concatenate([clip, clip[:160]]))  # [q, 161]: frame q-1 wraps around
        halo = 2 * self.EDGE
        period = self._trunk(feats[np.arange(-halo, q + halo) % q][None, None])[0][:, halo : halo + q]
        frames = lambda f, n: (f + np.arange(n)) % q  # noqa: E731  (periodic frame indices)
        return self._heads([p // 160 for p in phases], lambda f, n: feats[frames(f, n)],
                           lambda f: period[:, frames(f, P808_FRAMES)])

    def _group_raw(self, tiled: np.ndarray, starts: list[int]) -> np.ndarray:
        s0 = starts[0]
        feats = self.log_power(tiled[s0 : starts[-1] + WINDOW])
        trunk = self.span_trunk(feats)
        return self._heads([(s - s0) // 160 for s in starts], lambda f, n: feats[f : f + n],
                           lambda f: trunk[:, f : f + P808_FRAMES].copy())

    def _heads(self, offs: list[int], feats_at, trunk_at) -> np.ndarray:
        """Raw outputs ``[len(offs), 3]`` of the windows starting at frames ``offs``.

        ``feats_at(f, n)``: ``n`` log-power frames from frame ``f``; ``trunk_at(f)``: a
        writable ``[32, 900, 161]`` trunk output of the window at ``f`` whose ``EDGE``
        frames at each end are replaced here by the trunk of ``EDGE_CHUNK``-frame edge
        chunks (where the per-window model sees zero padding); then the head runs.
        """
        e, c = self.EDGE, self.EDGE_CHUNK
        fixed = self._trunk(np.stack([feats_at(f + o, c) for f in offs for o in (0, P808_FRAMES - c)])[:, None])
        raw = np.empty((len(offs), 3), dtype=np.float32)
        for k, f in enumerate(offs):
            win = trunk_at(f)
            win[:, :e] = fixed[2 * k][:, :e]
            win[:, -e:] = fixed[2 * k + 1][:, -e:]
            raw[k] = self.head.run(None, {self.TRUNK_OUT: win[None]})[0][0]
        return raw


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
