"""Adapt-and-answer: the inner loop plus evaluation for many self-edits, `chunk_k` adapters per compiled call.

Domain-agnostic: a job is training examples + inner hparams + a seed + query prompts; the result is the adapted
model's answers (the domain scores them). Jobs are sorted by step count and cut into calls so adapters that run in
lock-step under `vmap` waste few idle steps (`Evaluator.plan`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import numpy as np
from absl import logging
from flax import nnx

from seal_jax.domains.base import InnerHparams, TrainExample
from seal_jax.engine import sharding
from seal_jax.engine.inner import (
    AdapterHparams,
    EncodedExample,
    InnerConfig,
    StepLayout,
    encode_example,
    prepare_call,
    steps_for,
)
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.engine.text import pad_id
from seal_jax.errors import require_positive


@dataclasses.dataclass(frozen=True)
class AdaptJob:
    """One inner-loop run: train a fresh LoRA (init and data order from `seed`) on `examples`, answer `queries`.

    `order_stream`: jobs of one stream share the coupled data-order stream (`InnerConfig.coupled_order`); give
    the seeds of one self-edit different streams (their seed index) so their orders are independent.
    """

    examples: tuple[TrainExample, ...]
    hparams: InnerHparams
    seed: int
    queries: tuple[str, ...]
    order_stream: int = 0


@dataclasses.dataclass(frozen=True)
class AdaptResult:
    """answers[i] answers queries[i]; losses: mean token loss per real step; nonfinite: the run hit NaN/inf."""

    answers: list[str]
    losses: list[float]
    nonfinite: bool


@dataclasses.dataclass(frozen=True)
class Adapted:
    """One call's trained adapters: `lora` [K, ...] (on the mesh) for `jobs` (padded to K), their step layout,
    losses [K, S] and non-finite flags [K] (host)."""

    jobs: list[AdaptJob]
    lora: nnx.State
    layout: StepLayout
    losses: np.ndarray
    nonfinite: np.ndarray


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Inner loop (static), evaluation decoding, at most `chunk_k` adapters per call, warmup steps for every
    adapter. `Evaluator.plan` prices a call of m adapters whose longest job has S steps at
    S × (m + `step_cost`) + `call_cost` adapter-steps: `step_cost` is a shared step's fixed cost in adapter-steps
    (≈ 1 on a CPU, where a step's time grows with its adapters; ≈ chunk_k on an accelerator, where K adapters
    cost about one), `call_cost` a call's (compile, answers)."""

    inner: InnerConfig = InnerConfig()
    sampling: SamplingConfig = SamplingConfig()
    chunk_k: int = 15
    warmup_steps: int = 0
    step_cost: float = 1.0
    call_cost: float = 48.0

    def __post_init__(self) -> None:
        require_positive("inner loop", chunk_k=self.chunk_k)
        if self.warmup_steps < 0:
            raise ValueError(f"inner loop: warmup_steps={self.warmup_steps} must be >= 0")
        if self.step_cost < 0 or self.call_cost < 0:
            raise ValueError(
                f"plan costs must be >= 0, got step_cost={self.step_cost}, call_cost={self.call_cost}"
            )


