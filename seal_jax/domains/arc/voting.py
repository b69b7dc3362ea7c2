"""From an adapted model's answers to 2 attempts per test input, and pass@2 (docs/reference.md#arc-evaluation; the
reference's `arclib/voting.vote`).

Voting: each answer is parsed and mapped back through its view's inverse. Per category (all answers, then
each view: "identity", "Transpose()", ...) the top 3 are taken (most common first; a category with fewer than
3 distinct answers is padded with its row-wise and then column-wise majority grid). Over the pooled
candidates the top 3 are taken again; attempt 1 is the first, attempt 2 the second, except that when the
second and third tie the third wins unless the second has more "identity" votes (the reference's rule).
Ties in counts go to the answer seen first, where the reference's order was arbitrary (set order).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from seal_jax.domains.arc.grids import Grid, text_to_grid
from seal_jax.domains.arc.views import IDENTITY, ViewMeta, invert_prediction
from seal_jax.domains.base import Query

GridKey = tuple[tuple[int, ...], ...]  # a hashable grid
ALL = "all"


def grid_key(grid: Grid) -> GridKey:
    """A hashable copy of a grid."""
    return tuple(tuple(int(v) for v in row) for row in np.asarray(grid))


def _ranked(answers: Sequence[GridKey]) -> list[GridKey]:
    """Distinct answers, most common first, ties in order of first appearance."""
    counts = Counter(answers)
    return sorted(counts, key=lambda a: -counts[a])  # sorted is stable; Counter keeps first-appearance order


def _row_majority(answers: Sequence[GridKey], transpose: bool = False) -> GridKey:
    """The most common shape, filled row by row with the most common row of that width at that index."""
    if transpose:
        answers = [tuple(zip(*a, strict=True)) for a in answers]
    height, width = _ranked([(len(a), len(a[0])) for a in answers])[0]
    rows = tuple(
        _ranked([a[r] for a in answers if len(a) > r and len(a[r]) == width])[0] for r in range(height)
    )
    return tuple(zip(*rows, strict=True)) if transpose else rows


def top3(answers: Sequence[GridKey]) -> tuple[GridKey, GridKey, GridKey]:
    """The reference's `get_all_type_of_votingsv2`: three candidates from non-empty `answers`."""
    ranked = _ranked(answers)
    rows, cols = _row_majority(answers), _row_majority(answers, transpose=True)
    first = ranked[0]
    second = ranked[1] if len(ranked) > 1 else (rows if rows != first else cols)
    third = ranked[2] if len(ranked) > 2 else (rows if rows not in (first, second) else cols)
    return first, second, third


def vote(answers: Sequence[tuple[str, GridKey]]) -> tuple[GridKey, ...]:
    """Two attempts (possibly equal) from (category, answer) pairs; () if there are no answers."""
    if not answers:
        return ()
    by_category: dict[str, list[GridKey]] = {ALL: [a for _, a in answers]}
    for category, answer in answers:
        by_category.setdefault(category, []).append(answer)
    candidates = [c for group in by_category.values() for c in top3(group)]
    first, second, third = top3(candidates)
    counts, identity = Counter(candidates), by_category.get(IDENTITY)
    tied = second != third and counts[second] == counts[third]
    if tied and identity is not None and identity.count(second) <= identity.count(third):
        second = third
    return first, second


@dataclasses.dataclass(frozen=True)
class SubTaskVerdict:
    """One test input's attempts and their votes, its numbers of queries and parsed answers, and whether its
    gold output is among the attempts."""

    attempts: tuple[GridKey, ...]
    votes: tuple[int, ...]  # how many parsed answers equal each attempt
    n_queries: int
    n_parsed: int
    correct: bool


def collect_answers(queries: Sequence[Query], outputs: Sequence[str]) -> dict[int, list[tuple[str, GridKey]]]:
    """Parsed answers mapped back to the original frame, as (view, answer) pairs per test index."""
    if len(queries) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(queries)} queries")
    answers: dict[int, list[tuple[str, GridKey]]] = {}
    for query, text in zip(queries, outputs, strict=True):
        meta: ViewMeta = query.meta
        answers.setdefault(meta.test_index, [])
        grid = text_to_grid(text)
        if grid is not None:
            answers[meta.test_index].append((meta.view, grid_key(invert_prediction(meta, grid))))
    return answers


def judge(queries: Sequence[Query], outputs: Sequence[str], gold: Sequence[Grid]) -> list[SubTaskVerdict]:
    """One verdict per gold test output: correct iff the gold grid is among the 2 voted attempts."""
    answers = collect_answers(queries, outputs)
    n_asked = Counter(q.meta.test_index for q in queries)
    verdicts = []
    for index, target in enumerate(gold):
        given = answers.get(index, [])
        attempts = vote(given)
        counts = Counter(answer for _, answer in given)
        votes = tuple(counts[a] for a in attempts)
        verdicts.append(
            SubTaskVerdict(attempts, votes, n_asked[index], len(given), grid_key(target) in attempts)
        )
    return verdicts


def pass_at_2(verdicts: Sequence[SubTaskVerdict]) -> bool:
    """Kaggle rule: a task is solved iff every one of its test inputs is (and it has at least one)."""
    return bool(verdicts) and all(v.correct for v in verdicts)
