from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np

from seal_jax.domains.arc.grids import ArcTask, Example, text_to_grid
from seal_jax.domains.arc.views import IDENTITY, VIEWS, ViewMeta, eval_queries, invert_prediction

from .conftest import fake_chat, generic_task


def _test_input(prompt: str) -> np.ndarray:
    """The test input grid shown in a query (the user turn of the fake template)."""
    return text_to_grid(prompt.split("<|user|>\n")[1].split(" -> ")[0])


def test_two_demos_two_tests_hand_count():
    # per test input: 2 leave-1-out tasks of one demo (reordering is a no-op) + 5 views = 7
    task = generic_task(2, n_tests=2)
    queries = eval_queries(task, fake_chat)
    assert len(queries) == 14
    assert Counter(q.meta.test_index for q in queries) == {0: 7, 1: 7}
    assert Counter(q.meta.view for q in queries) == {IDENTITY: 4, **dict.fromkeys(VIEWS, 2)}
    assert len({q.prompt for q in queries}) == 14
    for q in queries:
        json.dumps(dataclasses.asdict(q.meta))


def test_three_demos_bounds_and_determinism():
    task = generic_task(3)
    queries = eval_queries(task, fake_chat, seed=5)
    plain = [q for q in queries if q.meta.view == IDENTITY]
    assert 3 <= len(plain) <= 9 and len(queries) == len(plain) + 5
    assert all(q.prompt.count(" -> ") == 2 + 1 for q in plain)  # 2 demos + the test input
    assert eval_queries(task, fake_chat, seed=5) == queries


def test_inverse_maps_views_back():
    task = generic_task(3, side=5)
    gold_input = task.test[0].input
    for q in eval_queries(task, fake_chat):
        shown = _test_input(q.prompt)
        assert np.array_equal(invert_prediction(q.meta, shown), gold_input), q.meta
        assert (q.meta.view == IDENTITY) == np.array_equal(shown, gold_input)


def test_symmetric_view_is_skipped():
    sym = np.array([[1, 2, 1], [3, 4, 3], [1, 2, 1]])  # invariant under both flips and Rotate(180)
    task = ArcTask("s", (Example(sym, sym), Example(sym * 2, sym * 2)), (Example(sym, None),))
    views = {q.meta.view for q in eval_queries(task, fake_chat)}
    assert views == {IDENTITY, "Transpose()", "Rotate(90)"}


def test_fits_falls_back_to_leave_two():
    task = generic_task(3)
    limit = min(len(q.prompt) for q in eval_queries(task, fake_chat))  # every leave-1 prompt is too long
    queries = eval_queries(task, fake_chat, fits=lambda prompt: len(prompt) < limit)
    assert queries and all(q.prompt.count(" -> ") == 1 + 1 for q in queries)  # 1 demo + the test input
    assert eval_queries(task, fake_chat, fits=lambda prompt: False) == []


def test_identity_meta_leaves_prediction_alone():
    grid = np.array([[1, 2]])
    assert invert_prediction(ViewMeta(0), grid) is grid
    assert np.array_equal(invert_prediction(ViewMeta(0, "Rotate(90)"), np.rot90(grid)), grid)
