"""Test-time evaluation queries for an adapted model (docs/reference.md#arc-evaluation; the reference's inference
`get_leave_n_test_task` with include_n=[1], permute_n=2).

For each test input: every leave-1-out subset of the demos plus 2 random demo orders of each (deduped), then
5 geometric views (Transpose, Flip(0), Flip(1), Rotate(90), Rotate(180)) of randomly chosen members, skipped
when they repeat a query. A view's answer is mapped back to the original frame with the view's inverse.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np

from seal_jax.domains.arc.augment import DIHEDRAL, augment_task, permute_examples
from seal_jax.domains.arc.grids import ArcTask, FormatChat, Grid, task_key, task_messages
from seal_jax.domains.base import Query

IDENTITY = "identity"
VIEWS = ("Transpose()", "Flip(0)", "Flip(1)", "Rotate(90)", "Rotate(180)")
PERMUTE_N = 2
LEAVE_N = 1  # falls back to 2 when no leave-1 query fits


@dataclasses.dataclass(frozen=True)
class ViewMeta:
    """Which test input a query asks about, and the view (IDENTITY or a `VIEWS` name) it was asked in."""

    test_index: int
    view: str = IDENTITY


def invert_prediction(meta: ViewMeta, grid: Grid) -> Grid:
    """Maps a grid predicted for the query back to the original task's frame."""
    return grid if meta.view == IDENTITY else DIHEDRAL[meta.view].inverse(grid)


def _drop_demos(task: ArcTask, n: int) -> list[ArcTask]:
    """`task` without each n-subset of its demos (order kept)."""
    return [
        ArcTask(task.id, tuple(ex for j, ex in enumerate(task.train) if j not in removed), task.test)
        for removed in itertools.combinations(range(len(task.train)), n)
    ]


def view_tasks(
    task: ArcTask,
    test_index: int,
    rng: np.random.Generator,
    leave_n: int = LEAVE_N,
    permute_n: int = PERMUTE_N,
) -> list[tuple[ArcTask, ViewMeta]]:
    """The distinct single-test tasks asked about `task.test[test_index]`, each with its `ViewMeta`."""
    single = ArcTask(task.id, task.train, (task.test[test_index],))
    plain = []
    for sub in _drop_demos(single, leave_n):
        plain.append(sub)
        plain.extend(permute_examples(sub, rng) for _ in range(permute_n))
    queries: dict[bytes, tuple[ArcTask, ViewMeta]] = {}
    for t in plain:
        queries.setdefault(task_key(t), (t, ViewMeta(test_index)))
    members = list(queries.values())
    for name in VIEWS if members else ():
        source, _ = members[rng.integers(len(members))]
        viewed = augment_task(source, DIHEDRAL[name])
        queries.setdefault(task_key(viewed), (viewed, ViewMeta(test_index, name)))
    return list(queries.values())


def eval_queries(
    task: ArcTask, format_chat: FormatChat, seed: int = 0, fits: Callable[[str], bool] | None = None
) -> list[Query]:
    """The queries for all of `task`'s test inputs; `fits(prompt)` (optional) drops too-long prompts."""
    rng = np.random.default_rng(seed)
    queries = []
    for test_index in range(len(task.test)):
        for leave_n in (LEAVE_N, LEAVE_N + 1):
            found = [
                Query(format_chat(task_messages(t)), meta)
                for t, meta in view_tasks(task, test_index, rng, leave_n)
            ]
            found = [q for q in found if fits is None or fits(q.prompt)]
            if found:
                break
        queries.extend(found)
    return queries
