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

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from seal_jax.domains.base import InnerHparams, TrainExample
from seal_jax.engine import sharding
from seal_jax.engine.inner import (
    AdapterHparams,
    AdaptStats,
    EncodedExample,
    InnerConfig,
    StepLayout,
    build_step_batches,
    encode_example,
    steps_for,
)
from seal_jax.engine.sampling import SamplingConfig, pad_prompts, prompt_width
from seal_jax.engine.text import decode_outputs, encode_prompts, pad_id
from seal_jax.errors import require_positive
from seal_jax.models.bundle import LoadedModel
from seal_jax.models.transformer import init_lora_k


@dataclasses.dataclass(frozen=True)
class AdaptJob:
    """One inner-loop run: train a fresh LoRA (init and data order from `seed`) on `examples`, answer `queries`."""

    examples: tuple[TrainExample, ...]
    hparams: InnerHparams
    seed: int
    queries: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AdaptResult:
    """answers[i] answers queries[i]; losses: mean token loss per real step; nonfinite: the run hit NaN/inf."""

    answers: list[str]
    losses: list[float]
    nonfinite: bool


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Inner loop (static), evaluation decoding, at most `chunk_k` adapters per call, warmup steps for every
    adapter. `Evaluator.plan` prices a call of m adapters whose longest job has S steps at
    S × (m + `step_cost`) + `call_cost` adapter-steps: `step_cost` is a shared step's fixed cost in adapter-steps
    (≈ 1 on a CPU, where a step's time grows with its adapters; ≈ chunk_k on an accelerator, where K adapters
    cost about one), `call_cost` a call's (compile, answers)."""

    inner: InnerConfig
    sampling: SamplingConfig
    chunk_k: int = 8
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
    """Holds the compiled adapt/generate functions for one model on one mesh."""

    def __init__(self, model: LoadedModel, cfg: EngineConfig, mesh: jax.sharding.Mesh | None = None):
        self.model = model
        self.cfg = cfg
        self.mesh = mesh or sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])
        data = self.mesh.shape["data"]
        self.chunk_k = max(data, -(-cfg.chunk_k // data) * data)
        self.base = sharding.place_base(self.mesh, model.base)
        graphdef = model.graphdef(cfg.inner.lora)
        self._adapt = sharding.sharded_adapt_k(self.mesh, graphdef, cfg.inner, self.base)
        self._generate = sharding.sharded_generate_k(self.mesh, graphdef, cfg.sampling, self.base)
        self._encoded: dict[tuple[TrainExample, bool], EncodedExample] = {}
        self.timings: dict[str, float] = {"adapt_s": 0.0, "generate_s": 0.0}

    def encode(self, job: AdaptJob) -> list[EncodedExample]:
        out = []
        for ex in job.examples:
            key = (ex, job.hparams.loss_on_all_tokens)
            if key not in self._encoded:
                self._encoded[key] = encode_example(
                    self.model.tokenizer, ex, job.hparams.loss_on_all_tokens, self.cfg.inner.max_length
                )
            out.append(self._encoded[key])
        return out

    def set_base(self, base) -> None:
        """Swaps in new base weights of the same shapes (the updated policy); compiled functions are kept."""
        self.base = sharding.place_base(self.mesh, base)

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
        data = self.mesh.shape["data"]
        return max(1, math.ceil(num_jobs / data)) * data

    def run(self, jobs: Sequence[AdaptJob]) -> list[AdaptResult]:
        """Adapts and evaluates every job; results in the order of `jobs`."""
        results: dict[int, AdaptResult] = {}
        for idx in self.plan(jobs):
            results.update(zip(idx, self.run_chunk([jobs[i] for i in idx]), strict=True))
        return [results[i] for i in range(len(jobs))]

    def prepare(self, jobs: Sequence[AdaptJob]) -> tuple[StepLayout, AdapterHparams, nnx.State]:
        """The inner loop's inputs for `jobs` (one compiled call): step layout, per-adapter hparams, fresh LoRAs."""
        layout = build_step_batches(
            [self.encode(j) for j in jobs],
            [j.hparams.epochs for j in jobs],
            [j.seed for j in jobs],
            self.cfg.inner,
            pad_id=pad_id(self.model.tokenizer),
        )
        hparams = AdapterHparams(
            jnp.asarray([j.hparams.learning_rate for j in jobs], jnp.float32),
            jnp.asarray(layout.steps),
            jnp.full((len(jobs),), self.cfg.warmup_steps, jnp.int32),
        )
        keys = jnp.stack([jax.random.key(j.seed) for j in jobs])
        return layout, hparams, init_lora_k(self.model.config, self.cfg.inner.lora, keys)

    def adapt(
        self, layout: StepLayout, hparams: AdapterHparams, lora0: nnx.State
    ) -> tuple[nnx.State, AdaptStats]:
        """Runs the compiled inner loop on a prepared chunk (`lora0` is donated)."""
        t0 = time.perf_counter()
        batches, schedule = jax.tree.map(jnp.asarray, (layout.batches, layout.schedule))
        lora, stats = self._adapt(lora0, self.base, batches, schedule, hparams)
        stats = jax.tree.map(np.asarray, stats)
        self.timings["adapt_s"] += time.perf_counter() - t0
        return lora, stats

    def run_chunk(self, jobs: list[AdaptJob]) -> list[AdaptResult]:
        """Adapts the jobs of one call (padded to `call_size` with zero-step copies) and answers their queries."""
        k = self.call_size(len(jobs))
        padded = jobs + [dataclasses.replace(jobs[0], examples=(), seed=0)] * (k - len(jobs))
        layout, hparams, lora0 = self.prepare(padded)
        if layout.steps.max() == 0:  # nothing to train (baselines): fresh adapters are the base model
            lora, losses, nonfinite = (
                lora0,
                np.zeros(layout.batches.active.shape, np.float32),
                np.zeros(k, bool),
            )
        else:
            lora, stats = self.adapt(layout, hparams, lora0)
            losses, nonfinite = stats.losses, stats.nonfinite
        answers = self.answer(lora, [list(j.queries) for j in padded], [j.seed for j in padded])
        if nonfinite[: len(jobs)].any():
            logging.warning("%d adapter(s) hit a non-finite loss and were frozen", int(nonfinite.sum()))
        return [
            AdaptResult(answers[i], layout.real_losses(losses, i), bool(nonfinite[i]))
            for i in range(len(jobs))
        ]

    def answer(self, lora_k, queries_k: list[list[str]], seeds: list[int]) -> list[list[str]]:
        """K adapted models (leading K axis, K = chunk size) answer their own queries in one call."""
        cfg, tok = self.cfg.sampling, self.model.tokenizer
        rows = max(1, max(len(q) for q in queries_k))
        encoded = [
            encode_prompts(tok, (q or [""]) + [(q or [""])[0]] * (rows - len(q or [""]))) for q in queries_k
        ]
        longest = max(len(ids) for e in encoded for ids in e)
        width = prompt_width(longest, cfg)
        padded = [pad_prompts(e, cfg, width) for e in encoded]
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        t0 = time.perf_counter()
        out, n = self._generate(
            self.base,
            lora_k,
            jnp.asarray(np.stack([p[0] for p in padded])),
            jnp.asarray(np.stack([p[1] for p in padded])),
            keys,
        )
        out, n = np.asarray(out), np.asarray(n)
        self.timings["generate_s"] += time.perf_counter() - t0
        return [
            decode_outputs(tok, out[i], n[i], cfg.eos_ids)[: len(queries_k[i])] for i in range(len(queries_k))
        ]
