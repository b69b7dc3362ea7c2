from __future__ import annotations

import numpy as np
import pytest

from seal_jax.domains.arc.augment import GROUPS, AugmentGroups
from seal_jax.domains.arc.grids import ArcTask, Example, answer_text, max_side, task_key, task_messages
from seal_jax.domains.arc.ttt_data import build_ttt_examples, leave_out_tasks, ttt_tasks

from .conftest import EOS, fake_chat, generic_task


def _count(task: ArcTask, groups: AugmentGroups, seed: int = 0) -> int:
    return len(ttt_tasks(task, groups.augmenters(), np.random.default_rng(seed)))


def test_leave_out_tasks_hand_counts():
    task = generic_task(4)
    one, two = leave_out_tasks(task, 1), leave_out_tasks(task, 2)
    assert [len(t.train) for t in one] == [3] * 4
    assert [len(t.train) for t in two] == [2] * 12  # N * (N - 1)
    assert one[2].test[0] is task.train[2] and one[2].train == (task.train[0], task.train[1], task.train[3])
    # test = demo 0; the other demos minus demo 1, then minus demo 2, then minus demo 3
    assert [t.train for t in two[:3]] == [
        (task.train[2], task.train[3]),
        (task.train[1], task.train[3]),
        (task.train[1], task.train[2]),
    ]
    assert leave_out_tasks(generic_task(1), 2) == []


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        # N=2 demos: leave-1 and leave-2 each give 2 base tasks (1 and 0 demos); reordering them is a no-op.
        (AugmentGroups(), 2 + 2),
        # per leave-n: (2 base + 2 x 3 augmented) = 8, doubled by the color pass (always new: colors are free)
        (AugmentGroups(size=True), 2 * 2 * (2 + 2 * 3)),
        (AugmentGroups(chain=True), 2 * 2 * (2 + 2 * 6)),
        (AugmentGroups(size=True, chain=True), 2 * 2 * (2 + 2 * 9)),
        # 11 basic augmenters; RandomTranslateXY moves these grids for this seed, so nothing collides
        (AugmentGroups(basic=True), 2 * 2 * (2 + 2 * 11)),
    ],
)
def test_ttt_task_counts_two_demos(groups, expected):
    assert _count(generic_task(2), groups) == expected


def test_three_demos_without_augmentation():
    # leave-2: 6 tasks of one demo (reordering is a no-op); leave-1: 3 tasks of two demos, each kept and,
    # when the random order swapped them, also its swapped copy.
    task = generic_task(3)
    tasks = ttt_tasks(task, (), np.random.default_rng(0))
    assert sum(len(t.train) == 1 for t in tasks) == 6
    assert 3 <= sum(len(t.train) == 2 for t in tasks) <= 6
    assert len({task_key(t) for t in tasks}) == len(tasks)


def test_oversized_augmentations_are_dropped():
    # 16x16 grids tiled twice exceed 30x30: only the base tasks and their recolored copies remain
    rng = np.random.default_rng(0)
    big = ArcTask(
        "big", tuple(Example(rng.integers(0, 3, (16, 16)), rng.integers(0, 3, (16, 16))) for _ in "ab"), ()
    )
    assert _count(big, AugmentGroups(repeat=True)) == 2 * 2 * 2
    tasks = ttt_tasks(big, GROUPS["repeat"] + GROUPS["size"], np.random.default_rng(0))
    assert max(max_side(t) for t in tasks) <= 30


def test_examples_text_and_cap():
    task = generic_task(4)
    groups = AugmentGroups(True, True, True, True)
    assert _count(task, groups) > 250
    examples = build_ttt_examples(task, groups.augmenters(), fake_chat, EOS, seed=0)
    assert len(examples) == 250
    again = build_ttt_examples(task, groups.augmenters(), fake_chat, EOS, seed=0)
    other = build_ttt_examples(task, groups.augmenters(), fake_chat, EOS, seed=1)
    assert examples == again and examples != other
    assert len(set(examples)) == 250
    for ex in examples[:20]:
        assert ex.prompt.endswith("] -> <|eot|><|assistant|>\n") and ex.completion.endswith("]]#" + EOS)


def test_example_is_prompt_plus_answer():
    task = generic_task(2)
    (example,) = [
        ex
        for ex in build_ttt_examples(task, (), fake_chat, EOS)
        if ex.prompt == fake_chat(task_messages(ArcTask("x", (task.train[1],), (task.train[0],))))
    ]
    assert example.completion == answer_text(task.train[0].output) + EOS


def test_fits_filter_and_small_cap():
    task = generic_task(3)
    groups = AugmentGroups(size=True)
    everything = build_ttt_examples(task, groups.augmenters(), fake_chat, EOS)
    limit = sorted(len(e.prompt + e.completion) for e in everything)[len(everything) // 2]
    short = build_ttt_examples(task, groups.augmenters(), fake_chat, EOS, fits=lambda text: len(text) < limit)
    assert 0 < len(short) < len(everything) and all(len(e.prompt + e.completion) < limit for e in short)
    assert len(build_ttt_examples(task, groups.augmenters(), fake_chat, EOS, cap=7)) == 7
