"""Intrusive metrics against a clean reference: PESQ-WB, ESTOI, SI-SDR.

Inputs are float 16 kHz waveforms of equal length (callers trim to the shorter:
the declarations below are ``aligned``, so ``MetricSuite`` does it).
A metric that is undefined for an input raises ``MetricUndefined`` with the
reason; callers record NaN, warn, and exclude it from means:
- PESQ: reference without detectable speech (e.g. silence), or shorter than 0.25 s;
- ESTOI: silent reference, or fewer than 30 frames of 384 ms left after pystoi's
  silent-frame removal (pystoi itself would return 1e-5 with a warning);
- SI-SDR: silent reference.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from flowse.metrics.registry import Metric, Output, Scores

SR = 16000


class MetricUndefined(ValueError):
    """The metric has no value for this input; the message says why."""


def _check_pair(est: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if est.shape != ref.shape or est.ndim != 1:
        raise ValueError(f"estimate {est.shape} and reference {ref.shape} must be 1-D of equal length")
    if not np.any(ref):
        raise MetricUndefined("silent (all-zero) reference")
    return est, ref


def pesq_wb(est: np.ndarray, ref: np.ndarray) -> float:
    """Wide-band PESQ (ITU-T P.862.2) through the ``pesq`` package."""
    from pesq import NoUtterancesError, PesqError, pesq

    est, ref = _check_pair(est, ref)
    if len(ref) < SR // 4:
        raise MetricUndefined("shorter than 0.25 s")
    try:
        return float(pesq(SR, ref, est, "wb"))
    except NoUtterancesError:
        raise MetricUndefined("no utterance detected in the reference") from None
    except PesqError as e:
        raise MetricUndefined(f"pesq error: {e}") from None


def estoi(est: np.ndarray, ref: np.ndarray) -> float:
    """Extended STOI (Jensen & Taal 2016) through ``pystoi`` (``extended=True``)."""
    from pystoi import stoi

    est, ref = _check_pair(est, ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref, est, SR, extended=True))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricUndefined("fewer than 30 frames of speech after silent-frame removal")
    if not np.isfinite(value):
        raise MetricUndefined("ESTOI is not finite (silent estimate?)")
    return value


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean signals, float64.

    ``10 log10(|a s|^2 / |a s - e|^2)`` with ``a = <e, s> / |s|^2``; machine epsilon is
    added to both energies so that a perfect estimate gives a large finite value and
    an all-zero estimate gives 0 dB (as torchmetrics does).
    """
    est, ref = _check_pair(est, ref)
    est = est - est.mean()
    ref = ref - ref.mean()
    ref_energy = np.dot(ref, ref)
    if ref_energy == 0:
        raise MetricUndefined("constant reference")
    target = (np.dot(est, ref) / ref_energy) * ref
    noise = est - target
    eps = np.finfo(np.float64).eps
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


class PairwiseScorer:
    """Batched scorer of one per-pair metric function; ``MetricUndefined`` -> NaN with the reason."""

    def __init__(self, name: str, fn: Callable[[np.ndarray, np.ndarray], float]):
        self.name, self.fn = name, fn

    def __call__(self, est: Sequence[np.ndarray], ref: Sequence[np.ndarray], outputs=()) -> Scores:
        values = np.full(len(est), np.nan)
        undefined = []
        for i, (e, r) in enumerate(zip(est, ref)):
            try:
                values[i] = self.fn(e, r)
            except MetricUndefined as err:
                undefined.append((i, str(err)))
        return Scores({self.name: values}, {self.name: undefined} if undefined else {})


def _pairwise(key: str, output: Output, fn) -> Metric:
    return Metric(key=key, outputs=(output,), needs_ref=True, aligned=True,
                  build=lambda cfg, device: PairwiseScorer(output.name, fn))


PESQ = _pairwise("pesq", Output("PESQ", 1.0, "PESQ", ".3f"), pesq_wb)
ESTOI = _pairwise("estoi", Output("ESTOI", 1.0, "ESTOI", ".4f"), estoi)
SISDR = _pairwise("sisdr", Output("SISDR", 1.0, "SI-SDR", ".2f"), si_sdr)
