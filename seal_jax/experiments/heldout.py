"""Held-out evaluation of one method (a baseline or a policy's self-edits), shared by the domain drivers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seal_jax.domains.base import Domain, Invalid, SelfEdit
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.experiments.grid import Setting, method_key, with_settings
from seal_jax.restem import Item, evaluate_items, sample_self_edits, stable_seed


def context_means(records: dict[str, dict[str, Any]], prefix: str) -> dict[str, float]:
    """{context id: mean reward of its records under `prefix`} (over its self-edits and seeds)."""
    groups: dict[str, list[float]] = {}
    for key, rec in records.items():
        if key.startswith(prefix):
            groups.setdefault(rec["context"], []).append(rec["reward"])
    return {c: float(np.mean(v)) for c, v in groups.items()}


def macro(per_context: dict[str, float]) -> float:
    """The knowledge metric: the mean over contexts of each context's accuracy (`context_means`; NaN for none)."""
    return float(np.mean(list(per_context.values()))) if per_context else float("nan")


def accuracy(records: dict[str, dict[str, Any]], prefix: str) -> float:
    """The ARC metric: the mean reward of all records under `prefix` (% of (task, self-edit) pairs solved)."""
    values = [rec["reward"] for key, rec in records.items() if key.startswith(prefix)]
    return float(np.mean(values)) if values else float("nan")


def evaluate_fixed(
    method: str,
    evaluator: Evaluator,
    domain: Domain,
    contexts: list[Any],
    self_edit: Callable[[Any], SelfEdit | Invalid | None],
    seeds: int,
    journal: Journal,
    seed: int,
    settings: Sequence[Setting] = (),
    text: Callable[[Any], str | None] = lambda c: None,
) -> dict[str, dict[str, Any]]:
    """A method whose self-edit is fixed per context (None = no update, e.g. ICL or the base model), trained
    with the run's inner settings and each of `settings` (keys under `grid.method_key`); `text` gives the
    self-edit's text for the journal (e.g. a file's completion)."""
    items = [
        Item(
            f"{method_key(method, g)}/{c.id}/0/{s}",
            c,
            text(c),
            g.apply(self_edit(c)) if g else self_edit(c),
            stable_seed(seed, method, c.id, s),
            s,
        )
        for g in with_settings(settings)
        for c in contexts
        for s in range(seeds)
    ]
    return evaluate_items(evaluator, domain, items, journal, f"held-out: {method}")


def evaluate_sampled(
    method: str,
    evaluator: Evaluator,
    domain: Domain,
    contexts: list[Any],
    policy: Runtime,
    samples: int,
    seeds: int,
    sampling: SamplingConfig,
    batch: int,
    journal: Journal,
    seed: int,
    settings: Sequence[Setting] = (),
    attempts: int = 1,
) -> dict[str, dict[str, Any]]:
    """`samples` self-edits per context written by `policy` (each sampled up to `attempts` times until it
    parses), each applied with `seeds` inner-loop seeds, with the run's inner settings and each of `settings`
    (the same self-edits and seeds; keys under `grid.method_key`)."""
    texts = sample_self_edits(
        policy, domain, contexts, samples, sampling, journal, method, seed, batch, attempts
    )
    parsed = {(c.id, i): domain.parse_self_edit(c, texts[c.id, i]) for c in contexts for i in range(samples)}
    items = [
        Item(
            f"{method_key(method, g)}/{c.id}/{i}/{s}",
            c,
            texts[c.id, i],
            g.apply(parsed[c.id, i]) if g else parsed[c.id, i],
            stable_seed(seed, method, c.id, i, s),
            s,
        )
        for g in with_settings(settings)
        for c in contexts
        for i in range(samples)
        for s in range(seeds)
    ]
    return evaluate_items(evaluator, domain, items, journal, f"held-out: {method}")
