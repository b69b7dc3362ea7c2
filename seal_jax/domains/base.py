"""The contract between a SEAL domain (SQuAD knowledge, ARC) and the domain-agnostic engine and outer loop.

A domain is plain Python over strings: it never touches JAX. The engine tokenizes what a domain returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

# A reply language: segments of alternative strings; its strings are every concatenation of one alternative per
# segment (a literal is a one-string segment). `engine/constrained.py` compiles it for a vocabulary.
Grammar = tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class TrainExample:
    """One inner-loop training sequence: `prompt + completion`.

    With `InnerHparams.loss_on_all_tokens` False only the completion's tokens carry loss; the split is by text,
    so it does not depend on any tokenizer's special token ids.
    """

    prompt: str
    completion: str


@dataclasses.dataclass(frozen=True)
class InnerHparams:
    """Per-self-edit inner-loop (LoRA SFT) settings; defaults: the reference's knowledge domain (lr 1e-3, 10
    epochs, loss on every token). `warmup_steps` None: the evaluator's (`inner.warmup_steps`)."""

    learning_rate: float = 1e-3
    epochs: int = 10
    loss_on_all_tokens: bool = True
    warmup_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class SelfEdit:
    """A parsed, usable self-edit: its training data and inner-loop settings."""

    examples: tuple[TrainExample, ...]
    hparams: InnerHparams


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A self-edit that cannot be applied; it scores 0 and is journaled with `reason`."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Query:
    """One evaluation prompt (fully formatted text) and whatever the domain needs to score its answer."""

    prompt: str
    meta: Any = None


@dataclasses.dataclass(frozen=True)
class Score:
    """A reward in [0, 1] and JSON-serializable details (per-question verdicts, votes, ...) for the journal."""

    reward: float
    details: dict[str, Any]


class Context(Protocol):
    """Anything with a stable string id: a SQuAD passage, an ARC task."""

    @property
    def id(self) -> str: ...


class Domain(Protocol):
    """What the outer loop needs from a domain."""

    name: str
    eval_max_new_tokens: int
    self_edit_grammar: Grammar | None  # set: self-edits are sampled only from this language (constrained)

    def contexts(self, split: str) -> list[Any]:
        """The contexts of `split` ("train" or "eval"), in a deterministic (seeded) order."""
        ...

    def self_edit_prompt(self, ctx: Any) -> str:
        """The policy's prompt for writing a self-edit of `ctx` (formatted text, chat template applied)."""
        ...

    def parse_self_edit(self, ctx: Any, text: str) -> SelfEdit | Invalid:
        """Turns generated self-edit text into training data + hparams, or says why it cannot be used."""
        ...

    def eval_queries(self, ctx: Any) -> list[Query]:
        """Prompts whose answers by the adapted model decide the reward."""
        ...

    def score(self, ctx: Any, queries: Sequence[Query], outputs: Sequence[str]) -> Score:
        """Grades the adapted model's answers `outputs[i]` to `queries[i]`."""
        ...
