"""DNSMOS P.835 with the convolutions shared by overlapping windows (``SharedTrunk``).

Same weights and operations as ``sig_bak_ovr.onnx`` run per window; values equal
it to float rounding (see ``flowse.metrics.dnsmos`` for the reference procedure).
"""
from __future__ import annotations

import numpy as np

SR = 16000
INPUT_LENGTH = 9.01  # seconds of a DNSMOS window
WINDOW = int(INPUT_LENGTH * SR)  # 144160 samples
P808_FRAMES = 900  # 10 ms frames of a window, as the P.835 head and the P.808 model see them


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
