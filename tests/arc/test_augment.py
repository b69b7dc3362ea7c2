from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seal_jax.domains.arc.augment import (
    DIHEDRAL,
    GROUPS,
    AugmentGroups,
    augment_task,
    color_permutation,
    permute_colors,
    permute_examples,
)
from seal_jax.domains.arc.grids import ArcTask, Example, task_grids

from .conftest import generic_task

grid_st = hnp.arrays(np.int8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 9))
ALL = [a for group in GROUPS.values() for a in group]
BY_NAME = {a.name: a for a in ALL}
G = np.array([[1, 2, 3], [4, 5, 6]])


def test_group_sizes_and_selection():
    assert {k: len(v) for k, v in GROUPS.items()} == {"basic": 11, "size": 3, "chain": 6, "repeat": 3}
    assert len(AugmentGroups(True, True, True, True).augmenters()) == 23
    assert AugmentGroups().augmenters() == ()
    chosen = AugmentGroups(size=True, repeat=True)
    assert chosen.names() == ("size", "repeat")
    assert [a.name for a in chosen.augmenters()] == [a.name for a in GROUPS["size"] + GROUPS["repeat"]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Rotate(90)", [[3, 6], [2, 5], [1, 4]]),
        ("Rotate(270)", [[4, 1], [5, 2], [6, 3]]),
        ("Rotate(180)", [[6, 5, 4], [3, 2, 1]]),
        ("Flip(0)", [[4, 5, 6], [1, 2, 3]]),
        ("Flip(1)", [[3, 2, 1], [6, 5, 4]]),
        ("Transpose()", [[1, 4], [2, 5], [3, 6]]),
        ("Reflect(0, reverse=False)", [[1, 2, 3], [4, 5, 6], [4, 5, 6], [1, 2, 3]]),
        ("Reflect(0, reverse=True)", [[4, 5, 6], [1, 2, 3], [1, 2, 3], [4, 5, 6]]),
        ("Reflect(1, reverse=False)", [[1, 2, 3, 3, 2, 1], [4, 5, 6, 6, 5, 4]]),
        ("Reflect(1, reverse=True)", [[3, 2, 1, 1, 2, 3], [6, 5, 4, 4, 5, 6]]),
        ("IncreaseHeight(2)", [[1, 2, 3], [1, 2, 3], [4, 5, 6], [4, 5, 6]]),
        ("IncreaseWidth(2)", [[1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6]]),
        ("Repeat(0, 2)", [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]]),
        ("Repeat(1, 2)", [[1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6]]),
        ("Chain(Transpose(), IncreaseResolution(2))", [[1, 1, 4, 4], [1, 1, 4, 4], [2, 2, 5, 5], [2, 2, 5, 5],
                                                      [3, 3, 6, 6], [3, 3, 6, 6]]),
    ],
)  # fmt: skip
def test_augmenters_on_a_known_grid(name, expected):
    assert np.array_equal(BY_NAME[name].fn(G), expected)


def test_resolution_and_tiling_shapes():
    assert BY_NAME["IncreaseResolution(2)"].fn(G).shape == (4, 6)
    assert BY_NAME["Repeat(2, 2)"].fn(G).shape == (4, 6)
    assert np.array_equal(BY_NAME["Repeat(2, 2)"].fn(G)[2:, 3:], G)


@settings(deadline=None)
@given(grid_st)
def test_inverses_round_trip_exactly(grid):
    with_inverse = [a for a in ALL if a.inverse is not None]
    assert {a.name for a in with_inverse} == set(DIHEDRAL)
    for aug in with_inverse:
        assert np.array_equal(aug.inverse(aug.fn(grid)), grid), aug.name


@settings(deadline=None)
@given(grid_st)
def test_every_deterministic_augmenter_gives_a_valid_grid(grid):
    task = ArcTask("t", (Example(grid, grid),), ())
    for aug in ALL:
        out = augment_task(task, aug, np.random.default_rng(0)).train[0].input
        assert out.dtype == np.int8 and sorted(np.unique(out)) == sorted(np.unique(grid)), aug.name


def test_random_translate_shares_its_rng_across_examples():
    base = np.arange(20).reshape(4, 5) // 2  # no periodic rows or columns
    task = ArcTask("t", (Example(base, base), Example(base, base)), (Example(base, base),))
    moved = augment_task(task, BY_NAME["RandomTranslateXY()"], np.random.default_rng(3))
    inputs = [ex.input for ex in (*moved.train, *moved.test)]
    assert all(np.array_equal(g, inputs[0]) for g in inputs)  # same shape -> same shift for every example
    rolls = [(dy, dx) for dy in range(4) for dx in range(4)]
    shifts = {s for s in rolls if np.array_equal(np.roll(base, s, (0, 1)), inputs[0])}
    assert len(shifts) == 1
    with pytest.raises(AssertionError):
        augment_task(task, BY_NAME["RandomTranslateXY()"])


@settings(max_examples=200, deadline=None)
@given(st.lists(grid_st, min_size=1, max_size=4), st.integers(0, 2**32 - 1))
def test_color_permutation_is_a_bijection_fixing_zero(gs, seed):
    task = ArcTask("t", tuple(Example(g, g) for g in gs), ())
    perm = color_permutation(task, np.random.default_rng(seed))
    assert perm[0] == 0 and sorted(perm.tolist()) == list(range(10))
    used = set(np.unique(np.concatenate([g.ravel() for g in gs])).tolist()) - {0}
    free = set(range(1, 10)) - used
    moved_out = {c for c in used if perm[c] in free}
    assert len(moved_out) == min(len(used), len(free))  # used colors go to unused ones while any are left
    recolored = permute_colors(task, perm)
    for before, after in zip(task_grids(task), task_grids(recolored), strict=True):
        assert np.array_equal(perm[before], after)


def test_permute_examples_reorders_demos_only():
    task = generic_task(5)
    shuffled = permute_examples(task, np.random.default_rng(1))
    assert shuffled.test == task.test
    assert sorted(map(id, shuffled.train)) == sorted(map(id, task.train))
    assert [id(e) for e in shuffled.train] != [id(e) for e in task.train]
