"""The few-shot ARC domain (docs/reference.md#arc-self-edit-format): a context is an ARC task; a self-edit
is a JSON training plan; the reward is pass@2 of the adapted model on the task's test inputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from seal_jax.domains.arc import views
from seal_jax.domains.arc.augment import AugmentGroups
from seal_jax.domains.arc.grids import MAX_SIDE, ArcTask, FormatChat, answer_text, task_key
from seal_jax.domains.arc.self_edit import (
    INSTRUCTION,
    ORACLE_PLAN,
    PLAN_GRAMMAR,
    SYSTEM_MESSAGE,
    SelfEditPlan,
    check_step_cap,
    parse_self_edit_json,
    self_edit_messages,
)
from seal_jax.domains.arc.ttt_data import MAX_EXAMPLES, build_ttt_examples
from seal_jax.domains.arc.voting import judge, pass_at_2
from seal_jax.domains.base import InnerHparams, Invalid, Query, Score, SelfEdit, TrainExample
from seal_jax.domains.prompt_file import PromptSet

__all__ = ["ORACLE_PLAN", "ArcDomain", "max_answer_tokens"]

DEFAULT_WORDING = PromptSet()
MAX_TOKENS = 8192  # the reference drops TTT texts and eval prompts of this many tokens or more


def max_answer_tokens(side: int = MAX_SIDE) -> int:
    """Upper bound on an answer's tokens: one per character of a side x side grid's text and `#`, plus EOS."""
    return len(answer_text(np.zeros((side, side), dtype=np.int8))) + 1


class ArcDomain:
    """ARC as a SEAL domain (see `seal_jax.domains.base.Domain`).

    Args:
      tasks: the tasks of each split, e.g. {"train": reference_subset("train"), "eval": ...}; every test input
        needs its gold output for scoring.
      format_chat: renders chat messages with the adapted model's template and the generation prompt.
      writer_chat: the same for the self-edit prompt when another model writes the self-edits (teacher-student);
        default `format_chat`.
      wording: the self-edit prompt's system message and instruction, where given (`prompt_file`).
      eos_text: the text that ends an assistant turn (e.g. "<|eot_id|>"); appended to TTT completions.
      seed: seeds the context order, the TTT data and the evaluation views (the reference used 0 throughout).
      eval_max_new_tokens: the answer budget; default `max_answer_tokens()` (a 30x30 grid).
      count_tokens: optional tokenizer length; with it, TTT texts and eval prompts of `max_tokens` or more are
        dropped as in the reference.
      ttt_cap: at most this many TTT examples per self-edit (the reference's 250).
      lenient_json: accept quoted booleans/numbers in self-edit plans (`parse_self_edit_json`); default strict.
      per_test_input: reward = the share of test inputs solved (the reference scored each test input of a task
        as its own sub-task); default: 1.0 iff every test input is solved (pass@2 of the whole task).
      constrained: self-edits are sampled from `PLAN_GRAMMAR` only (every reply a valid plan, up to the step
        cap); default: free text, parsed afterwards (the reference's).
    """

    name = "arc"

    def __init__(
        self,
        tasks: Mapping[str, Sequence[ArcTask]],
        format_chat: FormatChat,
        eos_text: str,
        *,
        seed: int = 0,
        eval_max_new_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        max_tokens: int = MAX_TOKENS,
        ttt_cap: int = MAX_EXAMPLES,
        lenient_json: bool = False,
        per_test_input: bool = False,
        writer_chat: FormatChat | None = None,
        wording: PromptSet = DEFAULT_WORDING,
        constrained: bool = False,
    ) -> None:
        self.tasks = {split: tuple(ts) for split, ts in tasks.items()}
        self.format_chat = format_chat
        self.writer_chat = writer_chat or format_chat
        self.system_message = wording.arc_system if wording.arc_system is not None else SYSTEM_MESSAGE
        self.instruction = wording.arc_instruction if wording.arc_instruction is not None else INSTRUCTION
        self.eos_text = eos_text
        self.seed = seed
        self.eval_max_new_tokens = eval_max_new_tokens or max_answer_tokens()
        self.ttt_cap = ttt_cap
        self.lenient_json = lenient_json
        self.per_test_input = per_test_input
        self.self_edit_grammar = PLAN_GRAMMAR if constrained else None
        self._fits = None if count_tokens is None else (lambda text: count_tokens(text) < max_tokens)
        self._ttt_cache: dict[tuple[bytes, AugmentGroups], tuple[TrainExample, ...]] = {}
        self._query_cache: dict[bytes, tuple[Query, ...]] = {}

    def contexts(self, split: str) -> list[ArcTask]:
        """The tasks of `split` in a seeded random order."""
        if split not in self.tasks:
            raise ValueError(f"unknown split {split!r}; this domain has {sorted(self.tasks)}")
        tasks = self.tasks[split]
        return [tasks[i] for i in np.random.default_rng(self.seed).permutation(len(tasks))]

    def self_edit_prompt(self, ctx: ArcTask) -> str:
        """The policy's prompt: demos (no test input) and the JSON-plan instruction, chat template applied."""
        return self.writer_chat(self_edit_messages(ctx, self.system_message, self.instruction))

    def parse_self_edit(self, ctx: ArcTask, text: str) -> SelfEdit | Invalid:
        """A JSON plan -> its TTT examples and inner-loop hparams, or why it cannot be used."""
        plan = parse_self_edit_json(text, self.lenient_json)
        return plan if isinstance(plan, Invalid) else self.apply_plan(ctx, plan)

    def apply_plan(self, ctx: ArcTask, plan: SelfEditPlan) -> SelfEdit | Invalid:
        """The self-edit of a validated plan (also how the Oracle-TTT baseline runs `ORACLE_PLAN`)."""
        examples = self.ttt_examples(ctx, plan.groups)
        if not examples:
            return Invalid(f"no TTT examples for task {ctx.id}")
        if (over_cap := check_step_cap(plan, len(examples))) is not None:
            return over_cap
        return SelfEdit(examples, InnerHparams(plan.learning_rate, plan.epochs, plan.loss_on_all_tokens))

    def ttt_examples(self, ctx: ArcTask, groups: AugmentGroups) -> tuple[TrainExample, ...]:
        """The TTT data of `ctx` under `groups` (deterministic given the seed, so computed once)."""
        key = (task_key(ctx), groups)
        if key not in self._ttt_cache:
            self._ttt_cache[key] = tuple(
                build_ttt_examples(
                    ctx,
                    groups.augmenters(),
                    self.format_chat,
                    self.eos_text,
                    seed=self.seed,
                    cap=self.ttt_cap,
                    fits=self._fits,
                )
            )
        return self._ttt_cache[key]

    def eval_queries(self, ctx: ArcTask) -> list[Query]:
        """Leave-1-out / permuted / geometric views of every test input (see `views`)."""
        key = task_key(ctx)
        if key not in self._query_cache:
            self._query_cache[key] = tuple(views.eval_queries(ctx, self.format_chat, self.seed, self._fits))
        return list(self._query_cache[key])

    def score(self, ctx: ArcTask, queries: Sequence[Query], outputs: Sequence[str]) -> Score:
        """Reward 1.0 iff every test input's gold output is among its 2 voted attempts (pass@2), else 0.0; with
        `per_test_input`, the share of test inputs whose gold output is among their 2 attempts."""
        gold = [ex.output for ex in ctx.test]
        if any(g is None for g in gold):
            raise ValueError(f"task {ctx.id} has test inputs without a gold output; it cannot be scored")
        verdicts = judge(queries, outputs, gold)
        solved = pass_at_2(verdicts)
        details = {
            "solved": solved,
            "sub_tasks": {
                f"{ctx.id}-{i}": {
                    "correct": v.correct,
                    "attempts": [[list(row) for row in attempt] for attempt in v.attempts],
                    "votes": list(v.votes),
                    "n_queries": v.n_queries,
                    "n_parsed": v.n_parsed,
                }
                for i, v in enumerate(verdicts)
            },
        }
        if self.per_test_input:
            return Score(sum(v.correct for v in verdicts) / len(verdicts), details)
        return Score(1.0 if solved else 0.0, details)
