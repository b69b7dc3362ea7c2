"""Statistics of result tables: bootstrap intervals over passages, paired differences, pooled standard
deviations. Pure numpy; every random draw comes from the seed the caller passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95


def resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """[samples, n] indices drawn with replacement from range(n) (one bootstrap replicate per row)."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile bootstrap interval of `replicates` [samples]."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_mean(values: Sequence[float], indices: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` [n] over the resamples `indices` [samples, n]."""
    return percentile_interval(np.asarray(values, np.float64)[indices].mean(axis=1))


def bootstrap_ratio(
    numerators: Sequence[float], denominators: Sequence[float], indices: np.ndarray
) -> tuple[float, float]:
    """95% percentile interval of Σ numerators / Σ denominators [n] over the resamples `indices` [samples, n]
    of their n units: a cluster bootstrap (e.g. questions answered right and asked, per passage, so that a
    passage's questions, which share its text and self-edits, are resampled together)."""
    num = np.asarray(numerators, np.float64)[indices].sum(axis=1)
    den = np.asarray(denominators, np.float64)[indices].sum(axis=1)
    return percentile_interval(num / den)


def paired_difference(
    a: Sequence[float], b: Sequence[float], indices: np.ndarray
) -> tuple[float, tuple[float, float]]:
    """mean(a - b) and its 95% interval; a[i] and b[i] belong to the same unit (passage), which each resample
    keeps together, so what the rows share (a passage's difficulty) cancels."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(diff.mean()), bootstrap_mean(diff, indices)


def pooled(counts: Sequence[int], means: Sequence[float], stds: Sequence[float]) -> tuple[int, float, float]:
    """Combines groups (n_i values with mean m_i and sample std s_i, ddof 1; s_i = 0 when n_i = 1) into the
    count, mean and sample std of all their values together:
    s² = (Σ (n_i - 1) s_i² + Σ n_i (m_i - m)²) / (N - 1). The mean of the s_i ignores the spread between
    the groups' means."""
    n = np.asarray(counts, np.float64)
    m = np.asarray(means, np.float64)
    s = np.asarray(stds, np.float64)
    total = n.sum()
    mean = float((n * m).sum() / total)
    if total < 2:
        return int(total), mean, 0.0
    var = (((n - 1) * s**2).sum() + (n * (m - mean) ** 2).sum()) / (total - 1)
    return int(total), mean, float(np.sqrt(var))


def summary(values: Sequence[float]) -> tuple[int, float, float]:
    """(count, mean, sample std with ddof 1; 0 for one value)."""
    v = np.asarray(values, np.float64)
    return len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
