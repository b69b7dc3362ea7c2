"""The ReST-EM M-step: LoRA SFT of the policy on kept (prompt, self-edit) pairs (the caller merges the adapter).

It reuses the inner loop's `adapt` with K = 1 (completion-only loss: the prompt's tokens carry none).
Reference defaults (docs/reference.md#knowledge-rest-em): LoRA r64 α128 on all projections, lr 3e-4, 2 epochs, batch 10,
linear decay, no warmup. The reference averages per-micro-batch means under gradient accumulation; here the loss
is the token mean over the whole batch of 10.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
from flax import nnx

from seal_jax.domains.base import TrainExample
from seal_jax.engine import distributed
from seal_jax.engine.inner import InnerConfig, encode_example, prepare_call
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import pad_id
from seal_jax.errors import require_positive
from seal_jax.models.lora import LoraConfig

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
    saved_matmuls_gb: float = 1.5

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
    """The trained adapter (host arrays, no K axis) and its loss per real step."""

    adapter: nnx.State
    losses: list[float]


def sft(runtime: Runtime, pairs: Sequence[TrainExample], cfg: SftConfig, seed: int) -> SftResult:
    """Fine-tunes a fresh LoRA on `pairs` (loss on completions only), data-parallel over the batch rows.

    Raises FloatingPointError when the run hits a non-finite loss (the caller leaves the policy unchanged)."""
    inner = cfg.inner()
    encoded = [
        encode_example(runtime.tokenizer, p, loss_on_all_tokens=False, max_length=cfg.max_length)
        for p in pairs
    ]
    layout, hparams = prepare_call(
        [encoded],
        [cfg.epochs],
        [seed],
        [cfg.learning_rate],
        [cfg.warmup_steps],
        inner,
        pad_id(runtime.tokenizer),
    )
    lora, stats = runtime.adapt(layout, hparams, runtime.fresh_adapters(cfg.lora, [seed]), inner, "rows")
    if bool(stats.nonfinite[0]):
        raise FloatingPointError("the M-step hit a non-finite loss; the policy is left unchanged")
    adapter = jax.tree.map(lambda x: distributed.to_host(x)[0], lora)
    return SftResult(adapter, layout.real_losses(stats.losses, 0))
