"""A toy metric for test_metrics_registry.py: RMS level of the estimate in dBFS (no reference, no model)."""
import numpy as np

from flowse.metrics.registry import Metric, Output


class RmsLevel:
    def __init__(self, cfg, device):
        pass

    def __call__(self, est, ref=None, outputs=("RMS",)):
        return {"RMS": np.array([10 * np.log10(np.mean(np.square(w, dtype=np.float64)) + 1e-12) for w in est])}


METRIC = Metric(key="rms", outputs=(Output("RMS", 0.1, "RMS dB", ".1f"),), needs_ref=False, build=RmsLevel)
