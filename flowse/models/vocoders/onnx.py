"""A user-exported vocoder run with onnxruntime, and the exporter for our HiFi-GAN.

Contract of the ONNX model: one float32 input ``[B, n_mels, T]`` holding the natural-log mel of
flowse.features.mel (16 kHz, n_fft 1024, hop 256, 80 Slaney mels, log floor 1e-5, unless the
vocoder.yaml says otherwise), batch and time axes dynamic; first output the waveform
``[B, n]`` or ``[B, 1, n]`` with ``n >= T * hop`` (extra samples are cut). Any vocoder
(e.g. a HiFi-GAN trained elsewhere on these mels) can be used this way: export it with
``torch.onnx.export`` (see ``export_generator_onnx``) and set ``type: onnx`` and
``onnx.path`` in vocoder.yaml.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from flowse.features.mel import MelConfig
from flowse.models.vocoders.base import Vocoder
from flowse.models.vocoders.config import OnnxConfig


class OnnxVocoder(Vocoder):
    name = "onnx"

    @classmethod
    def from_config(cls, mel_cfg: MelConfig, cfg: OnnxConfig, base_dir: str = ".", device="cpu") -> "OnnxVocoder":
        return cls(mel_cfg, cfg, base_dir=base_dir, device=str(device)).eval()

    @classmethod
    def load(cls, vocoder_dir: str, mel_cfg: MelConfig, cfg: OnnxConfig, device="cpu") -> "OnnxVocoder":
        """The session is made for ``device`` (its execution provider), with the model file of ``vocoder_dir``."""
        return cls.from_config(mel_cfg, cfg, vocoder_dir, device)

    def __init__(self, mel_cfg: MelConfig, cfg: OnnxConfig, base_dir: str = ".", device: str = "cpu"):
        super().__init__(mel_cfg)
        import onnxruntime as ort

        self.cfg = cfg
        if not cfg.path:
            raise ValueError("onnx vocoder: onnx.path is empty (set it to the exported .onnx file)")
        self.path = cfg.path if os.path.isabs(cfg.path) else os.path.join(base_dir, cfg.path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"onnx vocoder: model file not found: {self.path}")
        opts = ort.SessionOptions()
        if cfg.intra_op_threads:
            opts.intra_op_num_threads = cfg.intra_op_threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(self.path, opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises several types
            raise ValueError(f"onnx vocoder: cannot load {self.path}: {e}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        self.input_name = cfg.input_name or inputs[0]
        if self.input_name not in inputs:
            raise ValueError(f"onnx vocoder {self.path}: no input {self.input_name!r}; inputs are {inputs}")
        self.register_buffer("_device_anchor", torch.zeros(0, device=device), persistent=False)

    def synthesize(self, mel: torch.Tensor, noisy: torch.Tensor | None) -> torch.Tensor:
        x = np.ascontiguousarray(mel.transpose(1, 2).detach().cpu().numpy().astype(np.float32))
        out = self.session.run(None, {self.input_name: x})[0]
        wav = torch.from_numpy(np.asarray(out, dtype=np.float32)).to(mel.device)
        return wav.reshape(wav.shape[0], -1)


def export_generator_onnx(generator: torch.nn.Module, path: str, n_mels: int = 80, opset: int = 17) -> None:
    """Export a mel -> waveform module (``[B, n_mels, T] -> [B, 1, n]``) to ONNX, atomically.

    Uses torch's TorchScript-based exporter (needs the ``onnx`` package). Remove weight norm
    first (``Generator.remove_weight_norm``) so the graph holds plain weights.
    """
    from flowse.utils.fileio import atomic_open

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("exporting to ONNX needs the 'onnx' package: pip install onnx") from None
    was_training = generator.training
    generator.eval()
    dummy = torch.zeros(1, n_mels, 32, device=next(generator.parameters()).device)
    with atomic_open(path, "wb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            generator, (dummy,), f, dynamo=False, opset_version=opset, input_names=["mel"], output_names=["wav"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "wav": {0: "batch", 2: "samples"}},
        )
    generator.train(was_training)
