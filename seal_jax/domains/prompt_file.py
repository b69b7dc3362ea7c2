"""User wording for every prompt template (`--config.domain.prompt_file=<json>`), e.g. the reference's own.

The file is one JSON object; each key it gives replaces one of seal_jax's templates, the others keep seal_jax's
wording. Knowledge and judge templates are Python format strings over the placeholders below, each of which
must appear (write `{{`/`}}` for literal braces); the ARC texts are used verbatim (the ARC instruction shows a
JSON skeleton, full of braces).
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path

# key -> the placeholders its template must use (None: literal text).
PLACEHOLDERS: dict[str, tuple[str, ...] | None] = {
    "knowledge_self_edit": ("title", "context"),  # plain-text self-edit prompt (base models), cue included
    "knowledge_self_edit_chat": ("title", "context"),  # the chat form's user message
    "knowledge_qa": ("question",),  # plain-text closed-book answer prompt; {question} has the topic line
    "knowledge_qa_chat": ("question",),
    "judge": ("question", "gold", "prediction"),  # the LLM judge's user message
    "arc_system": None,  # the ARC self-edit prompt's system message
    "arc_instruction": None,  # what follows the demos and the `------` line
}


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """The replaced templates (None: seal_jax's own wording); see `PLACEHOLDERS`."""

    knowledge_self_edit: str | None = None
    knowledge_self_edit_chat: str | None = None
    knowledge_qa: str | None = None
    knowledge_qa_chat: str | None = None
    judge: str | None = None
    arc_system: str | None = None
    arc_instruction: str | None = None


def _check_template(key: str, text: str) -> None:
    wanted = PLACEHOLDERS[key]
    if wanted is None:
        return
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as err:
        raise ValueError(
            f"'{key}' is not a format string ({err}); write {{{{ and }}}} for literal braces"
        ) from None
    if unknown := sorted(fields - set(wanted)):
        raise ValueError(f"'{key}' uses unknown placeholder(s) {unknown}; it may use {list(wanted)}")
    if missing := [w for w in wanted if w not in fields]:
        raise ValueError(f"'{key}' must contain the placeholder(s) {['{' + m + '}' for m in missing]}")


def load_prompt_file(path: str) -> PromptSet:
    """The `PromptSet` of a prompt file; ValueError (one line) for a missing, malformed or unknown entry."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"prompt file {path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"prompt file {path}: not valid JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"prompt file {path}: expected a JSON object of templates, got {type(raw).__name__}")
    if unknown := sorted(raw.keys() - PLACEHOLDERS.keys()):
        raise ValueError(f"prompt file {path}: unknown key(s) {unknown}; known: {sorted(PLACEHOLDERS)}")
    for key, text in raw.items():
        if not isinstance(text, str):
            raise ValueError(f"prompt file {path}: '{key}' must be a string, got {type(text).__name__}")
        try:
            _check_template(key, text)
        except ValueError as err:
            raise ValueError(f"prompt file {path}: {err}") from None
    return PromptSet(**raw)
