"""The ReST-EM M-step: LoRA SFT of the policy on kept (prompt, self-edit) pairs, then merge into the policy.

It reuses the inner loop's `adapt` with K = 1 (completion-only loss: the prompt's tokens carry none).
Reference defaults (SEAL_REFERENCE.md §2.7): LoRA r64 α128 on all projections, lr 3e-4, 2 epochs, batch 10,
linear decay, no warmup. The reference averages per-micro-batch means under gradient accumulation; here the loss
is the token mean over the whole batch of 10.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seal_jax.domains.base import TrainExample
from seal_jax.engine.inner import AdapterHparams, InnerConfig, adapt_k, build_step_batches, encode_example
from seal_jax.engine.text import pad_id
from seal_jax.errors import require_positive
from seal_jax.models.bundle import LoadedModel
from seal_jax.models.lora import LoraConfig, merge_lora
from seal_jax.models.transformer import init_lora_k

ALL_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class SftConfig:
    lora: LoraConfig = LoraConfig(rank=64, alpha=128.0, targets=ALL_TARGETS)
    learning_rate: float = 3e-4
    epochs: int = 2
    batch_size: int = 10
    schedule: str = "linear"
    warmup_steps: int = 0
    max_length: int = 4096
    remat: bool = True
    saved_matmuls_gb: float = 0.75

    def __post_init__(self) -> None:
        self.inner()  # batch size, schedule, max length, remat budget: checked as the inner loop's
        require_positive("sft", learning_rate=self.learning_rate, epochs=self.epochs)
        if self.warmup_steps < 0:
            raise ValueError(f"sft warmup_steps={self.warmup_steps} must be >= 0")

    def inner(self) -> InnerConfig:
        """The inner-loop settings the M-step runs with (one adapter, no step bucketing)."""
        return InnerConfig(
            lora=self.lora,
            batch_size=self.batch_size,
            schedule=self.schedule,
            max_length=self.max_length,
            remat=self.remat,
            saved_matmuls_gb=self.saved_matmuls_gb,
            step_bucket=1,
        )


@dataclasses.dataclass(frozen=True)
class SftResult:
    policy: LoadedModel
    adapter: nnx.State
    losses: list[float]


def sft_policy(policy: LoadedModel, pairs: Sequence[TrainExample], cfg: SftConfig, seed: int) -> SftResult:
    """Fine-tunes a fresh LoRA on `pairs` (loss on completions only) and returns the merged policy."""
    inner = cfg.inner()
    encoded = [
        encode_example(policy.tokenizer, p, loss_on_all_tokens=False, max_length=cfg.max_length)
        for p in pairs
    ]
    layout = build_step_batches([encoded], [cfg.epochs], [seed], inner, pad_id=pad_id(policy.tokenizer))
    hparams = AdapterHparams(
        jnp.asarray([cfg.learning_rate], jnp.float32),
        jnp.asarray(layout.steps),
        jnp.asarray([cfg.warmup_steps], jnp.int32),
    )
    lora0 = init_lora_k(policy.config, cfg.lora, jax.random.key(seed)[None])
    lora, stats = adapt_k(
        lora0,
        policy.base,
        jax.tree.map(jnp.asarray, layout.batches),
        jax.tree.map(jnp.asarray, layout.schedule),
        hparams,
        graphdef=policy.graphdef(cfg.lora),
        cfg=inner,
    )
    if bool(np.asarray(stats.nonfinite)[0]):
        raise FloatingPointError("the M-step hit a non-finite loss; the policy is left unchanged")
    adapter = jax.tree.map(lambda x: x[0], lora)
    merged = policy.with_base(merge_lora(policy.base, adapter, cfg.lora))
    return SftResult(merged, adapter, layout.real_losses(stats.losses, 0))
