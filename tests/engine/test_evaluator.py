"""Adapt-and-answer: chunked runs equal one-job runs; the plan; a zero-example job is the base model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seal_jax.domains.base import InnerHparams, TrainExample
from seal_jax.engine.evaluator import AdaptJob, EngineConfig, Evaluator
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.text import sampling_config
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
def chunked(tiny, tiny_runtime):
    return Evaluator(tiny_runtime, engine(tiny, chunk_k=2))


@pytest.fixture(scope="module")
def chunked_results(chunked):
    return chunked.run(JOBS)


def test_chunked_run_equals_one_job_at_a_time(tiny, tiny_runtime, chunked_results):
    alone = Evaluator(tiny_runtime, engine(tiny, chunk_k=1)).run(JOBS)
    for job, a, b in zip(JOBS, chunked_results, alone, strict=True):
        assert len(a.answers) == len(job.queries)
        assert a.answers == b.answers
        assert len(a.losses) == len(b.losses) == len(job.examples) * job.hparams.epochs
        np.testing.assert_allclose(a.losses, b.losses, atol=1e-4)
        assert not a.nonfinite and not b.nonfinite
    assert chunked_results[0].answers != chunked_results[1].answers  # the jobs really differ


def test_plan_sorts_by_step_count_deterministically(tiny, tiny_runtime, chunked):
    plan = chunked.plan(JOBS)  # steps 3, 5, 6
    assert plan == Evaluator(tiny_runtime, engine(tiny, chunk_k=2)).plan(JOBS)
    assert sorted(i for g in plan for i in g) == [0, 1, 2] and all(len(g) <= 2 for g in plan)
    assert [i for g in plan for i in g] == [2, 1, 0]  # calls follow the step order
    ties = [JOBS[1], JOBS[1], JOBS[1]]  # equal counts keep job order
    assert [i for g in chunked.plan(ties) for i in g] == [0, 1, 2]
    assert Evaluator(tiny_runtime, engine(tiny, chunk_k=8)).plan(JOBS) == [[2, 1, 0]]  # short jobs: one call


def sized_jobs(sequences: list[int]) -> list[AdaptJob]:
    """Jobs of 10 epochs over `n` one-line examples each (n × 10 steps)."""
    return [
        AdaptJob(ex(*(f"line {i}" for i in range(n))), InnerHparams(learning_rate=1e-3, epochs=10), 0, ())
        for n in sequences
    ]


def test_plan_splits_unequal_jobs_when_idle_steps_outweigh_a_call(tiny, tiny_runtime):
    # The benchmark's 15 self-edits: 6, 7 and 8 lines (3 each) and 11 lines (6): 60-110 steps.
    jobs = sized_jobs([11, 11, 7, 8, 6] * 3)
    cpu = Evaluator(tiny_runtime, engine(tiny, chunk_k=15))
    assert [len(g) for g in cpu.plan(jobs)] == [9, 6]  # 1380 adapter-steps (90 idle) vs 1650 in one call
    accelerator = Evaluator(tiny_runtime, dataclasses.replace(engine(tiny, chunk_k=15), step_cost=15.0))
    assert [len(g) for g in accelerator.plan(jobs)] == [15]  # a step of 15 adapters costs about one
    equal = cpu.plan(sized_jobs([4] * 50))  # equal jobs: fewest calls, balanced (not 15+15+15+5)
    assert sorted(len(g) for g in equal) == [12, 12, 13, 13]


def test_zero_example_job_answers_like_the_base_model(tiny_runtime, chunked, chunked_results):
    empty = AdaptJob((), JOBS[0].hparams, seed=JOBS[0].seed, queries=QUERIES)
    adapted, untouched = chunked.run([JOBS[0], empty])
    base = tiny_runtime.sample(list(QUERIES), chunked.cfg.sampling, seed=empty.seed)
    assert untouched.answers == base and untouched.losses == []
    assert adapted.answers == chunked_results[0].answers  # its chunk-mate is unaffected
    assert adapted.answers != base  # same seed, trained weights: the answers depend on the adapter
