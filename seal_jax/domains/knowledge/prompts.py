"""Self-edit prompts and the closed-book QA prompt, in plain text (base models) and chat messages (instruct
models).

Plain self-edit prompt layout (the reference's structure, our wording): instruction, blank line, `Passage:`
with the title and context on their own lines, blank line, answer cue. The chat form carries the same
instruction and passage in one user message (no system turn, so it works with every chat template) plus a
line describing the expected output layout in place of the cue; the caller applies the tokenizer's chat
template."""

from __future__ import annotations

import dataclasses

Messages = list[dict[str, str]]


@dataclasses.dataclass(frozen=True)
class SelfEditTemplate:
    """`instruction` ("" for none), the plain-text `cue` the base model continues, and the chat `layout`
    hint."""

    instruction: str
    cue: str
    layout: str


_LIST_LAYOUT = "Write one statement per line."
_IMPLICATIONS = (
    "Read the passage below and write {size} of implications: facts that follow from it, directly or "
    "indirectly."
)

SELF_EDIT_TEMPLATES: dict[str, SelfEditTemplate] = {
    "implications": SelfEditTemplate(_IMPLICATIONS.format(size="a list"), "Implications:\n", _LIST_LAYOUT),
    "implications-long": SelfEditTemplate(
        _IMPLICATIONS.format(size="a long list"), "Implications:\n", _LIST_LAYOUT
    ),
    "implications-very-long": SelfEditTemplate(
        _IMPLICATIONS.format(size="a very long list"), "Implications:\n", _LIST_LAYOUT
    ),
    "rewrite": SelfEditTemplate(
        "Read the passage below and restate it in several different ways, each version on its own line.",
        "Rewritten passages:\n",
        "Write each rewritten version on its own line.",
    ),
    "self-qa": SelfEditTemplate(
        "Read the passage below and turn its content into a series of questions, each followed by its "
        "answer.",
        "Question 1: ",
        "Number the pairs as 'Question 1: ...' on one line and 'Answer: ...' on the next.",
    ),
    "none": SelfEditTemplate("", "", ""),
    "implications-cot": SelfEditTemplate(
        "Read the passage below. First reason step by step about what it says and what follows from it; "
        "then write a line 'Implications:' and list the implications under it, one per line.",
        "Thought process:\n",
        "Start with your reasoning under a line 'Thought process:'.",
    ),
}

_QA_INSTRUCTION = "Answer the question directly and concisely."


def template(name: str) -> SelfEditTemplate:
    """The named self-edit template; ValueError listing the choices for an unknown name."""
    if name not in SELF_EDIT_TEMPLATES:
        raise ValueError(f"unknown self-edit prompt {name!r}; choose one of {sorted(SELF_EDIT_TEMPLATES)}")
    return SELF_EDIT_TEMPLATES[name]


def _passage_block(title: str, context: str) -> str:
    return f"Passage:\n{title}\n{context}"


def _join_blocks(*blocks: str) -> str:
    return "\n\n".join(b for b in blocks if b)


def self_edit_prompt_text(name: str, title: str, context: str) -> str:
    """Plain-text prompt for a base model; its continuation is the self-edit."""
    t = template(name)
    return _join_blocks(t.instruction, _passage_block(title, context)) + "\n\n" + t.cue


def self_edit_prompt_messages(name: str, title: str, context: str) -> Messages:
    """Chat form of the same prompt: a single user message."""
    t = template(name)
    return [
        {"role": "user", "content": _join_blocks(t.instruction, _passage_block(title, context), t.layout)}
    ]


def qa_question(title: str, question: str) -> str:
    """The question as the reference asks it: a topic line, since the passage itself is never shown."""
    return f"Topic: {title}\n{question}"


def qa_prompt_text(question: str) -> str:
    """Closed-book answer prompt for a base model: instruction, `Question: ...`, an `Answer:` cue line."""
    return f"{_QA_INSTRUCTION}\nQuestion: {question}\nAnswer:\n"


def qa_prompt_messages(question: str) -> Messages:
    """Chat form of the answer prompt."""
    return [{"role": "user", "content": f"{_QA_INSTRUCTION}\nQuestion: {question}"}]
