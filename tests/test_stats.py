"""Bootstrap intervals, paired differences and pooled standard deviations against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from seal_jax import stats


def test_bootstrap_mean_on_given_resamples():
    values = [0.0, 1.0, 0.5]
    # resample means: 0, 1/3, 0.5, 2/3, 1 (by hand)
    indices = np.array([[0, 0, 0], [0, 0, 1], [2, 2, 2], [1, 1, 0], [1, 1, 1]])
    lo, hi = stats.bootstrap_mean(values, indices)
    sorted_means = [0.0, 1 / 3, 0.5, 2 / 3, 1.0]
    # numpy's linear percentile at 2.5% of 5 values: position 0.1 -> 0 + 0.1 * (1/3)
    assert lo == pytest.approx(0.1 / 3)
    assert hi == pytest.approx(sorted_means[3] + 0.9 * (1 - sorted_means[3]))


def test_bootstrap_ratio_resamples_whole_units():
    # passages with 1/2 and 3/4 questions right: resamples {0,0} 0.5, {0,1} and {1,0} 4/6, {1,1} 0.75
    right, asked = [1.0, 3.0], [2.0, 4.0]
    indices = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    lo, hi = stats.bootstrap_ratio(right, asked, indices)
    ratios = np.percentile([0.5, 4 / 6, 4 / 6, 0.75], [2.5, 97.5])
    assert (lo, hi) == (pytest.approx(ratios[0]), pytest.approx(ratios[1]))
    # not the mean of per-passage accuracies (0.5 and 0.75 would give 0.625 for the mixed resamples)
    assert stats.bootstrap_ratio(right, asked, np.array([[0, 1]])) == (pytest.approx(4 / 6),) * 2


def test_paired_difference_cancels_what_the_rows_share():
    """b = a + 0.1 on every passage: the paired interval is exactly [0.1, 0.1] whatever the resamples."""
    a = [0.0, 0.2, 0.9, 0.4]
    b = [x + 0.1 for x in a]
    mean, (lo, hi) = stats.paired_difference(b, a, stats.resample_indices(4, 500, seed=3))
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_resamples_are_seeded():
    assert (stats.resample_indices(5, 7, 1) == stats.resample_indices(5, 7, 1)).all()
    assert (stats.resample_indices(5, 7, 1) != stats.resample_indices(5, 7, 2)).any()


def test_pooled_std_by_hand_and_against_all_values():
    # groups {1, 3} (mean 2, s = sqrt 2) and {5} (mean 5, s 0): all values {1, 3, 5}, mean 3, s = 2
    n, mean, std = stats.pooled([2, 1], [2.0, 5.0], [np.sqrt(2.0), 0.0])
    assert (n, mean, std) == (3, pytest.approx(3.0), pytest.approx(2.0))
    # the reference's mean of stds would say sqrt(2)/2 ≈ 0.71
    rng = np.random.default_rng(0)
    groups = [rng.random(k) for k in (3, 5, 1, 4)]
    summaries = [stats.summary(g) for g in groups]
    n, mean, std = stats.pooled(*zip(*summaries, strict=True))
    everything = np.concatenate(groups)
    assert n == len(everything)
    assert mean == pytest.approx(everything.mean()) and std == pytest.approx(everything.std(ddof=1))


def test_summary_of_one_value_has_zero_std():
    assert stats.summary([0.25]) == (1, 0.25, 0.0)
