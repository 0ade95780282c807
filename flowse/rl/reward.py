"""GRPO rewards from metric values (paper section 2.2): single or multi-metric, every metric logged.

- single metric:  ``R = s * m`` (``s`` the metric's scale, e.g. DNSMOS OVRL / 4);
- multi-metric:   ``R = sum_i w_i * s_i m_i / std_i``. ``std_normalize`` says which std:
  ``batch``: the std of ``s_i m_i`` over the items given to ``reward`` (call it once on all
  items collected in an iteration: the paper's "std over the collected data"; it is
  dominated by the spread between prompts and drifts as training moves the metrics);
  ``frozen``: stds measured once (the trainer measures them on the base model's first
  iteration and passes them in, ``stds=``); ``none``: the plain weighted sum. A metric
  whose std is (almost) 0 is not divided (its term is then constant and drops out of
  the group advantages). The old booleans still load: true = batch, false = none.
Metrics that are logged but not rewarded (``log_metrics``) are computed on the
same call, so reward hacking (one metric up, the others down) shows in the logs.
NaN rewards (e.g. SPK of an all-zero output) are replaced by the batch minimum of
that metric, with a warning: an undefined output must not win.
The values come from ``flowse.metrics`` (``MetricSuite``): any output of its registry
can be rewarded or logged; its default scale is declared with the metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from flowse.metrics.config import ScoreModelsConfig
from flowse.metrics.registry import all_outputs, check_outputs, needs_ref, output_spec, unavailable_outputs
from flowse.metrics.suite import MetricSuite
from flowse.utils.config import ConfigError, check
from flowse.utils.log import get_logger

logger = get_logger(__name__)

STD_EPS = 1e-8
STD_MODES = ("batch", "frozen", "none")


@dataclass
class RewardConfig:
    """Which metrics make the reward and how they are combined.

    ``scales``: per-metric multiplier; metrics not listed get the default their
    metric declares (OVRL SIG BAK P808 -> 0.25, i.e. "DNSMOS / 4"; others 1.0).
    ``log_metrics``: computed and logged though not rewarded; a metric that is not
    available here (SBS without a model) is dropped from this list with an info line.
    """

    metrics: list[str] = field(default_factory=lambda: ["OVRL"])
    weights: list[float] = field(default_factory=lambda: [1.0])
    scales: dict[str, float] = field(default_factory=dict)
    std_normalize: Literal["batch", "frozen", "none"] | bool = "batch"
    log_metrics: list[str] = field(default_factory=lambda: ["OVRL", "SIG", "BAK", "SPK", "SBS"])
    models: ScoreModelsConfig = field(default_factory=ScoreModelsConfig)

    def __post_init__(self):
        if isinstance(self.std_normalize, bool):
            self.std_normalize = "batch" if self.std_normalize else "none"
        check(self.std_normalize in STD_MODES,
              f"reward.std_normalize: {self.std_normalize!r} is not allowed; choose one of {list(STD_MODES)}")
        check(len(self.metrics) > 0, "reward.metrics: at least one metric is needed")
        check_outputs(self.metrics, "reward.metrics")
        check_outputs(self.log_metrics, "reward.log_metrics")
        check_outputs(list(self.scales), "reward.scales")
        check(len(set(self.metrics)) == len(self.metrics), f"reward.metrics has duplicates: {self.metrics}")
        check(
            len(self.weights) == len(self.metrics),
            f"reward.weights {self.weights} must have one weight per metric {self.metrics}",
        )

    def scale(self, metric: str) -> float:
        return float(self.scales[metric] if metric in self.scales else output_spec(metric).reward_scale)


def drop_unavailable(cfg: RewardConfig) -> dict[str, str]:
    """Remove the rewarded metrics (with their weights) that are not available here; ``{metric: hint}``."""
    missing = unavailable_outputs(cfg.metrics, cfg.models)
    kept = [(m, w) for m, w in zip(cfg.metrics, cfg.weights) if m not in missing]
    cfg.metrics, cfg.weights = [m for m, _ in kept], [w for _, w in kept]
    return missing


def _to_list(x, lengths) -> list[np.ndarray]:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
        if x.ndim == 1:
            x = x[None]
        if lengths is None:
            return [row for row in x]
        lengths = [int(n) for n in (lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)]
        if len(lengths) != len(x):
            raise ValueError(f"{len(x)} waveforms but {len(lengths)} lengths")
        return [row[:n] for row, n in zip(x, lengths)]
    if lengths is not None:
        return [np.asarray(w, dtype=np.float32)[: int(n)] for w, n in zip(x, lengths)]
    return [np.asarray(w, dtype=np.float32) for w in x]


class RewardModel:
    """Computes every rewarded and logged metric for a batch, and the reward from them."""

    def __init__(self, cfg: RewardConfig, device: str = "cpu"):
        self.cfg = cfg
        missing = unavailable_outputs(cfg.metrics, cfg.models)
        if missing:
            m, hint = next(iter(missing.items()))
            raise ConfigError(f"reward.metrics includes {m}, but {hint}")
        logged = [m for m in cfg.log_metrics if m not in cfg.metrics]
        for m, hint in unavailable_outputs(logged, cfg.models).items():
            logger.info("%s not logged: %s", m, hint)
            logged.remove(m)
        wanted = set(cfg.metrics) | set(logged)
        self.metrics = [m for m in all_outputs() if m in wanted]
        self.suite = MetricSuite(self.metrics, cfg.models, device)

    @property
    def needs_ref(self) -> bool:
        """Whether any computed metric needs the clean reference."""
        return any(needs_ref(m) for m in self.metrics)

    def compute(
        self,
        est: Sequence[np.ndarray] | torch.Tensor,
        ref: Sequence[np.ndarray] | torch.Tensor | None = None,
        lengths: Sequence[int] | torch.Tensor | None = None,
        ref_lengths: Sequence[int] | torch.Tensor | None = None,
    ) -> dict[str, np.ndarray]:
        """Every metric per item (float64 ``[B]``).

        ``est``: list of 16 kHz waveforms, or a padded tensor ``[B, n]`` with ``lengths``
        (samples). ``ref``: the same for the clean references, or None (then metrics
        needing a reference are computed only if rewarded, which is an error).
        ``ref_lengths`` defaults to ``lengths`` when ``ref`` is a tensor shaped like ``est``.
        """
        if ref_lengths is None and isinstance(ref, torch.Tensor) and isinstance(est, torch.Tensor):
            if ref.shape == est.shape:
                ref_lengths = lengths
        est_l = _to_list(est, lengths)
        ref_l = _to_list(ref, ref_lengths) if ref is not None else None
        if ref_l is None:
            missing = [m for m in self.cfg.metrics if needs_ref(m)]
            if missing:
                raise ValueError(f"rewarded metrics {missing} need reference waveforms (ref=None given)")
            return self.suite.compute(est_l, None, [m for m in self.metrics if not needs_ref(m)]).values
        return self.suite.compute(est_l, ref_l).values

    def rewarded_values(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``s_i m_i`` per rewarded metric (float64 ``[B]``); undefined values get the batch minimum."""
        out = {}
        for m in self.cfg.metrics:
            if m not in metrics:
                raise KeyError(f"reward metric {m} missing from the metrics given ({sorted(metrics)})")
            v = self.cfg.scale(m) * np.asarray(metrics[m], dtype=np.float64)
            bad = ~np.isfinite(v)
            if bad.any():
                fill = float(np.min(v[~bad])) if (~bad).any() else 0.0
                logger.warning("%d of %d %s values are undefined: rewarded as the batch minimum %.4f",
                               int(bad.sum()), v.size, m, fill)
                v = np.where(bad, fill, v)
            out[m] = v
        return out

    def reward(self, metrics: dict[str, np.ndarray], stds: dict[str, float] | None = None) -> np.ndarray:
        """Reward per item (float64 ``[B]``) from ``compute``'s output (see module doc).

        ``stds``: the std of each rewarded ``s_i m_i`` to divide by (``frozen``; any mode but ``none``
        may pass them); None: the batch std (``batch``); an error for ``frozen``.
        """
        return normalised_reward(self.rewarded_values(metrics), dict(zip(self.cfg.metrics, self.cfg.weights)),
                                 self.cfg.std_normalize, stds)

    def __call__(self, est, ref=None, lengths=None, ref_lengths=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        metrics = self.compute(est, ref, lengths, ref_lengths)
        return self.reward(metrics), metrics


def normalised_reward(values: dict[str, np.ndarray], weights: dict[str, float], mode: str,
                      stds: dict[str, float] | None = None) -> np.ndarray:
    """``sum_i w_i v_i / std_i`` (float64 ``[B]``) of the rewarded values ``v_i = s_i m_i``.

    ``mode`` (``std_normalize``): ``none``, or a single metric: not divided; ``stds`` given: those;
    else ``batch``: the std over the items of ``values``, ``frozen``: an error (the stds must be given).
    A std <= ``STD_EPS`` does not divide.
    """
    if len(values) == 1 or mode == "none":
        stds = None
    elif stds is None:
        if mode == "frozen":
            raise ValueError("reward.std_normalize frozen: the frozen stds must be given")
        stds = {m: float(np.std(v)) for m, v in values.items()}
    total = None
    for m, v in values.items():
        std = stds[m] if stds is not None else 0.0
        term = weights[m] * (v / std if std > STD_EPS else v)
        total = term if total is None else total + term
    return total
