"""Shared helpers for the ARC tests: a fake chat template and small generic tasks."""

from __future__ import annotations

import numpy as np
import pytest

from seal_jax.domains.arc.grids import ArcTask, Example

EOS = "<|eot|>"


def fake_chat(messages: list[dict[str, str]]) -> str:
    """A stand-in chat template (with the generation prompt)."""
    return "".join(f"<|{m['role']}|>\n{m['content']}{EOS}" for m in messages) + "<|assistant|>\n"


def generic_task(n_demos: int, seed: int = 0, side: int = 4, n_tests: int = 1, colors: int = 4) -> ArcTask:
    """A task of random, non-square, distinct grids with colors 0..colors-1 (so some colors stay free)."""
    rng = np.random.default_rng(seed)

    def grid(h: int, w: int) -> np.ndarray:
        return rng.integers(0, colors, size=(h, w))

    examples = [Example(grid(side, side + 1), grid(side + 1, side - 1)) for _ in range(n_demos + n_tests)]
    return ArcTask(f"generic{seed}", tuple(examples[:n_demos]), tuple(examples[n_demos:]))


@pytest.fixture
def chat():
    return fake_chat
