from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seal_jax.domains.arc.grids import (
    ArcTask,
    Example,
    as_grid,
    example_text,
    grid_to_text,
    task_key,
    task_messages,
    text_to_grid,
)

grids = hnp.arrays(
    np.int8,
    st.tuples(st.integers(1, 30), st.integers(1, 30)),
    elements=st.integers(0, 9),
)


@settings(deadline=None)
@given(grids)
def test_text_round_trip_and_matches_numpy_str(grid):
    text = grid_to_text(grid)
    assert text == str(grid.astype(np.int64))
    parsed = text_to_grid(text + "#")
    assert parsed is not None and parsed.shape == grid.shape and np.array_equal(parsed, grid)


def test_reference_example_format():
    ex = Example([[7, 5, 7], [5, 5, 7]], [[1]])
    assert grid_to_text(ex.input) == "[[7 5 7]\n [5 5 7]]"
    assert example_text(ex) == "[[7 5 7]\n [5 5 7]] -> [[1]]#"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "#",
        "[[1 2]\n [3]]",  # ragged
        "[[1 10]]",  # value outside 0-9
        "[[1 -1]]",
        "[[1 2] x [3 4]]",  # stray text
        "[[[1]]]",
        "[[]]",
        "[1 2 3]",  # 1-D
        "[[1 2]",
        "the answer is [[1 2]]",
        "[[1 ²]]",  # a unicode digit
    ],
)
def test_malformed_text_gives_none(text):
    assert text_to_grid(text) is None


def test_parse_tolerates_spacing_commas_and_trailing_text():
    expected = np.array([[1, 2], [3, 4]])
    for text in ("[[1  2]\n [3 4]]#<|eot|>", " [[1, 2], [3, 4]] ", "[[1 2]\n\n [3 4]]#[[9]]"):
        assert np.array_equal(text_to_grid(text), expected), text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[] \n#0123456789,-x")) | st.characters(), max_size=200))
def test_parse_never_raises(text):
    result = text_to_grid(text)
    assert result is None or (result.ndim == 2 and result.min() >= 0 and result.max() <= 9)


@pytest.mark.parametrize("bad", [[[1, 2], [3]], [[10]], [[-1]], [[]], [1, 2], [[1.5]], [[True]]])
def test_as_grid_rejects_non_grids(bad):
    with pytest.raises(ValueError):
        as_grid(bad)


def test_grids_are_read_only_int8():
    g = as_grid([[1, 2]])
    assert g.dtype == np.int8 and not g.flags.writeable


def test_task_key_is_content_based():
    a = ArcTask("a", (Example([[1]], [[2]]),), (Example([[3]], [[4]]),))
    b = ArcTask("b", (Example([[1]], [[2]]),), (Example([[3]], [[4]]),))
    c = ArcTask("a", (Example([[1]], [[2]]),), (Example([[3]], None),))
    d = ArcTask("a", (), (Example([[1]], [[2]]), Example([[3]], [[4]])))
    assert task_key(a) == task_key(b)
    assert len({task_key(a), task_key(c), task_key(d)}) == 3


def test_task_messages_hide_the_test_output():
    task = ArcTask("t", (Example([[1]], [[2]]),), (Example([[3]], [[4]]),))
    system, user = task_messages(task)
    assert system["role"] == "system" and system["content"].endswith("[[1]] -> [[2]]#\n")
    assert user == {"role": "user", "content": "[[3]] -> "}
    assert "[[4]]" not in system["content"] + user["content"]
