"""ARC grids and tasks, and their text form in the reference's format.

A grid is a read-only int8 array of shape (H, W) with values 0-9. Its text is numpy's `str` of the array,
e.g. `[[7 5 7]\n [5 5 7]]`; an example is `input -> output#`, as in the reference's
`GPTTextMessageRepresenterV2` with a `PythonListGridRepresenter`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable

import numpy as np

Grid = np.ndarray  # (H, W) int8, values 0..9, read-only
Messages = list[dict[str, str]]
FormatChat = Callable[[Messages], str]

MAX_SIDE = 30  # ARC grids are at most 30x30; augmented tasks with a larger grid are dropped
IO_SEP = " -> "
END_OF_GRID = "#"

SYSTEM_PROMPT = (
    "Work out the rule that turns each input grid below into its output grid, then apply the same rule to "
    "the test input. Reply in exactly the format of the examples.\n"
    "Each grid is written as a numpy array:\n"
)


def as_grid(values: object) -> Grid:
    """A read-only int8 (H, W) copy of `values`; ValueError unless it is a non-empty 2-D grid of ints 0-9."""
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a grid must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 9:
        raise ValueError(f"grid values must be integers in 0..9, got dtype {arr.dtype}")
    grid = np.ascontiguousarray(arr, dtype=np.int8)
    grid.setflags(write=False)
    return grid


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One input -> output pair; `output` is None for a test input whose answer is unknown."""

    input: Grid
    output: Grid | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", as_grid(self.input))
        if self.output is not None:
            object.__setattr__(self, "output", as_grid(self.output))


@dataclasses.dataclass(frozen=True, eq=False)
class ArcTask:
    """An ARC task: demonstration pairs and test pairs. Compare contents with `task_key`, not `==`."""

    id: str
    train: tuple[Example, ...]
    test: tuple[Example, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", tuple(self.train))
        object.__setattr__(self, "test", tuple(self.test))


def task_grids(task: ArcTask) -> list[Grid]:
    """Every grid of the task (inputs and known outputs, demos then tests)."""
    return [g for ex in (*task.train, *task.test) for g in (ex.input, ex.output) if g is not None]


def max_side(task: ArcTask) -> int:
    """The largest height or width of any grid in the task."""
    return max(max(g.shape) for g in task_grids(task))


def task_key(task: ArcTask) -> bytes:
    """A content hash of the task's examples in order (its id is ignored)."""
    h = hashlib.blake2b(digest_size=16)
    for part, examples in ((b"train", task.train), (b"test", task.test)):
        h.update(part + len(examples).to_bytes(2, "little"))
        for ex in examples:
            for g in (ex.input, ex.output):
                h.update(b"none" if g is None else str(g.shape).encode() + g.tobytes())
    return h.digest()


def grid_to_text(grid: Grid) -> str:
    """numpy's `str(grid)` for a 0-9 grid, written out so global print options cannot change it."""
    return "[" + "\n ".join("[" + " ".join(str(int(v)) for v in row) + "]" for row in grid) + "]"


_ROW = re.compile(r"\[([^\[\]]*)\]")
_CELL_SEP = re.compile(r"[\s,]+")
_DIGITS = frozenset("0123456789")


def text_to_grid(text: str) -> Grid | None:
    """Parses a model's answer (`[[1 2]\n [3 4]]#`, text after the first `#` ignored) into a grid.

    None for anything else (malformed brackets, stray text, ragged rows, values outside 0-9); never raises.
    """
    body = text.split(END_OF_GRID, 1)[0].strip()
    if len(body) < 2 or body[0] != "[" or body[-1] != "]":
        return None
    inner = body[1:-1]
    rows = _ROW.findall(inner)
    if not rows or _ROW.sub("", inner).strip(" \t\r\n,"):
        return None
    cells = [_CELL_SEP.split(row.strip(" \t\r\n,")) for row in rows]
    if any(len(row) != len(cells[0]) or not all(c in _DIGITS for c in row) for row in cells):
        return None
    return as_grid(np.array([[int(c) for c in row] for row in cells], dtype=np.int8))


def answer_text(grid: Grid) -> str:
    """What the model should write for a test output: the grid text and the end marker `#`."""
    return grid_to_text(grid) + END_OF_GRID


def example_text(example: Example) -> str:
    """A demonstration line: `input -> output#`."""
    assert example.output is not None, "a demonstration needs an output"
    return grid_to_text(example.input) + IO_SEP + answer_text(example.output)


def task_messages(task: ArcTask, test_index: int = 0) -> Messages:
    """Messages asking for `task.test[test_index]`'s output: system = instruction + demos; user = input."""
    demos = "".join(example_text(ex) + "\n" for ex in task.train)
    query = grid_to_text(task.test[test_index].input) + IO_SEP
    return [{"role": "system", "content": SYSTEM_PROMPT + demos}, {"role": "user", "content": query}]
