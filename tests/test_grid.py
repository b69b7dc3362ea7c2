"""In-call sweeps of the inner loop (`eval.inner_grid`): parsing, and a grid's rows equal each setting alone."""

from __future__ import annotations

import numpy as np
import pytest

from seal_jax.domains.base import InnerHparams
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import EngineConfig, Evaluator
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.text import sampling_config
from seal_jax.errors import UserInputError
from seal_jax.experiments import grid, heldout
from seal_jax.models.lora import LoraConfig

INNER = InnerConfig(lora=LoraConfig(rank=4, alpha=8.0, targets=("q", "v")), length_bucket=64, step_bucket=8)
OWN = InnerHparams(learning_rate=1e-2, epochs=2, loss_on_all_tokens=True)


def test_parse_is_a_product_with_stable_names():
    settings = grid.parse("learning_rate=1e-3,3e-3; epochs=3")
    assert [s.name for s in settings] == ["learning_rate=0.001,epochs=3", "learning_rate=0.003,epochs=3"]
    assert len(grid.parse("learning_rate=1e-3,3e-3;epochs=3,5;warmup_steps=0,2")) == 8
    assert grid.parse("") == []
    applied = settings[1].apply(KnowledgeDomain((), ()).passage_only_self_edit(data.load_demo()[0]))
    assert applied.hparams == InnerHparams(learning_rate=3e-3, epochs=3, loss_on_all_tokens=True)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr=1e-3", "axis among"),
        ("learning_rate=fast", "not a float"),
        ("epochs=0", "must be > 0"),
        ("epochs=2;epochs=3", "twice"),
        ("learning_rate=1e-3,0.001", "repeats"),
    ],
)
def test_bad_grids_are_one_line_errors(text, message):
    with pytest.raises(UserInputError, match=message):
        grid.parse(text)


class CountingEvaluator(Evaluator):
    """Counts compiled adapt-and-answer calls."""

    calls = 0

    def run_chunk(self, jobs):
        self.calls += 1
        return super().run_chunk(jobs)


def passage_records(tiny, runtime, tmp_path, name, hparams, settings=()):
    domain = KnowledgeDomain((), tuple(data.load_demo()[:2]), hparams=hparams)
    sampling = sampling_config(tiny.tokenizer, max_new=8)
    evaluator = CountingEvaluator(runtime, EngineConfig(inner=INNER, sampling=sampling, chunk_k=8))
    contexts = domain.contexts("eval")
    journal = Journal(tmp_path, name)
    records = heldout.evaluate_fixed(
        "passage", evaluator, domain, contexts, domain.passage_only_self_edit, 1, journal, 0, settings
    )
    return records, evaluator.calls


def test_grid_rows_equal_each_setting_alone(tiny, tiny_runtime, tmp_path):
    settings = grid.parse("learning_rate=3e-2,1e-3")
    records, calls = passage_records(tiny, tiny_runtime, tmp_path, "grid", OWN, settings)
    assert calls == 1  # 2 passages × (own + 2 settings): one compiled call
    accuracies = {
        g: heldout.macro(heldout.context_means(records, f"{grid.method_key('passage', g)}/"))
        for g in [None, *settings]
    }
    rows = grid.rows("passage only", "", accuracies)
    assert [r[0] for r in rows] == [
        "passage only",
        "passage only [learning_rate=0.03]",
        "passage only [learning_rate=0.001]",
    ]
    losses = []
    for setting in settings:
        own = InnerHparams(learning_rate=setting.values[0][1], epochs=OWN.epochs, loss_on_all_tokens=True)
        alone, _ = passage_records(tiny, tiny_runtime, tmp_path, setting.name, own)
        assert len(alone) == 2
        for key, rec in alone.items():
            in_grid = records[key.replace("passage/", f"{grid.method_key('passage', setting)}/", 1)]
            assert in_grid["reward"] == rec["reward"] and in_grid["answers"] == rec["answers"]
            np.testing.assert_allclose(in_grid["final_loss"], rec["final_loss"], atol=1e-4)
            losses.append(rec["final_loss"])
    assert not np.allclose(losses[:2], losses[2:], atol=1e-3)  # the settings really trained differently
