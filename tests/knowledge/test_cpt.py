"""CPT end to end on the tiny model (LoRA and full fine-tuning), the full fine-tuning program, and the question
subset."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seal_jax import defaults
from seal_jax.domains.base import TrainExample
from seal_jax.domains.knowledge import data
from seal_jax.engine.finetune import FinetuneConfig, step_batches
from seal_jax.engine.inner import encode_example, mean_token_loss
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import pad_id
from seal_jax.errors import UserInputError
from seal_jax.experiments import cpt
from seal_jax.models.bundle import default_mesh, load_model


def test_full_finetuning_step_matches_an_independent_adamw_step():
    """One step of 2 micro-batches equals AdamW on the mean of the two micro-batch losses (plain jax.grad); then
    more steps lower the loss and change every weight."""
    runtime = Runtime(load_model("tiny-random-llama", jnp.float32), default_mesh())
    base0 = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, runtime.base))
    graphdef = runtime.model.graphdef()
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]
    encoded = [encode_example(runtime.tokenizer, TrainExample("", t), True, 64) for t in texts]
    cfg = FinetuneConfig(
        learning_rate=1e-2,
        epochs=1,
        batch_size=1,
        grad_accum=2,
        moments_dtype="float32",
        remat=None,
        eps=1e-4,
        warmup_ratio=0.0,  # HF's warmup starts at lr 0: with one step and 3% warmup nothing would move
    )
    steps = step_batches(encoded, cfg, seed=0, pad_id=pad_id(runtime.tokenizer), bucket=16)
    assert len(steps) == 1 and steps[0][0].shape == (2, 1, 48)
    tokens, mask = (jnp.asarray(x) for x in steps[0])

    def loss(base):
        return sum(mean_token_loss(None, base, graphdef, tokens[a], mask[a], None, 64) for a in range(2)) / 2

    grads = jax.grad(loss)(base0)
    # eps 1e-4: Adam's first step is g / (|g| + eps), so with 1e-8 a 1e-9 rounding difference in a gradient
    # (rows of the embedding that only the softmax touches) would move a weight by up to the learning rate.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(eps=1e-4))
    updates, _ = tx.update(grads, tx.init(base0))
    expected = jax.tree.map(lambda p, u: p - 1e-2 * u, base0, updates)
    losses, skipped = runtime.finetune(steps, cfg)
    assert skipped == 0 and losses[0] == pytest.approx(float(loss(base0)), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), runtime.base, expected)

    more = dataclasses.replace(cfg, epochs=6)
    losses, _ = runtime.finetune(step_batches(encoded, more, 0, pad_id(runtime.tokenizer), 16), more)
    assert losses[-1] < losses[0]
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(b) != np.asarray(a))), base0, runtime.base)
    assert all(jax.tree.leaves(changed))  # embeddings, norms, every projection and the head


def test_question_subset_is_seeded_and_sized():
    passages = data.load_demo()[:4]
    subset = cpt.question_subset(passages, 7, seed=3)
    assert sum(len(p.questions) for p in subset) == 7
    assert subset == cpt.question_subset(passages, 7, seed=3) != cpt.question_subset(passages, 7, seed=4)
    assert cpt.question_subset(passages, 0, seed=3) == passages


def cpt_config(tmp_path, mode: str):
    raw = json.loads(data.DEMO_PATH.read_text())[:8]
    items = [dict(item, completions=["A fact about it.\nAnother fact.", "One implication."]) for item in raw]
    (tmp_path / "edits_val.json").write_text(json.dumps(items))
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_cpt"
    cfg.model = "tiny-random-llama"
    cfg.workdir = str(tmp_path / mode)
    cfg.domain.chat = True
    cfg.data.update(
        eval_source=str(tmp_path / "edits_val.json"), train_source="demo", num_eval=2, num_train=1
    )
    cfg.inner.update(chunk_k=2, max_length=64)
    cfg.cpt.update(mode=mode, self_edits=2, self_edit_file=str(tmp_path / "edits_val.json"), eval_questions=5)
    cfg.cpt.update(epochs=1, batch_size=2, grad_accum=2, max_length=64, lora_rank=4, lora_alpha=8.0)
    cfg.table.bootstrap_samples = 200
    return cfg


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_cpt_end_to_end(tmp_path, mode):
    cfg = cpt_config(tmp_path, mode)
    result = cpt.run(cfg)
    assert [r["questions"] for r in result["table"]] == [5, 5]
    # 2 passages × (2 self-edits, one sequence each: no line splitting) + each passage once
    assert result["sequences"] == 2 * (2 + 1) and result["invalid_self_edits"] == 0
    assert result["training"]["steps"] == 2  # 6 sequences, 4 per step, one epoch
    lines = (tmp_path / mode / "journal/cpt.jsonl").read_text().splitlines()
    assert cpt.run(cfg) == result  # resumed from the journal: nothing is trained or answered again
    assert (tmp_path / mode / "journal/cpt.jsonl").read_text().splitlines() == lines


def test_cpt_samples_its_own_self_edits_without_a_file(tmp_path):
    """No `self_edit_file`: the model writes `self_edits` per passage (journaled, so a rerun samples nothing);
    the ones that do not parse are counted and skipped, each passage still trains once."""
    cfg = cpt_config(tmp_path, "lora")
    cfg.cpt.self_edit_file = ""
    cfg.restem.update(max_self_edit_tokens=12, sample_batch=4)
    result = cpt.run(cfg)
    records = [json.loads(ln) for ln in (tmp_path / "lora/journal/cpt.jsonl").read_text().splitlines()]
    samples = [r["key"] for r in records if r["key"].startswith("cpt/sample/")]
    assert len(samples) == len(set(samples)) == 2 * 2  # 2 passages × 2 self-edits
    # each passage once, plus the sequences of the self-edits that parsed
    assert result["sequences"] >= 2 and 0 <= result["invalid_self_edits"] <= 4
    assert cpt.run(cfg) == result


def test_cpt_rejects_an_unknown_mode_and_too_few_completions(tmp_path):
    cfg = cpt_config(tmp_path, "partial")
    with pytest.raises(UserInputError, match=r"cpt\.mode"):
        cpt.run(cfg)
    cfg = cpt_config(tmp_path, "lora")
    cfg.cpt.self_edits = 3
    with pytest.raises(UserInputError, match="not 3"):
        cpt.run(cfg)
