"""Bootstrap intervals, paired differences and pooled standard deviations against hand-computed values; the
knowledge experiment's held-out table with intervals."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from seal_jax import stats
from seal_jax.domains.knowledge.data import QA, Passage
from seal_jax.experiments import grid, intervals, knowledge


def test_bootstrap_mean_on_given_resamples():
    values = [0.0, 1.0, 0.5]
    # resample means: 0, 1/3, 0.5, 2/3, 1 (by hand)
    indices = np.array([[0, 0, 0], [0, 0, 1], [2, 2, 2], [1, 1, 0], [1, 1, 1]])
    lo, hi = stats.bootstrap_mean(values, indices)
    sorted_means = [0.0, 1 / 3, 0.5, 2 / 3, 1.0]
    # numpy's linear percentile at 2.5% of 5 values: position 0.1 -> 0 + 0.1 * (1/3)
    assert lo == pytest.approx(0.1 / 3)
    assert hi == pytest.approx(sorted_means[3] + 0.9 * (1 - sorted_means[3]))


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


def test_held_out_intervals_label_grid_rows_and_pair_every_row():
    """The knowledge experiment's held-out table: one row per (method, grid setting), accuracies are macro
    means, and SEAL − round-0 is the paired difference over the passages both scored."""
    evals = [Passage(f"p{i}", "t", "c", tuple(QA("q", "a") for _ in range(i + 1))) for i in range(3)]
    (lr,) = grid.parse("learning_rate=1e-3")
    scored = [
        ("round0", "round-0 self-edits", "no RL", {None: {"p0": 0.0, "p1": 0.5, "p2": 0.5}, lr: {"p0": 1.0}}),
        ("seal", "SEAL (1 rounds)", "ReST-EM", {None: {"p0": 0.1, "p1": 0.6, "p2": 0.6}}),
    ]
    cfg = ml_collections.ConfigDict({"seed": 0, "table": {"bootstrap_samples": 300}})
    result = knowledge.held_out_intervals(cfg, scored, evals, "t")
    table = {r["method"]: r for r in result["table"]}
    assert set(table) == {"round-0 self-edits", "round-0 self-edits [learning_rate=0.001]", "SEAL (1 rounds)"}
    assert table["round-0 self-edits"]["accuracy"] == pytest.approx(1 / 3)
    assert table["round-0 self-edits"]["questions"] == 6
    assert table["round-0 self-edits [learning_rate=0.001]"]["passages"] == 1
    (seal_minus_round0,) = [
        d
        for d in result["differences"]
        if d["minus"] == "round-0 self-edits" and d["row"] == "SEAL (1 rounds)"
    ]
    assert seal_minus_round0["difference"] == pytest.approx(0.1)
    assert seal_minus_round0["ci95"] == pytest.approx([0.1, 0.1])  # the same shift on every passage
    assert "| SEAL (1 rounds) − round-0 self-edits | +10.0 | [10.0, 10.0] | 3 |" in intervals.markdown(result)
