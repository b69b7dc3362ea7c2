"""Self-edit text -> inner-loop training sequences, following the reference's `build_train_sequences`.

Steps: keep only what follows the first `\\nImplications:` (the CoT prompt's answer section; as in the
reference this is applied to every self-edit), split on `---`, then with `split_newlines` either split
self-QA text before each `Question N:` or make every non-empty line a sequence (dropping a header line
before a `1.` list), cap at `max_sequences`, prefix each with the title, and append the raw passage last
when `add_context`.

Deliberate differences from the reference:
- A self-edit that yields no text is `Invalid` (reward 0) instead of silently training on the passage alone.
  The "train on the passage only" baseline is explicit: `passage_only_sequences`.
- Self-QA chunks are stripped of surrounding whitespace, like every other kind of chunk.
- The cap counts self-edit sequences; the appended passage comes on top (so at most `max_sequences + 1`), as
  in the reference."""

from __future__ import annotations

import re

from seal_jax.domains.base import Invalid
from seal_jax.domains.knowledge.data import Passage

MAX_SEQUENCES = 30

_COT_ANSWER = re.compile(r"\nImplications:\s*")
_QA_QUESTION = re.compile(r"Question\s+\d+:")
_QA_ANSWER = re.compile(r"Answer\s*:")
_QA_SPLIT = re.compile(r"\n(?=Question\s+\d+:)")


def _titled(passage: Passage, text: str) -> str:
    return f"{passage.title}\n{text}"


def _chunks(text: str, split_newlines: bool) -> list[str]:
    """The self-edit's pieces of training text, before the cap."""
    if split_newlines and _QA_QUESTION.search(text) and _QA_ANSWER.search(text):
        chunks = [c.strip() for c in _QA_SPLIT.split(text.strip())]
        if not chunks[0].startswith("Question"):
            chunks[0] = "Question 1: " + chunks[0]
        return chunks
    segments = [s.strip() for s in text.split("---") if s.strip()]
    if not split_newlines:
        return segments
    lines = [ln.strip() for s in segments for ln in s.splitlines() if ln.strip()]
    return lines[1:] if len(lines) > 1 and lines[1].startswith("1.") else lines


def build_sequences(
    passage: Passage,
    text: str,
    *,
    split_newlines: bool = True,
    add_context: bool = True,
    max_sequences: int = MAX_SEQUENCES,
) -> tuple[str, ...] | Invalid:
    """Training sequences (`"{title}\\n{text}"`) for self-edit `text` about `passage`, or why there are
    none."""
    cot = _COT_ANSWER.search(text)
    if cot:
        text = text[cot.end() :]
    chunks = [c for c in _chunks(text, split_newlines)[:max_sequences] if c]
    if not chunks:
        return Invalid("empty self-edit")
    context = (_titled(passage, passage.context.strip()),) if add_context else ()
    return tuple(_titled(passage, c) for c in chunks) + context


def passage_only_sequences(passage: Passage) -> tuple[str, ...]:
    """The "train on the passage only" baseline: the titled passage as the single sequence."""
    return (_titled(passage, passage.context.strip()),)
