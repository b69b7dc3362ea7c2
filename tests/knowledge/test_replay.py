"""The replay experiment (the paper's Table 2 layout) end to end on the tiny model with small self-edit files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seal_jax import defaults
from seal_jax.domains.knowledge import data
from seal_jax.errors import UserInputError
from seal_jax.experiments import knowledge


def write_self_edits(directory: Path, name: str, completions: list[str]) -> None:
    """A reference-format self-edit file (`<name>_val.json`) over the first demo passages."""
    raw = json.loads(data.DEMO_PATH.read_text())
    items = [dict(item, completions=[c]) for item, c in zip(raw, completions, strict=False)]
    (directory / f"{name}_val.json").write_text(json.dumps(items))


def replay_config(tmp_path: Path, names: str):
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_replay"
    cfg.model = "tiny-random-llama"
    cfg.workdir = str(tmp_path / "run")
    cfg.domain.chat = True
    cfg.inner.update(epochs=1, chunk_k=2, lora_rank=4, lora_alpha=8.0, max_length=64)
    cfg.replay.update(directory=str(tmp_path), names=names, num_passages=2)
    return cfg


def test_replay_rows_and_journal_keys_do_not_collide(tmp_path):
    """A self-edit file named "base" must not be mistaken for the no-update row (they once shared keys)."""
    write_self_edits(tmp_path, "naive", ["", ""])
    write_self_edits(tmp_path, "base", ["A fact.\nAnother fact.", "One implication."])
    results = knowledge.replay(replay_config(tmp_path, "naive,base"))
    assert [row["method"] for row in results["table"]] == [
        "base (no update)",
        "naive self-edits",
        "base self-edits",
    ]
    records = [json.loads(ln) for ln in (tmp_path / "run/journal/replay.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 6  # 3 rows × 2 passages, each evaluated once
    sequences = {
        prefix: sorted(r["n_sequences"] for r in records if r["key"].startswith(f"{prefix}/"))
        for prefix in (knowledge.NO_UPDATE, "naive", "base")
    }
    # no training; the passage alone; the self-edit's lines + the passage
    assert sequences == {knowledge.NO_UPDATE: [0, 0], "naive": [1, 1], "base": [2, 3]}


def test_replay_without_file_names_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match=r"replay\.names is empty"):
        knowledge.replay(replay_config(tmp_path, " , "))


def test_replay_without_a_directory_is_a_one_line_error_before_loading(tmp_path, monkeypatch):
    cfg = replay_config(tmp_path, "base")
    cfg.replay.directory = ""
    monkeypatch.setattr(knowledge.common, "load", lambda cfg: pytest.fail("loaded the model before checking"))
    with pytest.raises(UserInputError, match=r"replay\.directory is unset"):
        knowledge.replay(cfg)


def test_replay_refuses_a_file_named_like_the_no_update_row(tmp_path):
    with pytest.raises(UserInputError, match="no_update"):
        knowledge.replay(replay_config(tmp_path, f"{knowledge.NO_UPDATE}"))
