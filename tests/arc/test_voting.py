from __future__ import annotations

import numpy as np
import pytest

from seal_jax.domains.arc.augment import DIHEDRAL
from seal_jax.domains.arc.grids import grid_to_text
from seal_jax.domains.arc.views import IDENTITY, ViewMeta
from seal_jax.domains.arc.voting import _row_majority, grid_key, judge, pass_at_2, top3, vote
from seal_jax.domains.base import Query

A, B, C = grid_key([[1, 2], [3, 4]]), grid_key([[5, 6], [7, 8]]), grid_key([[9, 9], [9, 9]])


def ident(*answers):
    return [(IDENTITY, a) for a in answers]


def test_majority_wins():
    assert vote(ident(B, A, A)) == (A, B)
    assert vote(ident(A)) == (A, A)
    assert vote([]) == ()


def test_geometric_views_outvote_identity():
    answers = [*ident(A), ("Transpose()", B), ("Flip(0)", B), ("Flip(1)", B)]
    assert vote(answers) == (B, A)


def test_tie_between_second_and_third_uses_identity_counts():
    # candidates: A, B, C twice each; B and C tie, equal identity votes -> the reference keeps the third (C)
    assert vote(ident(A, A, A, B, C)) == (A, C)
    # B has more identity votes than C -> B stays second
    assert vote(ident(A, A, A, B, B, C)) == (A, B)
    # count ties are broken by first appearance
    assert vote(ident(B, A)) == (B, A)


def test_row_and_column_majority():
    grids = [[[1, 1], [2, 2]], [[1, 1], [5, 5]], [[4, 4], [3, 3]], [[6, 6], [3, 3]]]
    keys = [grid_key(g) for g in grids]
    assert _row_majority(keys) == ((1, 1), (3, 3))  # a grid nobody answered
    transposed = [grid_key(np.transpose(g)) for g in grids]
    assert _row_majority(transposed, transpose=True) == grid_key(np.transpose([[1, 1], [3, 3]]))
    # the most common shape decides; rows of other widths are ignored
    assert _row_majority([A, A, grid_key([[1, 2, 3]])]) == A
    assert top3([A, A]) == (A, A, A)


def _queries(metas):
    return [Query(f"q{i}", meta) for i, meta in enumerate(metas)]


def test_judge_maps_views_back_before_voting():
    gold = np.array([[1, 2, 3], [4, 5, 0]])
    wrong = np.zeros((2, 3), dtype=int)
    views = ["Transpose()", "Rotate(90)", "Flip(0)"]
    metas = [ViewMeta(0), ViewMeta(0)] + [ViewMeta(0, v) for v in views]
    outputs = [grid_to_text(wrong) + "#"] * 2 + [grid_to_text(DIHEDRAL[v].fn(gold)) + "#" for v in views]
    assert all(not np.array_equal(DIHEDRAL[v].fn(gold), gold) for v in views)
    (verdict,) = judge(_queries(metas), outputs, [gold])
    assert (
        verdict.correct and verdict.attempts == (grid_key(gold), grid_key(wrong)) and verdict.votes == (3, 2)
    )
    assert (verdict.n_queries, verdict.n_parsed) == (5, 5)


def test_pass_at_2_needs_every_test_input():
    g0, g1 = np.array([[1]]), np.array([[2]])
    metas = [ViewMeta(0), ViewMeta(0), ViewMeta(0), ViewMeta(1), ViewMeta(1)]
    # test 0: gold is the second attempt; test 1: only garbage and a wrong grid
    outputs = ["[[7]]#", "[[7]]#", "[[1]]#", "not a grid", "[[3]]#"]
    v0, v1 = judge(_queries(metas), outputs, [g0, g1])
    assert v0.correct and v0.attempts == (grid_key([[7]]), grid_key([[1]]))
    assert not v1.correct and v1.n_parsed == 1
    assert not pass_at_2([v0, v1]) and pass_at_2([v0]) and not pass_at_2([])
    outputs[4] = "[[2]]#"
    assert pass_at_2(judge(_queries(metas), outputs, [g0, g1]))


def test_no_parsable_answer_is_wrong():
    (verdict,) = judge(_queries([ViewMeta(0)] * 2), ["", "[[1 2]\n [3]]"], [np.array([[1]])])
    assert verdict.attempts == () and not verdict.correct and verdict.n_parsed == 0


def test_output_count_must_match():
    with pytest.raises(ValueError, match="2 outputs for 1 queries"):
        judge(_queries([ViewMeta(0)]), ["a", "b"], [np.array([[1]])])
