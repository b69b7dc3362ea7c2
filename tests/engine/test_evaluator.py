"""Adapt-and-answer: chunked runs equal one-job runs; the plan; a zero-example job is the base model."""

from __future__ import annotations

import numpy as np
import pytest

from seal_jax.domains.base import InnerHparams, TrainExample
from seal_jax.engine.evaluator import AdaptJob, EngineConfig, Evaluator
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.text import generate_texts, sampling_config
from seal_jax.models.lora import LoraConfig

INNER = InnerConfig(
    lora=LoraConfig(rank=4, alpha=8.0, targets=("q", "v")), length_bucket=64, loss_chunk=32, step_bucket=8
)
QUERIES = ("Who built the Zarn tower? Answer:", "When was the Zarn tower built? Answer:")


def ex(*texts: str) -> tuple[TrainExample, ...]:
    return tuple(TrainExample("", t) for t in texts)


# Knowledge-like self-edits (title + implication), distinct epochs / learning rates / seeds. Steps: 6, 5, 3.
JOBS = [
    AdaptJob(
        ex("Zarn tower\nThe tower was built by Mira Okafor.", "Zarn tower\nIt was finished in 1873."),
        InnerHparams(learning_rate=0.03, epochs=3),
        seed=11,
        queries=QUERIES,
    ),
    AdaptJob(
        ex("Zarn tower\nThe Velm bridge spans the river Oss."),
        InnerHparams(learning_rate=0.01, epochs=5),
        seed=22,
        queries=QUERIES,
    ),
    AdaptJob(
        ex("Zarn tower\nQwiller ate 9 plums.", "Zarn tower\nTolo is blue.", "Zarn tower\nXy is 42."),
        InnerHparams(learning_rate=0.05, epochs=1),
        seed=33,
        queries=QUERIES[:1],
    ),
]


def engine(tiny, chunk_k: int) -> EngineConfig:
    """Low-temperature sampling: answers depend on both the adapter's weights and the job's seed (the tiny
    model's greedy answers are mostly an echo or an immediate EOS)."""
    sampling = sampling_config(tiny.tokenizer, max_new=10, temperature=0.1)
    return EngineConfig(inner=INNER, sampling=sampling, chunk_k=chunk_k)


@pytest.fixture(scope="module")
def chunked(tiny):
    return Evaluator(tiny, engine(tiny, chunk_k=2))


@pytest.fixture(scope="module")
def chunked_results(chunked):
    return chunked.run(JOBS)


def test_chunked_run_equals_one_job_at_a_time(tiny, chunked_results):
    alone = Evaluator(tiny, engine(tiny, chunk_k=1)).run(JOBS)
    for job, a, b in zip(JOBS, chunked_results, alone, strict=True):
        assert len(a.answers) == len(job.queries)
        assert a.answers == b.answers
        assert len(a.losses) == len(b.losses) == len(job.examples) * job.hparams.epochs
        np.testing.assert_allclose(a.losses, b.losses, atol=1e-4)
        assert not a.nonfinite and not b.nonfinite
    assert chunked_results[0].answers != chunked_results[1].answers  # the jobs really differ


def test_plan_sorts_by_step_count_deterministically(tiny, chunked):
    assert chunked.plan(JOBS) == [[2, 1], [0]]  # steps 3, 5 | 6
    assert chunked.plan(JOBS) == Evaluator(tiny, engine(tiny, chunk_k=2)).plan(JOBS)
    ties = [JOBS[1], JOBS[0], JOBS[1], JOBS[2]]  # steps 5, 6, 5, 3: equal counts keep job order
    assert chunked.plan(ties) == [[3, 0], [2, 1]]
    wide = Evaluator(tiny, engine(tiny, chunk_k=8))
    assert wide.chunk_size(3) == 3 and wide.plan(JOBS) == [[2, 1, 0]]
    # balanced calls: 50 jobs at chunk_k 15 run as 4 calls of 13, not 15+15+15+5 (10 idle adapters)
    assert [Evaluator(tiny, engine(tiny, chunk_k=15)).chunk_size(n) for n in (1, 15, 16, 50)] == [
        1,
        15,
        8,
        13,
    ]


def test_zero_example_job_answers_like_the_base_model(tiny, chunked, chunked_results):
    empty = AdaptJob((), JOBS[0].hparams, seed=JOBS[0].seed, queries=QUERIES)
    adapted, untouched = chunked.run([JOBS[0], empty])
    base = generate_texts(
        tiny.tokenizer, tiny.graphdef(), tiny.base, None, list(QUERIES), chunked.cfg.sampling, seed=empty.seed
    )
    assert untouched.answers == base and untouched.losses == []
    assert adapted.answers == chunked_results[0].answers  # its chunk-mate is unaffected
    assert adapted.answers != base  # same seed, trained weights: the answers depend on the adapter
