"""Config schemas of scoring: ``score.yaml`` and the metric sections shared with the GRPO reward.

``ScoreModelsConfig`` (``models:`` of score.yaml and ``reward.models:`` of the GRPO
configs) has one section per registered metric that declares one (``dnsmos``,
``speaker``, ``sbs``); it is built from ``flowse.metrics.registry``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from flowse.metrics.registry import all_metrics, expand_metrics
from flowse.utils.config import check


def build_models_config() -> type:
    """A dataclass with one field per registered metric section (``config_key: config``, default values)."""
    fields = [(m.config_key, m.config, field(default_factory=m.config)) for m in all_metrics() if m.config_key]
    cls = dataclasses.make_dataclass("ScoreModelsConfig", fields)
    cls.__module__ = __name__
    cls.__doc__ = "Model locations and settings of the metrics, one section per metric that has one."
    return cls


ScoreModelsConfig = build_models_config()


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
