"""Passages with their questions: SQuAD (Hugging Face `datasets` or tfds), the reference's JSON files, and a
bundled offline demo set of fictional passages.

Every source yields `Passage`s in the source's order; `select_passages` then reproduces the reference's seeded
selection (`random.seed(42); random.shuffle(passages)`, then a slice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEMO_PATH = Path(__file__).parent / "data" / "demo_passages.json"
HF_SQUAD = "rajpurkar/squad"
_JSON_SHAPE = "a JSON list of {title, context, questions: [{question, answer}]} objects"


@dataclasses.dataclass(frozen=True)
class QA:
    """One question about a passage and its (first) gold answer."""

    question: str
    answer: str


@dataclasses.dataclass(frozen=True)
class Passage:
    """A titled passage and its questions; `id` is a short hash of title and context (stable across runs)."""

    id: str
    title: str
    context: str
    questions: tuple[QA, ...]


def passage_id(title: str, context: str) -> str:
    """12 hex digits of SHA-1 over title and context: SQuAD repeats titles, never (title, context) pairs."""
    return hashlib.sha1(f"{title}\n{context}".encode()).hexdigest()[:12]


def make_passage(title: str, context: str, questions: Iterable[QA]) -> Passage:
    return Passage(passage_id(title, context), title, context, tuple(questions))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def passages_from_squad_rows(rows: Iterable[Mapping[str, Any]]) -> list[Passage]:
    """Groups SQuAD rows (one question each: title, context, question, answers.text) into passages, in order
    of first appearance. Keeps the first gold answer, turns title underscores into spaces (as the
    reference does) and skips questions without an answer."""
    grouped: dict[tuple[str, str], list[QA]] = {}
    for row in rows:
        answers = row["answers"]["text"]
        key = (_text(row["title"]).replace("_", " "), _text(row["context"]))
        qas = grouped.setdefault(key, [])
        if len(answers):
            qas.append(QA(_text(row["question"]), _text(answers[0])))
    return [make_passage(title, context, qas) for (title, context), qas in grouped.items() if qas]


def load_squad_hf(split: str) -> list[Passage]:
    """SQuAD v1.1 `split` ("train" or "validation") through Hugging Face `datasets` (downloads on first
    use)."""
    import datasets

    return passages_from_squad_rows(datasets.load_dataset(HF_SQUAD, split=split))


def load_squad_tfds(split: str) -> list[Passage]:
    """SQuAD v1.1 `split` through TensorFlow Datasets (`pip install seal_jax[tfds]`)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("load_squad_tfds needs tensorflow-datasets: pip install 'seal_jax[tfds]'") from e
    return passages_from_squad_rows(tfds.as_numpy(tfds.load("squad", split=split)))


def _read_items(path: Path) -> list[Mapping[str, Any]]:
    try:
        items = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read JSON ({e}); expected {_JSON_SHAPE}") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: top level is {type(items).__name__}; expected {_JSON_SHAPE}")
    return items


def _string(item: Mapping[str, Any], field: str, may_be_empty: bool = False) -> str:
    """`item[field]`, a string; empty (or blank) only where `may_be_empty` (a passage or QA without text
    trains and scores nothing)."""
    value = item[field]
    if not isinstance(value, str):
        raise TypeError(f"{field!r} is {type(value).__name__}, not a string")
    if not may_be_empty and not value.strip():
        raise TypeError(f"{field!r} is empty")
    return value


def _parse_item(path: Path, i: int, item: Any) -> Passage:
    try:
        questions = item["questions"]
        if not isinstance(questions, list) or not questions:
            raise TypeError(
                "'questions' must be a non-empty list (a passage without questions cannot be scored)"
            )
        qas = [QA(_string(q, "question"), _string(q, "answer")) for q in questions]
        return make_passage(_string(item, "title", may_be_empty=True), _string(item, "context"), qas)
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"{path}: item {i} is malformed ({type(e).__name__}: {e}); expected {_JSON_SHAPE}"
        ) from None


def _parse_items(path: Path, items: Sequence[Any]) -> list[Passage]:
    """Every item as a Passage; two items with the same title and context are an error (same id)."""
    passages, seen = [], {}
    for i, item in enumerate(items):
        passage = _parse_item(path, i, item)
        if passage.id in seen:
            raise ValueError(
                f"{path}: items {seen[passage.id]} and {i} are the same passage (title and context)"
            )
        seen[passage.id] = i
        passages.append(passage)
    return passages


def load_json(path: str | Path) -> list[Passage]:
    """Passages from a JSON file in the reference's format (`squad_val.json`, or a self-edit file whose
    items also carry `completions`)."""
    path = Path(path)
    return _parse_items(path, _read_items(path))


def load_completions(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Stored self-edits of a reference self-edit file (`self_edits/base_val.json`, ...): passage id ->
    completions."""
    path = Path(path)
    items = _read_items(path)
    out = {}
    for i, (item, passage) in enumerate(zip(items, _parse_items(path, items), strict=True)):
        completions = item.get("completions")
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise ValueError(
                f"{path}: item {i} has no 'completions' list of strings; expected a reference self-edit file"
            )
        out[passage.id] = tuple(completions)
    return out


def load_demo() -> list[Passage]:
    """The bundled offline demo set: fictional passages no pretrained model can know (for smoke runs and
    tests)."""
    return load_json(DEMO_PATH)


def load_passages(source: str, split: str = "validation") -> list[Passage]:
    """One entry point for configs: `source` is "hf", "tfds", "demo" or a path to a reference-format JSON
    file."""
    loaders = {"hf": load_squad_hf, "tfds": load_squad_tfds, "demo": lambda _: load_demo()}
    return loaders[source](split) if source in loaders else load_json(source)


def select_passages(
    passages: Sequence[Passage], n: int | None, seed: int = 42, start: int = 0
) -> list[Passage]:
    """The reference's selection: shuffle a copy with `random.seed(seed)`, then take `[start:start + n]`
    (all from `start` if `n` is None). With seed 42 the first 200 of SQuAD validation are the reference's
    eval passages."""
    shuffled = list(passages)
    random.Random(seed).shuffle(shuffled)
    return shuffled[start:] if n is None else shuffled[start : start + n]


def selection_json(passages: Sequence[Passage]) -> str:
    """Which passages a run used (ids and titles, in order) as JSON text, so the selection can be recovered
    later (`read_selection`)."""
    rows = [{"id": p.id, "title": p.title} for p in passages]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def read_selection(path: str | Path, pool: Iterable[Passage]) -> list[Passage]:
    """The passages of `pool` named by a `selection_json` file, in the file's order."""
    by_id = {p.id: p for p in pool}
    ids = [row["id"] for row in json.loads(Path(path).read_text())]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} selected ids are not in the passage pool (first: {missing[0]})"
        )
    return [by_id[i] for i in ids]
