"""The knowledge-incorporation domain (SQuAD): a self-edit is text about a passage; the model is fine-tuned
on it and then answers the passage's questions without seeing the passage; the reward is the share
answered correctly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from seal_jax.domains.base import InnerHparams, Invalid, Query, Score, SelfEdit, TrainExample
from seal_jax.domains.knowledge import prompts
from seal_jax.domains.knowledge.data import Passage
from seal_jax.domains.knowledge.grading import Grader, OfflineGrader
from seal_jax.domains.knowledge.sequences import MAX_SEQUENCES, build_sequences, passage_only_sequences
from seal_jax.domains.prompt_file import PromptSet

ChatFormatter = Callable[[list[dict[str, str]]], str]
REFERENCE_INNER = InnerHparams(learning_rate=1e-3, epochs=10, loss_on_all_tokens=True)
_OFFLINE = OfflineGrader()


@dataclasses.dataclass(frozen=True)
class KnowledgeDomain:
    """SEAL's knowledge domain over already selected train/eval passages.

    `format_chat` turns chat messages into model text (e.g. the tokenizer's chat template with a generation
    prompt); None means a base model, prompted with the plain-text templates. `writer_chat` formats the
    self-edit prompts when another model writes them (teacher-student; default `format_chat`). `wording`
    replaces the self-edit and answer templates it gives (`prompt_file`; the self-edit one overrides `prompt`).
    `hparams` defaults to the reference's inner loop (lr 1e-3, 10 epochs, loss on every token of each sequence)."""

    train_passages: tuple[Passage, ...]
    eval_passages: tuple[Passage, ...]
    prompt: str = "implications"
    format_chat: ChatFormatter | None = None
    hparams: InnerHparams = REFERENCE_INNER
    split_newlines: bool = True
    add_context: bool = True
    max_sequences: int = MAX_SEQUENCES
    grader: Grader = _OFFLINE
    writer_chat: ChatFormatter | None = None
    wording: PromptSet = PromptSet()
    name: str = "knowledge"
    eval_max_new_tokens: int = 64
    self_edit_grammar: None = None  # free text

    def __post_init__(self) -> None:
        prompts.template(self.prompt)  # an unknown prompt name fails here, not mid-run

    def contexts(self, split: str) -> list[Passage]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        return list(self.train_passages if split == "train" else self.eval_passages)

    def self_edit_prompt(self, ctx: Passage) -> str:
        w, fields = self.wording, {"title": ctx.title, "context": ctx.context}
        if self.format_chat is None:
            if w.knowledge_self_edit is not None:
                return w.knowledge_self_edit.format(**fields)
            return prompts.self_edit_prompt_text(self.prompt, ctx.title, ctx.context)
        if w.knowledge_self_edit_chat is not None:
            messages = [{"role": "user", "content": w.knowledge_self_edit_chat.format(**fields)}]
        else:
            messages = prompts.self_edit_prompt_messages(self.prompt, ctx.title, ctx.context)
        return (self.writer_chat or self.format_chat)(messages)

    def _qa_prompt(self, question: str) -> str:
        w = self.wording
        if self.format_chat is None:
            if w.knowledge_qa is not None:
                return w.knowledge_qa.format(question=question)
            return prompts.qa_prompt_text(question)
        if w.knowledge_qa_chat is not None:
            return self.format_chat(
                [{"role": "user", "content": w.knowledge_qa_chat.format(question=question)}]
            )
        return self.format_chat(prompts.qa_prompt_messages(question))

    def _self_edit(self, sequences: Sequence[str]) -> SelfEdit:
        return SelfEdit(tuple(TrainExample(prompt="", completion=s) for s in sequences), self.hparams)

    def parse_self_edit(self, ctx: Passage, text: str) -> SelfEdit | Invalid:
        sequences = build_sequences(
            ctx,
            text,
            split_newlines=self.split_newlines,
            add_context=self.add_context,
            max_sequences=self.max_sequences,
        )
        return sequences if isinstance(sequences, Invalid) else self._self_edit(sequences)

    def passage_only_self_edit(self, ctx: Passage) -> SelfEdit:
        """The "train on the passage only" baseline, with the same inner-loop settings."""
        return self._self_edit(passage_only_sequences(ctx))

    def eval_queries(self, ctx: Passage) -> list[Query]:
        """One closed-book question per QA of the passage; `meta` is the question's index."""
        questions = [prompts.qa_question(ctx.title, qa.question) for qa in ctx.questions]
        return [Query(self._qa_prompt(q), meta=i) for i, q in enumerate(questions)]

    def score(self, ctx: Passage, queries: Sequence[Query], outputs: Sequence[str]) -> Score:
        """Accuracy over the queried questions, with every answer and verdict for the journal."""
        if len(queries) != len(outputs) or not queries:
            raise ValueError(
                f"need one output per query and at least one query, got {len(queries)}/{len(outputs)}"
            )
        answers = [output.strip() for output in outputs]
        qas = [ctx.questions[q.meta] for q in queries]
        verdicts = [
            self.grader.grade(prompts.qa_question(ctx.title, qa.question), qa.answer, answer)
            for qa, answer in zip(qas, answers, strict=True)
        ]
        return Score(
            reward=sum(v.correct for v in verdicts) / len(verdicts),
            details={"answers": answers, "verdicts": [dataclasses.asdict(v) for v in verdicts]},
        )
