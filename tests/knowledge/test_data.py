import json
import random
import re

import pytest

from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.data import QA, make_passage
from tests.knowledge import REFERENCE, requires_reference


def _squad_rows():
    ctx_a, ctx_b = "Alpha context.", "Beta context."
    rows = [
        ("1", "Super_Bowl_50", ctx_a, "Q1?", ["Denver Broncos", "Broncos"]),
        ("2", "Super_Bowl_50", ctx_b, "Q2?", ["Santa Clara"]),
        ("3", "Super_Bowl_50", ctx_a, "Q3?", ["2015", "2015 season"]),
        ("4", "Warsaw", "Gamma context.", "Q4?", ["Vistula"]),
    ]
    return {
        "id": [r[0] for r in rows],
        "title": [r[1] for r in rows],
        "context": [r[2] for r in rows],
        "question": [r[3] for r in rows],
        "answers": [{"text": r[4], "answer_start": [0] * len(r[4])} for r in rows],
    }


def test_squad_rows_grouped_by_passage_from_a_datasets_dataset():
    datasets = pytest.importorskip("datasets")
    passages = data.passages_from_squad_rows(datasets.Dataset.from_dict(_squad_rows()))
    assert [(p.title, p.context) for p in passages] == [
        ("Super Bowl 50", "Alpha context."),
        ("Super Bowl 50", "Beta context."),
        ("Warsaw", "Gamma context."),
    ]
    assert passages[0].questions == (QA("Q1?", "Denver Broncos"), QA("Q3?", "2015"))
    assert passages[2].questions == (QA("Q4?", "Vistula"),)
    assert len({p.id for p in passages}) == 3
    assert passages[0].id == data.passage_id("Super Bowl 50", "Alpha context.")


def test_squad_rows_as_bytes_like_tfds():
    rows = [{"title": b"A_b", "context": b"C.", "question": b"Q?", "answers": {"text": [b"x", b"y"]}}]
    assert data.passages_from_squad_rows(rows) == [make_passage("A b", "C.", [QA("Q?", "x")])]


def test_questions_without_answers_are_skipped():
    rows = [{"title": "T", "context": "C", "question": "Q?", "answers": {"text": []}}]
    assert data.passages_from_squad_rows(rows) == []


def test_tfds_missing_gives_a_clear_error():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install"):
            data.load_squad_tfds("validation")
    else:
        pytest.skip("tensorflow-datasets is installed")


def test_demo_set():
    passages = data.load_passages("demo")
    assert len(passages) >= 30
    assert len({p.id for p in passages}) == len(passages) == len({p.title for p in passages})
    for p in passages:
        assert 80 <= len(p.context.split()) <= 140, p.title
        assert 4 <= len(p.questions) <= 6, p.title
        for qa in p.questions:
            assert qa.answer.lower() in p.context.lower(), (p.title, qa.answer)
            assert len(qa.answer.split()) <= 5, (p.title, qa.answer)


def test_select_passages_is_the_reference_shuffle():
    passages = data.load_demo()
    reference = list(passages)
    random.seed(7)
    random.shuffle(reference)
    assert data.select_passages(passages, 5, seed=7) == reference[:5]
    assert data.select_passages(passages, 5, seed=7, start=3) == reference[3:8]
    assert data.select_passages(passages, None, seed=7, start=30) == reference[30:]
    assert data.select_passages(passages, 3, seed=8) != reference[:3]
    assert passages == data.load_demo()  # the input is not shuffled in place


@requires_reference
def test_seed_42_on_squad_val_gives_the_reference_eval_passages():
    squad_val = data.load_json(REFERENCE / "squad_val.json")
    assert len(squad_val) == 2067 and sum(len(p.questions) for p in squad_val) == 10570
    chosen = data.select_passages(squad_val, 200, seed=42)
    base_val = data.load_json(REFERENCE / "self_edits" / "base_val.json")
    assert chosen[0].title == base_val[0].title == "Genghis Khan"
    assert [p.id for p in chosen] == [p.id for p in base_val]
    assert sum(len(p.questions) for p in chosen) == 974


@requires_reference
def test_reference_self_edit_files_load_with_completions():
    completions = data.load_completions(REFERENCE / "self_edits" / "iter2_val.json")
    assert len(completions) == 200 and all(len(c) == 5 for c in completions.values())


def test_selection_round_trip(tmp_path):
    passages = data.load_demo()
    chosen = data.select_passages(passages, 4, seed=42)
    (tmp_path / "selection.json").write_text(data.selection_json(chosen))
    assert data.read_selection(tmp_path / "selection.json", passages) == chosen
    with pytest.raises(ValueError, match="not in the passage pool"):
        data.read_selection(tmp_path / "selection.json", passages[:1])


def _one_line_error(path, call=data.load_json) -> str:
    with pytest.raises(ValueError) as info:
        call(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", r"cannot read JSON.*expected a JSON list"),
        ('{"title": "T"}', r"top level is dict; expected a JSON list"),
        (
            '[{"title": "T", "questions": [{"question": "Q", "answer": "A"}]}]',
            r"item 0 is malformed \(KeyError: 'context'\)",
        ),
        ('[{"title": "T", "context": "C", "questions": [{"question": "Q"}]}]', r"item 0 is malformed"),
        ('["just a string"]', r"item 0 is malformed"),
        ('[{"title": "T", "context": "C", "questions": []}]', r"item 0 .*non-empty list"),
        (
            '[{"title": "T", "context": "C", "questions": [{"question": "Q", "answer": null}]}]',
            r"'answer' is NoneType",
        ),
        (
            '[{"title": ["T"], "context": "C", "questions": [{"question": "Q", "answer": "A"}]}]',
            r"'title' is list",
        ),
        (
            '[{"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A"}]}, '
            '{"title": "T", "context": "C", "questions": [{"question": "Q2", "answer": "B"}]}]',
            r"items 0 and 1 are the same passage",
        ),
    ],
)
def test_bad_json_file_is_a_one_line_value_error(tmp_path, content, pattern):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert re.search(pattern, _one_line_error(path))


def test_missing_file_and_missing_completions(tmp_path):
    _one_line_error(tmp_path / "absent.json")
    path = tmp_path / "plain.json"
    path.write_text(
        json.dumps([{"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A"}]}])
    )
    assert len(data.load_json(path)) == 1
    assert "no 'completions' list" in _one_line_error(path, data.load_completions)
    item = {
        "title": "T",
        "context": "C",
        "questions": [{"question": "Q", "answer": "A"}],
        "completions": [None],
    }
    path.write_text(json.dumps([item]))
    assert "list of strings" in _one_line_error(path, data.load_completions)
