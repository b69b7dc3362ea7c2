"""The Table 2 command (experiments/table.py) end to end on the tiny model, and replay as a case of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seal_jax import defaults
from seal_jax.domains.knowledge import data
from seal_jax.errors import UserInputError
from seal_jax.experiments import table
from tests.helpers.runs import finished_restem_run, spy_runtime


def write_self_edits(directory: Path, name: str, completions: list[str]) -> None:
    """A reference-format self-edit file (`<name>_val.json`) over the first demo passages."""
    raw = json.loads(data.DEMO_PATH.read_text())
    items = [dict(item, completions=[c]) for item, c in zip(raw, completions, strict=False)]
    (directory / f"{name}_val.json").write_text(json.dumps(items))


def tiny_config(tmp_path: Path):
    cfg = defaults.knowledge()
    cfg.model = "tiny-random-llama"
    cfg.workdir = str(tmp_path / "run")
    cfg.domain.chat = True
    cfg.inner.update(epochs=1, chunk_k=2, lora_rank=4, lora_alpha=8.0, max_length=64)
    cfg.table.bootstrap_samples = 200
    return cfg


def replay_config(tmp_path: Path, names: str):
    cfg = tiny_config(tmp_path)
    cfg.experiment = "knowledge_replay"
    cfg.replay.update(directory=str(tmp_path), names=names, num_passages=2)
    return cfg


def journal(tmp_path: Path) -> list[dict]:
    return [json.loads(ln) for ln in (tmp_path / "run/journal/table.jsonl").read_text().splitlines()]


def test_replay_rows_intervals_and_journal_keys(tmp_path):
    """A self-edit file named "base" must not be mistaken for the no-update row (they once shared keys); every
    row has its counts and an interval around its accuracy; every pair a paired difference."""
    write_self_edits(tmp_path, "naive", ["", ""])
    write_self_edits(tmp_path, "base", ["A fact.\nAnother fact.", "One implication."])
    results = table.replay(replay_config(tmp_path, "naive,base"))
    assert [row["method"] for row in results["table"]] == [
        "base (no update)",
        "naive self-edits (file)",
        "base self-edits (file)",
    ]
    questions = sum(len(p.questions) for p in data.load_demo()[:2])
    for row in results["table"]:
        assert (row["passages"], row["questions"]) == (2, questions)
        assert row["ci95"][0] <= row["accuracy"] <= row["ci95"][1]
    assert len(results["differences"]) == 3
    keys = [r["key"] for r in journal(tmp_path)]
    assert len(keys) == len(set(keys)) == 6  # 3 rows × 2 passages, each evaluated once
    sequences = {
        prefix: sorted(r["n_sequences"] for r in journal(tmp_path) if r["key"].startswith(f"{prefix}/"))
        for prefix in ("base", "file_naive", "file_base")
    }
    # no training; the passage alone; the self-edit's lines + the passage
    assert sequences == {"base": [0, 0], "file_naive": [1, 1], "file_base": [2, 3]}
    assert (tmp_path / "run/results.md").read_text().count("\n| ") >= 6
    assert (tmp_path / "run/results.png").stat().st_size > 0


def test_table_rows_with_own_self_edits(tmp_path):
    """base, passage and the model's own self-edits on cfg.data's passages; rerunning resumes from the journal
    (nothing recomputed) with the same numbers."""
    cfg = tiny_config(tmp_path)
    cfg.experiment = "knowledge_table"
    cfg.data.update(eval_source="demo", train_source="demo", num_eval=2, num_train=1)
    cfg.restem.update(max_self_edit_tokens=12, sample_batch=2)
    first = table.run(cfg)
    assert [r["key"] for r in first["table"]] == ["base", "passage", "self_edits"]
    lines = len(journal(tmp_path))
    assert lines == 2 + 2 + 2 + 2  # base, passage, two samples and two evaluations
    assert table.run(cfg) == first and len(journal(tmp_path)) == lines


def test_replay_without_file_names_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match=r"replay\.names is empty"):
        table.replay(replay_config(tmp_path, " , "))


def test_table_rejects_unknown_rows_and_a_missing_restem_run(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.table.rows = "base,seal"
    with pytest.raises(UserInputError, match="unknown row"):
        table.run(cfg)
    cfg.table.update(rows="base,restem", restem_workdir=str(tmp_path / "nothing"))
    with pytest.raises(UserInputError, match="holds no ReST-EM run"):
        table.run(cfg)
    teacher_student = tmp_path / "teacher_student"  # its checkpoints hold the writer's adapters
    (teacher_student / "checkpoints").mkdir(parents=True)
    saved = {"model": cfg.model, "writer_model": "another-model"}
    (teacher_student / "config.json").write_text(json.dumps(saved))
    cfg.table.restem_workdir = str(teacher_student)
    with pytest.raises(UserInputError, match="is a teacher-student run"):
        table.run(cfg)


def test_table_checks_the_self_edit_prompts_of_its_sampled_rows_before_loading(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    cfg.data.update(train_source="demo", eval_source="demo", num_train=1, num_eval=2)
    cfg.restem.max_self_edit_tokens = 10**6  # no prompt leaves room for that many new tokens
    monkeypatch.setattr(table.common, "load", lambda *a, **k: pytest.fail("loaded the model before checking"))
    cfg.table.rows = "base,self_edits"
    with pytest.raises(UserInputError, match="self-edit sampling"):
        table.run(cfg)


def test_replay_without_a_directory_is_a_one_line_error_before_loading(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    cfg.experiment = "knowledge_replay"
    cfg.replay.directory = ""
    monkeypatch.setattr(table.common, "load", lambda *a, **k: pytest.fail("loaded the model before checking"))
    with pytest.raises(UserInputError, match=r"replay\.directory is unset"):
        table.replay(cfg)


def test_restem_row_merges_the_run_checkpoint_before_sampling_its_self_edits(tmp_path, monkeypatch):
    """`restem` (listed first) is evaluated last: the base row answers on the unmerged weights, then the saved
    round adapter is merged in place and the merged model writes and adapts the row's self-edits."""
    cfg = tiny_config(tmp_path)
    cfg.experiment = "knowledge_table"
    cfg.data.update(eval_source="demo", train_source="demo", num_eval=2, num_train=1)
    cfg.restem.update(max_self_edit_tokens=12, sample_batch=2)
    run = finished_restem_run(cfg, tmp_path / "restem_run")
    events = spy_runtime(monkeypatch, ("merge", "sample", "answer"))
    cfg.table.update(rows="restem,base", restem_workdir=str(run))
    result = table.run(cfg)
    assert [r["key"] for r in result["table"]] == ["restem", "base"]  # shown in the order asked
    assert all(r["passages"] == 2 for r in result["table"])
    assert events[0] == "answer" and events.count("merge") == 1
    assert events.index("merge") < events.index("sample")  # the checkpoint writes the row's self-edits
    assert sum(r["key"].startswith("restem/") and "/sample/" in r["key"] for r in journal(tmp_path)) == 2
