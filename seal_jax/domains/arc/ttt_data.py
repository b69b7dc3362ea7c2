"""Test-time-training data for one ARC task (docs/reference.md#arc-augmentations-and-training-data; the
reference's `process_task` with leave_n=[1, 2], permute_n=1, Nmax=250).

1. leave-n-out tasks: each demo in turn becomes the test, the other demos (minus n-1 more) stay as demos;
2. every chosen augmenter applied to each of them, tasks with a grid over 30x30 dropped, union with the
   originals, dedupe by content hash;
3. one pass of color permutation (only if any augmenter is on) + demo-order permutation, union, dedupe;
4. a seeded shuffle, then the first `cap` (250) whose text fits.

Text: the prompt is the chat template's rendering of (system: instruction + demos, user: test input + ` -> `)
with the generation prompt; the completion is the test output + `#` + the end-of-turn text, so prompt +
completion is the rendering of the whole conversation and output-only loss is loss on the completion.
The reference instead rendered (system, user, assistant) *with* a generation prompt, so its training text
ended in an extra empty assistant header, and its tokenizer put a second BOS before the template's one.
Neither is reproduced: the engine must tokenize this text without adding special tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from seal_jax.domains.arc.augment import (
    Augmenter,
    augment_task,
    color_permutation,
    permute_colors,
    permute_examples,
)
from seal_jax.domains.arc.grids import (
    MAX_SIDE,
    ArcTask,
    FormatChat,
    answer_text,
    max_side,
    task_key,
    task_messages,
)
from seal_jax.domains.base import TrainExample

LEAVE_N = (1, 2)
PERMUTE_N = 1
MAX_EXAMPLES = 250


def leave_out_tasks(task: ArcTask, n: int) -> list[ArcTask]:
    """For each demo i: test = demo i, demos = the others minus each (n-1)-subset of them (order kept).

    N demos give N tasks of N-1 demos for n=1 and N*(N-1) tasks of N-2 demos for n=2.
    """
    tasks = []
    for i, held_out in enumerate(task.train):
        others = [j for j in range(len(task.train)) if j != i]
        for removed in itertools.combinations(others, n - 1):
            demos = tuple(task.train[j] for j in others if j not in removed)
            tasks.append(ArcTask(task.id, demos, (held_out,)))
    return tasks


def dedupe(tasks: Iterable[ArcTask]) -> list[ArcTask]:
    """Tasks with distinct contents (`task_key`), first occurrence kept, order preserved."""
    unique: dict[bytes, ArcTask] = {}
    for t in tasks:
        unique.setdefault(task_key(t), t)
    return list(unique.values())


def ttt_tasks(
    task: ArcTask,
    augmenters: Sequence[Augmenter],
    rng: np.random.Generator,
    leave_n: Sequence[int] = LEAVE_N,
    permute_n: int = PERMUTE_N,
) -> list[ArcTask]:
    """Steps 1-3 above: the distinct single-test tasks built from `task`'s demos."""
    out: list[ArcTask] = []
    for n in leave_n:
        base = leave_out_tasks(task, n)
        augmented = (augment_task(t, aug, rng) for aug in augmenters for t in base)
        pool = dedupe([*(t for t in augmented if max_side(t) <= MAX_SIDE), *base])
        permuted = []
        for _ in range(permute_n):
            for t in pool:
                recolored = permute_colors(t, color_permutation(t, rng)) if augmenters else t
                permuted.append(permute_examples(recolored, rng))
        out.extend(dedupe([*permuted, *pool]))
    return dedupe(out)


def train_example(task: ArcTask, format_chat: FormatChat, eos_text: str) -> TrainExample:
    """The training text of a single-test task (see the module docstring)."""
    return TrainExample(format_chat(task_messages(task)), answer_text(task.test[0].output) + eos_text)


def build_ttt_examples(
    task: ArcTask,
    augmenters: Sequence[Augmenter],
    format_chat: FormatChat,
    eos_text: str,
    *,
    seed: int = 0,
    cap: int = MAX_EXAMPLES,
    fits: Callable[[str], bool] | None = None,
) -> list[TrainExample]:
    """At most `cap` training examples for `task`, deterministic given `seed`.

    `fits(text)` (optional, e.g. a token-count check; the reference kept texts under 8192 tokens) filters on
    the full prompt + completion text.
    """
    rng = np.random.default_rng(seed)
    candidates = ttt_tasks(task, augmenters, rng)
    examples = []
    for i in rng.permutation(len(candidates)):
        example = train_example(candidates[i], format_chat, eos_text)
        if fits is None or fits(example.prompt + example.completion):
            examples.append(example)
            if len(examples) == cap:
                break
    return examples
