"""The metric registry: one line per metric, ``key -> "module:attribute"`` of its ``Metric`` declaration.

A metric is one module that declares a ``Metric``: its key (the group name users
write: ``dnsmos``, ``spk``...), its outputs (``SIG BAK OVRL P808``, ``SPK``...),
whether it needs a reference (waveform or transcript), its config section (dataclass + yaml key under
``models:``), how RESULTS shows each output, when it is not available here, and the
scorer built from its config section and device. Scoring, RESULTS, the GRPO
reward and the score CLI iterate over this registry; the config schema of the
metric sections (``flowse.metrics.config.ScoreModelsConfig``) is built from it.
Adding a metric = one module + one line in ``METRICS`` (or ``register``).

Declarations are imported lazily (``metric(key)``); heavy models load only when a
scorer is built. Conventions of every scorer: inputs are float32 16 kHz mono
waveforms in [-1, 1]; ``scorer(est, ref, outputs)`` returns ``{output: float64 [B]}``
(NaN where undefined, optionally as ``Scores`` with the reasons); a metric declared
``needs_text`` is called ``scorer(est, ref, outputs, texts=...)`` with one reference
transcript (str, or None where the utterance has none) per item.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from flowse.utils.config import ConfigError

METRIC_RATE = 16000  # Hz: the rate every scorer takes; other rates are resampled before scoring

METRICS: dict[str, str] = {
    "dnsmos": "flowse.metrics.dnsmos:METRIC",
    "spk": "flowse.metrics.speaker:METRIC",
    "sbs": "flowse.metrics.speechbertscore:METRIC",
    "pesq": "flowse.metrics.intrusive:PESQ",
    "estoi": "flowse.metrics.intrusive:ESTOI",
    "sisdr": "flowse.metrics.intrusive:SISDR",
    "dmos": "flowse.metrics.distillmos:METRIC",
    "wer": "flowse.metrics.wer:METRIC",
}


@dataclass(frozen=True)
class Output:
    """One value a metric produces per item.

    ``reward_scale``: default multiplier in the GRPO reward (DNSMOS scores: 0.25, i.e. "/ 4").
    ``column`` / ``fmt``: RESULTS.md column title and number format; ``column`` None: not in the table.
    ``pooled_by``: the output holding each item's weight (e.g. reference words of a WER): summary.json
    then also gives ``pooled``, the weighted mean (corpus-level rate), when that output was scored.
    """

    name: str
    reward_scale: float = 1.0
    column: str | None = None
    fmt: str = ".4f"
    pooled_by: str | None = None


class Scores(dict):
    """A scorer's ``{output: float64 [B]}`` plus ``undefined[output] = [(index, reason)]`` for its NaN values."""

    def __init__(self, values: dict[str, np.ndarray], undefined: dict[str, list[tuple[int, str]]] | None = None):
        super().__init__(values)
        self.undefined = undefined or {}


class Scorer(Protocol):
    def __call__(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None,
                 outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """``est`` (and ``ref``, same length) 16 kHz waveforms -> at least ``outputs``, each float64 ``[B]``."""


@dataclass(frozen=True)
class Metric:
    """Declaration of one metric (see the module doc).

    ``build(config_section_or_None, device) -> Scorer``. ``aligned``: the metric compares
    samples, so estimate and reference are trimmed to the shorter before scoring. ``needs_text``:
    the scorer takes the reference transcripts (``texts=``; WER), independently of ``needs_ref``.
    ``available(config_section) -> bool`` (None: always); when False the outputs are
    reported n/a with ``hint``, never replaced by another metric.
    """

    key: str
    outputs: tuple[Output, ...]
    needs_ref: bool
    build: Callable[[Any, str], Scorer]
    config_key: str | None = None
    config: type | None = None
    aligned: bool = False
    needs_text: bool = False
    available: Callable[[Any], bool] | None = None
    hint: str = ""

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def section(self, models: Any) -> Any:
        """This metric's section of a ``ScoreModelsConfig`` (None for metrics without one)."""
        return getattr(models, self.config_key) if self.config_key else None

    def unavailable_hint(self, models: Any) -> str | None:
        """None when the metric can be computed with ``models``, else why not (its hint)."""
        if self.available is None or self.available(self.section(models)):
            return None
        return self.hint or f"{self.key} is not available here"


def register(key: str, target: str) -> None:
    """Add a metric ``key -> "module:attribute"`` (the attribute is its ``Metric``)."""
    if key in METRICS:
        raise ValueError(f"metric {key!r} is already registered ({METRICS[key]})")
    METRICS[key] = target


def metric(key: str) -> Metric:
    """The declaration of registered metric ``key`` (imports its module)."""
    if key not in METRICS:
        raise ConfigError(f"unknown metric {key!r}; registered: {list(METRICS)}")
    module, _, attr = METRICS[key].partition(":")
    spec = getattr(importlib.import_module(module), attr)
    if not isinstance(spec, Metric) or spec.key != key:
        raise TypeError(f"{METRICS[key]} is not the Metric declaration of {key!r}")
    return spec


def all_metrics() -> list[Metric]:
    """Every registered metric, in registry order (the canonical order of outputs)."""
    return [metric(k) for k in METRICS]


def all_outputs() -> tuple[str, ...]:
    return tuple(o for m in all_metrics() for o in m.output_names)


def owner(output: str) -> Metric:
    """The metric that produces ``output``."""
    for m in all_metrics():
        if output in m.output_names:
            return m
    raise ConfigError(f"unknown metric output {output!r}; allowed: {list(all_outputs())}")


def output_spec(output: str) -> Output:
    return next(o for o in owner(output).outputs if o.name == output)


def needs_ref(output: str) -> bool:
    return owner(output).needs_ref


def needs_text(output: str) -> bool:
    return owner(output).needs_text


def check_outputs(names: Sequence[str], where: str) -> None:
    allowed = all_outputs()
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ConfigError(f"{where}: unknown metric(s) {bad}; allowed: {list(allowed)}")


def expand_metrics(names: list[str] | str) -> list[str]:
    """``"dnsmos,spk"`` or ``["OVRL", "pesq"]`` -> output names in canonical order; unknown names raise."""
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    metrics = all_metrics()
    outputs = [o for m in metrics for o in m.output_names]
    chosen: set[str] = set()
    for n in names:
        group = next((m for m in metrics if m.key == n.lower()), None)
        if group is not None:
            chosen.update(group.output_names)
        elif n.upper() in outputs:
            chosen.add(n.upper())
        else:
            raise ConfigError(
                f"unknown metric {n!r}; allowed: groups {[m.key for m in metrics]} or metrics {outputs}"
            )
    return [o for o in outputs if o in chosen]


def unavailable_outputs(outputs: Sequence[str], models: Any) -> dict[str, str]:
    """``{output: hint}`` for the outputs whose metric cannot be computed with ``models``."""
    out = {}
    for o in outputs:
        hint = owner(o).unavailable_hint(models)
        if hint is not None:
            out[o] = hint
    return out

