"""The self-edit's data-augmentation tools: the reference's augmenters (MARC `arclib/augmenters.py`, as chosen
by SEAL's `get_augmenters`) as one table, plus color and demo-order permutations.

Every augmenter maps each grid of a task (inputs and outputs alike). The dihedral ones (rotations, flips,
transpose) carry their exact inverse, used to map predictions on test-time views back to the original frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from seal_jax.domains.arc.grids import ArcTask, Example, Grid, task_grids

GridFn = Callable[[Grid], Grid]

TRANSLATE_MAX = 4  # RandomTranslateXY rolls each axis by a shift in [0, min(4, side))


@dataclasses.dataclass(frozen=True)
class Augmenter:
    """A named grid map (`fn` None: RandomTranslateXY); `inverse`, if set, has inverse(fn(g)) == g."""

    name: str
    fn: GridFn | None
    inverse: GridFn | None = None


def _rotate(quarter_turns: int) -> GridFn:
    return lambda g: np.rot90(g, quarter_turns)


def _reflect(axis: int, reverse: bool) -> GridFn:
    """The grid and its mirror image along `axis`, concatenated (mirror first if `reverse`)."""

    def fn(g: Grid) -> Grid:
        mirrored = np.flip(g, axis)
        return np.concatenate((mirrored, g) if reverse else (g, mirrored), axis=axis)

    return fn


def _upscale(rows: int, cols: int) -> GridFn:
    """Each cell becomes a rows x cols block (`np.repeat`)."""
    return lambda g: np.repeat(np.repeat(g, rows, axis=0), cols, axis=1)


def _tile(rows: int, cols: int) -> GridFn:
    """The whole grid repeated rows x cols times (`np.tile`)."""
    return lambda g: np.tile(g, (rows, cols))


def _then(first: GridFn, second: GridFn) -> GridFn:
    return lambda g: second(first(g))


DIHEDRAL: dict[str, Augmenter] = {
    a.name: a
    for a in (
        Augmenter("Rotate(90)", _rotate(1), _rotate(-1)),
        Augmenter("Rotate(270)", _rotate(3), _rotate(1)),
        Augmenter("Rotate(180)", _rotate(2), _rotate(2)),
        Augmenter("Flip(0)", np.flipud, np.flipud),
        Augmenter("Flip(1)", np.fliplr, np.fliplr),
        Augmenter("Transpose()", np.transpose, np.transpose),
    )
}

_RESOLUTION_2 = Augmenter("IncreaseResolution(2)", _upscale(2, 2))

GROUPS: dict[str, tuple[Augmenter, ...]] = {
    "basic": (
        *(DIHEDRAL[n] for n in ("Rotate(90)", "Rotate(270)", "Rotate(180)", "Flip(0)", "Flip(1)")),
        *(
            Augmenter(f"Reflect({axis}, reverse={reverse})", _reflect(axis, reverse))
            for reverse in (True, False)
            for axis in (0, 1)
        ),
        Augmenter("RandomTranslateXY()", None),
        DIHEDRAL["Transpose()"],
    ),
    "size": (
        _RESOLUTION_2,
        Augmenter("IncreaseHeight(2)", _upscale(2, 1)),
        Augmenter("IncreaseWidth(2)", _upscale(1, 2)),
    ),
    "chain": tuple(
        Augmenter(f"Chain({base.name}, {_RESOLUTION_2.name})", _then(base.fn, _RESOLUTION_2.fn))
        for base in (
            DIHEDRAL[n]
            for n in ("Rotate(90)", "Rotate(270)", "Rotate(180)", "Flip(0)", "Flip(1)", "Transpose()")
        )
    ),
    "repeat": (
        Augmenter("Repeat(0, 2)", _tile(2, 1)),
        Augmenter("Repeat(1, 2)", _tile(1, 2)),
        Augmenter("Repeat(2, 2)", _tile(2, 2)),
    ),
}


@dataclasses.dataclass(frozen=True)
class AugmentGroups:
    """Which augmenter groups a self-edit switched on (the four `use_*_augmentations` booleans)."""

    basic: bool = False
    size: bool = False
    chain: bool = False
    repeat: bool = False

    def names(self) -> tuple[str, ...]:
        """The enabled groups, in the reference's order."""
        return tuple(name for name in GROUPS if getattr(self, name))

    def augmenters(self) -> tuple[Augmenter, ...]:
        """The enabled augmenters: basic (11), size (3), chain (6), repeat (3), in that order."""
        return tuple(a for name in self.names() for a in GROUPS[name])


def map_grids(task: ArcTask, fn: GridFn) -> ArcTask:
    """`task` with `fn` applied to every input and known output."""
    return map_examples(task, lambda ex: Example(fn(ex.input), None if ex.output is None else fn(ex.output)))


def map_examples(task: ArcTask, fn: Callable[[Example], Example]) -> ArcTask:
    """`task` with `fn` applied to every demo and test example."""
    return ArcTask(task.id, tuple(map(fn, task.train)), tuple(map(fn, task.test)))


def _translate(grid: Grid, rng: np.random.Generator) -> Grid:
    shift = tuple(int(rng.integers(min(TRANSLATE_MAX, side))) for side in grid.shape)
    return np.roll(grid, shift, axis=(0, 1))


def augment_task(task: ArcTask, augmenter: Augmenter, rng: np.random.Generator | None = None) -> ArcTask:
    """Applies `augmenter` to every grid of `task`.

    RandomTranslateXY (needs `rng`) follows the reference's shared RNG: every example replays the same random
    stream (input shift, then output shift), so examples of equal shape are shifted alike.
    """
    if augmenter.fn is not None:
        return map_grids(task, augmenter.fn)
    assert rng is not None, f"{augmenter.name} needs an rng"
    seed = int(rng.integers(2**63))

    def shift(ex: Example) -> Example:
        stream = np.random.default_rng(seed)
        moved_input = _translate(ex.input, stream)
        return Example(moved_input, None if ex.output is None else _translate(ex.output, stream))

    return map_examples(task, shift)


def color_permutation(task: ArcTask, rng: np.random.Generator) -> np.ndarray:
    """A random bijection of colors 0-9 as a lookup table `perm` (shape (10,)), with perm[0] == 0.

    Like the reference's PermuteColors, each color the task uses goes to a color it does not use while any are
    left (so the task always changes if it leaves a color free); the rest of 1-9 is filled in at random.
    """
    used = sorted(set(np.unique(np.concatenate([g.ravel() for g in task_grids(task)])).tolist()) - {0})
    unused = [c for c in range(1, 10) if c not in used]
    targets = [*rng.permutation(unused).tolist(), *rng.permutation(used).tolist()]  # preferred targets first
    sources = rng.permutation(used).tolist()
    perm = np.zeros(10, dtype=np.int8)
    perm[sources] = targets[: len(sources)]
    perm[unused] = rng.permutation(targets[len(sources) :])
    return perm


def permute_colors(task: ArcTask, perm: np.ndarray) -> ArcTask:
    """`task` with every cell c replaced by perm[c]."""
    return map_grids(task, lambda g: perm[g])


def permute_examples(task: ArcTask, rng: np.random.Generator) -> ArcTask:
    """`task` with its demonstrations in a random order."""
    order = rng.permutation(len(task.train))
    return ArcTask(task.id, tuple(task.train[i] for i in order), task.test)
