"""Result tables with uncertainty: each row's macro accuracy over passages with a percentile-bootstrap 95%
interval, and every pair of rows' paired difference over the passages both scored (the Table 2 command and the
knowledge experiment's held-out table)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from seal_jax import stats
from seal_jax.domains.knowledge.data import Passage
from seal_jax.errors import UserInputError
from seal_jax.restem import stable_seed


def bootstrap_samples(cfg: Any) -> int:
    """cfg.table.bootstrap_samples (resamples per interval), checked before any work."""
    samples = int(cfg.table.bootstrap_samples)
    if samples <= 0:
        raise UserInputError(f"bad table config: bootstrap_samples={samples} must be > 0")
    return samples


def over_passages(
    rows: Sequence[tuple[str, str]],
    scores: dict[str, dict[str, float]],
    passages: Sequence[Passage],
    cfg: Any,
) -> dict[str, Any]:
    """`summarize` for rows scored on `passages` (question counts from the passages), with cfg's bootstrap
    sample count and seed."""
    questions = {p.id: len(p.questions) for p in passages}
    return summarize(rows, scores, questions, bootstrap_samples(cfg), int(cfg.seed))


def summarize(
    rows: Sequence[tuple[str, str]],
    scores: dict[str, dict[str, float]],
    questions: dict[str, int],
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """rows: (key, label) in table order; scores[key]: {passage id: accuracy}; questions: {passage id: count}.
    Each row's accuracy, passage and question counts and 95% bootstrap interval; every pair's paired
    difference (later row minus earlier) over their common passages. Each resample's seed derives from
    `seed` and the rows' keys, so adding a row leaves the other intervals unchanged."""
    table = []
    for key, label in rows:
        ids = sorted(scores[key])
        values = [scores[key][i] for i in ids]
        entry = {
            "method": label,
            "key": key,
            "passages": len(ids),
            "questions": sum(questions[i] for i in ids),
        }
        if ids:
            indices = stats.resample_indices(len(ids), samples, stable_seed(seed, "bootstrap", key))
            entry |= {"accuracy": float(np.mean(values)), "ci95": list(stats.bootstrap_mean(values, indices))}
        table.append(entry)
    differences = []
    for (a, a_label), (b, b_label) in itertools.combinations(rows, 2):
        common_ids = sorted(set(scores[a]) & set(scores[b]))
        if not common_ids:
            continue
        indices = stats.resample_indices(len(common_ids), samples, stable_seed(seed, "paired", a, b))
        mean, interval = stats.paired_difference(
            [scores[b][i] for i in common_ids], [scores[a][i] for i in common_ids], indices
        )
        differences.append(
            {
                "row": b_label,
                "minus": a_label,
                "passages": len(common_ids),
                "difference": mean,
                "ci95": list(interval),
            }
        )
    return {"table": table, "differences": differences, "bootstrap_samples": samples}


def markdown(result: dict[str, Any]) -> str:
    """`result` (a title and `summarize`'s output) as Markdown tables (accuracies in %)."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    lines = [
        f"**{result['title']}**",
        "",
        "| method | accuracy (%) | 95% CI | passages | questions |",
        "|---|---:|---|---:|---:|",
    ]
    for r in result["table"]:
        acc, ci = (
            (pct(r["accuracy"]), f"[{pct(r['ci95'][0])}, {pct(r['ci95'][1])}]") if "ci95" in r else ("–", "–")
        )
        lines.append(f"| {r['method']} | {acc} | {ci} | {r['passages']} | {r['questions']} |")
    if result["differences"]:
        lines += ["", "| difference | points | 95% CI (paired) | passages |", "|---|---:|---|---:|"]
    for d in result["differences"]:
        ci = f"[{pct(d['ci95'][0])}, {pct(d['ci95'][1])}]"
        lines.append(f"| {d['row']} − {d['minus']} | {100 * d['difference']:+.1f} | {ci} | {d['passages']} |")
    return "\n".join(lines) + "\n"
