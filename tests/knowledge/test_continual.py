"""Continual self-edits end to end on the tiny model: the matrix's shape and statistics, and resuming a run
that stopped mid-sequence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seal_jax import defaults, stats
from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.errors import UserInputError
from seal_jax.experiments import continual
from tests.helpers.runs import finished_restem_run, spy_runtime


def tiny_config(workdir):
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_continual"
    cfg.model = "tiny-random-llama"
    cfg.workdir = str(workdir)
    cfg.domain.chat = True
    cfg.data.update(eval_source="demo", train_source="demo", num_eval=4, num_train=1)
    cfg.inner.update(epochs=1, chunk_k=1, lora_rank=4, lora_alpha=8.0, max_length=64, learning_rate=1e-2)
    cfg.restem.update(max_self_edit_tokens=12, sample_batch=1)
    cfg.continual.update(runs=2, sequences=1, passages=3)
    return cfg


def test_matrix_stats_pool_every_sequence():
    """Two runs of two sequences: the pooled cell is the sample std over all four sequences."""

    def seq(a: float, b: float, c: float) -> list[list[float]]:
        return [[a, b], [c], [c, b]]  # before any edit (2 passages), after one edit, after two

    by_run = [[seq(0.0, 0.5, 1.0), seq(0.5, 0.5, 0.0)], [seq(1.0, 0.5, 0.5), seq(0.5, 0.5, 0.5)]]
    out = continual.matrix_stats(by_run)
    assert out["count"] == 4
    assert out["mean"][1] == [pytest.approx(0.5), None]
    assert out["mean"][2] == [pytest.approx(0.5), pytest.approx(0.5)] and out["std"][2][1] == 0.0
    assert out["std"][0][0] == pytest.approx(np.std([0.0, 0.5, 1.0, 0.5], ddof=1))
    assert out["std"][1][0] == pytest.approx(np.std([1.0, 0.0, 0.5, 0.5], ddof=1))
    assert out["runs"][0]["std"][1][0] == pytest.approx(np.sqrt(0.5))  # run 0 alone: {1, 0}
    assert stats.pooled([2, 2], [0.5, 0.5], [np.sqrt(0.5), 0.0])[2] == pytest.approx(out["std"][1][0])


def test_continual_end_to_end_and_resume(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "clean")
    clean = continual.run(cfg)
    assert [len(row) for row in clean["mean"]] == [3, 3, 3, 3]
    assert [[v is None for v in row] for row in clean["mean"][1:]] == [
        [False, True, True],
        [False, False, True],
        [False, False, False],
    ]
    assert clean["count"] == 2 and len(clean["sequences"]) == 2
    assert (tmp_path / "clean/results.png").stat().st_size > 0
    records = [json.loads(ln) for ln in (tmp_path / "clean/journal/continual.jsonl").read_text().splitlines()]
    assert sum("/sample/" in r["key"] for r in records) == 6  # one self-edit per step, 3 steps × 2 sequences
    assert sum(r["key"].endswith("/step0") for r in records) == 2
    steps = [r for r in records if "/step" in r["key"] and "/sample/" not in r["key"]]
    assert len(steps) == 8 and all(len(r["verdicts"]) == len(r["answers"]) > 0 for r in steps)  # judge counts

    # The same run stopped after its second saved step, then restarted: the same matrix.
    cfg = tiny_config(tmp_path / "resumed")
    saves = []
    original = RoundCheckpoints.save

    def save_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RoundCheckpoints, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        continual.run(cfg)
    monkeypatch.setattr(RoundCheckpoints, "save", original)
    resumed = continual.run(cfg)
    assert resumed["mean"] == clean["mean"] and resumed["std"] == clean["std"]


def test_continual_needs_enough_passages(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.continual.passages = 5
    with pytest.raises(UserInputError, match=r"continual\.passages=5"):
        continual.run(cfg)


def test_continual_starts_from_a_restem_checkpoint(tmp_path, monkeypatch):
    """`continual.policy_workdir`: the run's saved adapter is merged before the first self-edit is written."""
    cfg = tiny_config(tmp_path / "run")
    cfg.continual.update(runs=1, passages=2, policy_workdir=str(finished_restem_run(cfg, tmp_path / "rl")))
    events = spy_runtime(monkeypatch, ("merge", "sample"))
    result = continual.run(cfg)
    assert events[:2] == ["merge", "sample"]  # the checkpoint, then the first self-edit
    assert events.count("merge") == 1 + 2  # the checkpoint, then one merge per step
    assert "rl after 1 round(s)" in result["title"]
