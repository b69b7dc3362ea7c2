"""Result tables with intervals: the knowledge experiment's held-out rows (grid settings included) and the
Markdown they print."""

from __future__ import annotations

import ml_collections
import pytest

from seal_jax.domains.knowledge.data import QA, Passage
from seal_jax.experiments import grid, intervals, knowledge
from seal_jax.experiments.knowledge import HeldOutRow


def test_held_out_intervals_label_grid_rows_and_pair_every_row():
    """The knowledge experiment's held-out table: one row per (method, grid setting), accuracies are macro
    means, and SEAL − round-0 is the paired difference over the passages both scored."""
    evals = [Passage(f"p{i}", "t", "c", tuple(QA("q", "a") for _ in range(i + 1))) for i in range(3)]
    (lr,) = grid.parse("learning_rate=1e-3")
    scored = [
        HeldOutRow(
            "round0",
            "round-0 self-edits",
            "no RL",
            {None: {"p0": 0.0, "p1": 0.5, "p2": 0.5}, lr: {"p0": 1.0}},
        ),
        HeldOutRow("seal", "SEAL (1 round)", "ReST-EM", {None: {"p0": 0.1, "p1": 0.6, "p2": 0.6}}),
    ]
    cfg = ml_collections.ConfigDict({"seed": 0, "table": {"bootstrap_samples": 300}})
    result = knowledge.held_out_intervals(cfg, scored, evals)
    table = {r["method"]: r for r in result["table"]}
    assert set(table) == {"round-0 self-edits", "round-0 self-edits [learning_rate=0.001]", "SEAL (1 round)"}
    assert table["round-0 self-edits"]["accuracy"] == pytest.approx(1 / 3)
    assert table["round-0 self-edits"]["questions"] == 6
    assert table["round-0 self-edits [learning_rate=0.001]"]["passages"] == 1
    (seal_minus_round0,) = [
        d
        for d in result["differences"]
        if d["minus"] == "round-0 self-edits" and d["row"] == "SEAL (1 round)"
    ]
    assert seal_minus_round0["difference"] == pytest.approx(0.1)
    assert seal_minus_round0["ci95"] == pytest.approx([0.1, 0.1])  # the same shift on every passage
    text = intervals.markdown({"title": "t", **result})
    assert "| SEAL (1 round) − round-0 self-edits | +10.0 | [10.0, 10.0] | 3 |" in text


def test_markdown_without_differences_has_no_difference_table():
    result = intervals.summarize([("seal", "SEAL")], {"seal": {"p0": 0.5}}, {"p0": 2}, 50, seed=0)
    text = intervals.markdown({"title": "t", **result})
    assert "| SEAL | 50.0 | [50.0, 50.0] | 1 | 2 |" in text and "difference" not in text
