"""Representative token shapes of one ReST-EM round, per program, from the paper's facts (docs/reference.md#compute).

The compiled shapes (prompt widths, step counts, sequence lengths, `max_new`) set each program's memory; the
`*_decode` fields are the decode steps a call actually runs (the loop stops when every row is done), which set the
time estimate only. Every field can be overridden with `--shape NAME=VALUE`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from seal_jax.domains.arc.domain import max_answer_tokens
from seal_jax.engine.inner import round_up


@dataclasses.dataclass(frozen=True)
class RoundShapes:
    """Token shapes of one round. Training: `adapt_lengths` are a chunk's step-length levels (T = the last),
    `adapt_steps` the shared steps S (a multiple of 8, `InnerConfig.step_bucket`), `adapt_tokens` the mean
    tokens of a real step (time only)."""

    # self-edit sampling: `samples` self-edits in calls of `sample_rows` rows, prompts of `sample_prompt` tokens
    samples: int
    sample_rows: int
    sample_prompt: int
    sample_decode: int
    # inner loop: `adaptations` LoRAs, each `adapt_real_steps` steps of batch `adapt_batch`
    adaptations: int
    adapt_batch: int
    adapt_lengths: tuple[int, ...]
    adapt_steps: int
    adapt_real_steps: int
    adapt_tokens: int
    # each adapted model answers `answer_rows` queries of `answer_prompt` tokens, at most `answer_max_new` each
    answer_rows: int
    answer_prompt: int
    answer_max_new: int
    answer_decode: int
    # M-step: `sft_pairs` kept pairs of `sft_length` tokens (batch and epochs from cfg.sft)
    sft_pairs: int
    sft_length: int

    def replace(self, overrides: dict[str, str]) -> RoundShapes:
        """A copy with `NAME=VALUE` overrides (tuples as comma-separated ints)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        parsed: dict[str, Any] = {}
        for name, value in overrides.items():
            if name not in fields:
                raise KeyError(f"unknown shape {name!r}: expected one of {', '.join(fields)}")
            is_tuple = isinstance(getattr(self, name), tuple)
            parsed[name] = tuple(int(v) for v in value.split(",")) if is_tuple else int(value)
        return dataclasses.replace(self, **parsed)


def knowledge_shapes(cfg: Any) -> RoundShapes:
    """The paper's knowledge round: 50 passages × 5 self-edits sampled (250), each adapted with 3 seeds (750).

    A self-edit is split into ~8 implication sequences, trained with the passage (9 sequences of ≈ 60-160 tokens:
    levels 64/112/160, mean ≈ 110), 10 epochs at batch 1 = 90 steps. Its prompt is the passage plus instructions
    (≈ 300-500 tokens: width 512); it decodes ≈ 8 × 160 = 1280 tokens in the batch's longest row (the loop runs
    until every row is done), in a cache of `max_self_edit_tokens`. ≈ 5 questions per passage (prompt ≤ 64
    tokens) answered in ≤ 64 tokens (`eval_max_new_tokens`), ≈ 32 decoded. M-step: the 50 best pairs of ≈ 700
    tokens (prompt + self-edit: length 704)."""
    r = cfg.restem
    contexts, per_context = int(r.contexts_per_round), int(r.samples_per_context)
    steps = 9 * int(cfg.inner.epochs) // int(cfg.inner.batch_size)
    return RoundShapes(
        samples=contexts * per_context,
        sample_rows=int(r.sample_batch),
        sample_prompt=512,
        sample_decode=min(1280, int(r.max_self_edit_tokens)),
        adaptations=contexts * per_context * int(r.eval_seeds),
        adapt_batch=int(cfg.inner.batch_size),
        adapt_lengths=(64, 112, 160),
        adapt_steps=round_up(steps, 8),
        adapt_real_steps=steps,
        adapt_tokens=110,
        answer_rows=5,
        answer_prompt=64,
        answer_max_new=64,
        answer_decode=32,
        sft_pairs=contexts,
        sft_length=704,
    )


def arc_shapes(cfg: Any) -> RoundShapes:
    """The paper's ARC round: 11 tasks × 15 self-edits sampled and adapted once each (165).

    Test-time training: up to `ttt_cap` augmented sequences of up to a few thousand tokens (levels 1024/2048/3072,
    mean ≈ 1500), at most 375 steps at batch 2 (376 shared). A self-edit (a JSON plan, ≤ `max_self_edit_tokens`)
    is sampled from a task prompt of ≈ 2000 tokens (width 2048), ≈ 100 decoded; the adapted model answers the
    test input (one row, prompt 2048) in ≤ `max_answer_tokens(max_side)` + 8 tokens (the driver's budget), decoding
    a 20 × 20 grid's worth (`max_answer_tokens(20)`). M-step: ≈ 30 kept pairs of ≈ 2000 tokens."""
    r = cfg.restem
    samples = int(r.contexts_per_round) * int(r.samples_per_context)
    steps = 375
    return RoundShapes(
        samples=samples,
        sample_rows=int(r.sample_batch),
        sample_prompt=2048,
        sample_decode=min(100, int(r.max_self_edit_tokens)),
        adaptations=samples * int(r.eval_seeds),
        adapt_batch=int(cfg.inner.batch_size),
        adapt_lengths=(1024, 2048, 3072),
        adapt_steps=round_up(steps, 8),
        adapt_real_steps=steps,
        adapt_tokens=1500,
        answer_rows=1,
        answer_prompt=2048,
        answer_max_new=max_answer_tokens(int(cfg.data.max_side)) + 8,
        answer_decode=max_answer_tokens(20),
        sft_pairs=30,
        sft_length=2048,
    )


def default_shapes(cfg: Any) -> RoundShapes:
    return knowledge_shapes(cfg) if cfg.experiment.startswith("knowledge") else arc_shapes(cfg)


def sft_steps(pairs: int, batch: int, epochs: int) -> int:
    """Real optimizer steps of the M-step (`inner.steps_for`)."""
    return epochs * math.ceil(pairs / batch)