class Evaluator:
    """Adapts and evaluates jobs on a `Runtime` (whose base weights it reads at every call, so it follows merges)."""

    def __init__(self, runtime: Runtime, cfg: EngineConfig):
        self.runtime = runtime
        self.cfg = cfg
        data = runtime.mesh.shape["data"]
        self.chunk_k = max(data, -(-cfg.chunk_k // data) * data)
        self._encoded: dict[tuple[TrainExample, bool], EncodedExample] = {}
        # wall time of the adapt and answer programs, and the jobs evaluated (metrics read the differences)
        self.timings: dict[str, float] = {"adapt_s": 0.0, "generate_s": 0.0, "jobs": 0}

    def encode(self, job: AdaptJob) -> list[EncodedExample]:
        out = []
        for ex in job.examples:
            key = (ex, job.hparams.loss_on_all_tokens)
            if key not in self._encoded:
                self._encoded[key] = encode_example(
                    self.runtime.tokenizer, ex, job.hparams.loss_on_all_tokens, self.cfg.inner.max_length
                )
            out.append(self._encoded[key])
        return out

    def plan(self, jobs: Sequence[AdaptJob]) -> list[list[int]]:
        """Job indices grouped into compiled calls of at most `chunk_k`: jobs sorted by step count, cut into
        the contiguous groups of least cost (`EngineConfig`; every adapter of a call runs for its longest job's
        steps, so jobs of unequal length are split when the idle adapter-steps outweigh a call). Ties go to
        balanced calls. The plan depends only on `jobs`, so a resumed run recomputes the same chunks."""
        cfg = self.cfg
        own = [steps_for(len(j.examples), j.hparams.epochs, cfg.inner.batch_size) for j in jobs]
        order = sorted(range(len(jobs)), key=own.__getitem__)
        steps = [own[i] for i in order]
        n = len(order)
        best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
        for end in range(1, n + 1):
            for start in range(max(0, end - self.chunk_k), end):
                size = self.call_size(end - start)
                cost = best[start] + steps[end - 1] * (size + cfg.step_cost) + cfg.call_cost + 1e-6 * size**2
                if cost < best[end]:
                    best[end], cut[end] = cost, start
        groups, end = [], n
        while end > 0:
            groups.append(order[cut[end] : end])
            end = cut[end]
        return groups[::-1]

    def call_size(self, num_jobs: int) -> int:
        """Adapters in a call of `num_jobs` jobs: rounded up to a multiple of the `data` axis."""
        data = self.runtime.mesh.shape["data"]
        return max(1, math.ceil(num_jobs / data)) * data

    def run(self, jobs: Sequence[AdaptJob]) -> list[AdaptResult]:
        """Adapts and evaluates every job; results in the order of `jobs`."""
        results: dict[int, AdaptResult] = {}
        for idx in self.plan(jobs):
            results.update(zip(idx, self.run_chunk([jobs[i] for i in idx]), strict=True))
        return [results[i] for i in range(len(jobs))]

    def prepare(self, jobs: Sequence[AdaptJob]) -> tuple[StepLayout, AdapterHparams]:
        """The host inputs of one call of `jobs`: their step layout and per-adapter hparams [K]."""
        return prepare_call(
            [self.encode(j) for j in jobs],
            [j.hparams.epochs for j in jobs],
            [j.seed for j in jobs],
            [j.hparams.learning_rate for j in jobs],
            [
                self.cfg.warmup_steps if j.hparams.warmup_steps is None else j.hparams.warmup_steps
                for j in jobs
            ],
            self.cfg.inner,
            pad_id(self.runtime.tokenizer),
            streams=[j.order_stream for j in jobs],
        )

    def adapt_chunk(self, jobs: list[AdaptJob]) -> Adapted:
        """Trains the adapters of one call (the jobs padded to `call_size` with zero-step copies)."""
        k = self.call_size(len(jobs))
        padded = jobs + [dataclasses.replace(jobs[0], examples=(), seed=0)] * (k - len(jobs))
        inner = self.cfg.inner
        layout, hparams = self.prepare(padded)
        lora = self.runtime.fresh_adapters(inner.lora, [j.seed for j in padded])
        t0 = time.perf_counter()
        if layout.steps.max() == 0:  # nothing to train (baselines): fresh adapters are the base model
            lora = self.runtime.put(lora, sharding.adapter_sharding(self.runtime.mesh))
            losses, nonfinite = np.zeros(layout.batches.active.shape, np.float32), np.zeros(k, bool)
        else:
            lora, stats = self.runtime.adapt(layout, hparams, lora, inner)
            losses, nonfinite = stats.losses, stats.nonfinite
        self.timings["adapt_s"] += time.perf_counter() - t0
        if nonfinite[: len(jobs)].any():
            logging.warning("%d adapter(s) hit a non-finite loss and were frozen", int(nonfinite.sum()))
        return Adapted(padded, lora, layout, losses, nonfinite)

    def answer_chunk(self, adapted: Adapted, num_jobs: int) -> list[AdaptResult]:
        """The adapted models' answers to their jobs' queries (the first `num_jobs` jobs' results)."""
        t0 = time.perf_counter()
        padded = adapted.jobs
        answers = self.runtime.answer(
            adapted.lora,
            self.cfg.inner.lora,
            [list(j.queries) for j in padded],
            [j.seed for j in padded],
            self.cfg.sampling,
        )
        self.timings["generate_s"] += time.perf_counter() - t0
        self.timings["jobs"] += num_jobs
        return [
            AdaptResult(answers[i], adapted.layout.real_losses(adapted.losses, i), bool(adapted.nonfinite[i]))
            for i in range(num_jobs)
        ]

    def run_chunk(self, jobs: list[AdaptJob]) -> list[AdaptResult]:
        """Adapts the jobs of one call and answers their queries."""
        return self.answer_chunk(self.adapt_chunk(jobs), len(jobs))
