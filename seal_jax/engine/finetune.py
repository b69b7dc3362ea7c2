"""Full fine-tuning: AdamW over every base weight (no LoRA), for multi-passage continued pretraining (CPT).

One compiled step (`finetune_step`) takes `grad_accum` micro-batches [A, B, T]: a `lax.scan` sums their
gradients (each micro-batch's loss is its token mean; the step's loss is the mean over micro-batches, HF
Trainer's gradient accumulation), clips the global norm, and applies AdamW with HF's linear schedule after a
linear warmup. The optimizer moments live in `moments_dtype`: "bfloat16" is what torch's AdamW keeps for a bf16
model (the reference's full fine-tune), "float32" doubles their memory. They are sharded like the weights (fsdp),
and the weights and moments are donated, so a step holds one copy of each plus the gradients.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seal_jax.engine.inner import AdapterHparams, EncodedExample, learning_rate_at, mean_token_loss, round_up
from seal_jax.errors import require_positive

MOMENT_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Static settings; defaults are the reference's full-FT CPT (1 epoch, lr 7e-5, batch 4 × accumulation 2,
    3% warmup, no weight decay, clip 1.0)."""

    learning_rate: float = 7e-5
    epochs: int = 1
    batch_size: int = 4
    grad_accum: int = 2
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    moments_dtype: str = "bfloat16"
    max_length: int = 2048
    remat: str | None = "full"
    loss_chunk: int = 64

    def __post_init__(self) -> None:
        require_positive(
            "full fine-tuning",
            learning_rate=self.learning_rate,
            epochs=self.epochs,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            max_length=self.max_length,
        )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.moments_dtype not in MOMENT_DTYPES:
            raise ValueError(
                f"moments_dtype must be one of {sorted(MOMENT_DTYPES)}, got {self.moments_dtype!r}"
            )


def _adam(cfg: FinetuneConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm), optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    )


def _in_moments(tree: Any, cfg: FinetuneConfig) -> Any:
    return jax.tree.map(lambda x: x.astype(MOMENT_DTYPES[cfg.moments_dtype]), tree)


def init_optimizer(base: nnx.State, cfg: FinetuneConfig) -> Any:
    """AdamW's state for `base`: moments of its shapes in `moments_dtype` (call under jit to place it)."""
    return _adam(cfg).init(_in_moments(base, cfg))


def optimizer_shardings(base_sh: Any, abstract_base: Any, cfg: FinetuneConfig, mesh: Mesh) -> Any:
    """The optimizer state's shardings: every moment like its weight, the step count replicated."""
    state = jax.eval_shape(functools.partial(init_optimizer, cfg=cfg), abstract_base)
    return optax.tree_utils.tree_map_params(
        _adam(cfg),
        lambda _, sh: sh,
        state,
        base_sh,
        transform_non_params=lambda _: NamedSharding(mesh, PartitionSpec()),
    )


def finetune_step(
    base: nnx.State,
    opt_state: Any,
    tokens: jax.Array,
    loss_mask: jax.Array,
    step: jax.Array,
    hparams: AdapterHparams,
    *,
    graphdef: nnx.GraphDef,
    cfg: FinetuneConfig,
) -> tuple[nnx.State, Any, jax.Array, jax.Array]:
    """One optimizer step over `grad_accum` micro-batches tokens, loss_mask [A, B, T] -> (base, opt_state, mean
    loss, finite). A non-finite loss or gradient leaves the weights and moments unchanged (`finite` False)."""
    grad_fn = jax.value_and_grad(
        lambda b, t, m: mean_token_loss(None, b, graphdef, t, m, cfg.remat, cfg.loss_chunk)
    )

    def micro(carry: tuple, xs: tuple) -> tuple[tuple, None]:
        loss_sum, grads = carry
        loss, g = grad_fn(base, *xs)
        return (loss_sum + loss, jax.tree.map(lambda a, b: a + b.astype(a.dtype), grads, g)), None

    zeros = _in_moments(jax.tree.map(jnp.zeros_like, base), cfg)
    (loss_sum, grads), _ = jax.lax.scan(micro, (jnp.zeros((), jnp.float32), zeros), (tokens, loss_mask))
    accum = tokens.shape[0]
    grads = jax.tree.map(lambda g: g / accum, grads)
    updates, new_state = _adam(cfg).update(grads, opt_state)
    lr = learning_rate_at(step, hparams, "linear")
    new_base = jax.tree.map(
        lambda p, u: (p - lr * (u + cfg.weight_decay * p.astype(u.dtype))).astype(p.dtype), base, updates
    )
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(optax.global_norm(grads))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    return keep(new_base, base), keep(new_state, opt_state), loss_sum / accum, finite


def rows_spec(mesh: Mesh, rows: int) -> NamedSharding:
    """Micro-batches [A, B, T]: the B rows over every device of (`data`, `fsdp`) when they divide B, over `fsdp`
    alone when it does, else replicated (each device then computes every row)."""
    for axes in (("data", "fsdp"), ("fsdp",), ("data",)):
        size = int(np.prod([mesh.shape[a] for a in axes]))
        if size > 1 and rows % size == 0:
            return NamedSharding(mesh, PartitionSpec(None, axes))
    return NamedSharding(mesh, PartitionSpec())


def finetune_program(
    mesh: Mesh, graphdef: nnx.GraphDef, cfg: FinetuneConfig, base_sh: Any, opt_sh: Any, rows: int
) -> Callable:
    """`(base, opt_state, tokens [A, B, T], loss_mask, step, hparams) -> (base, opt_state, loss, finite)`, the
    weights and moments in their fsdp shardings (both donated)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    row = rows_spec(mesh, rows)
    return jax.jit(
        functools.partial(finetune_step, graphdef=graphdef, cfg=cfg),
        in_shardings=(base_sh, opt_sh, row, row, replicated, replicated),
        out_shardings=(base_sh, opt_sh, replicated, replicated),
        donate_argnums=(0, 1),
    )


def schedule(num_steps: int, cfg: FinetuneConfig) -> AdapterHparams:
    """The peak rate, step count and warmup steps (ceil of `warmup_ratio` × steps, HF's rounding) as scalars."""
    warmup = int(np.ceil(cfg.warmup_ratio * num_steps))
    return AdapterHparams(np.float32(cfg.learning_rate), np.int32(num_steps), np.int32(warmup))


def step_batches(
    encoded: list[EncodedExample], cfg: FinetuneConfig, seed: int, pad_id: int, bucket: int = 128
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The examples of every epoch (each epoch in its own seeded order) as optimizer steps of `grad_accum` ×
    `batch_size` rows: [(tokens int32 [A, B, T], loss_mask f32 [A, B, T])], T the step's longest example
    rounded up to `bucket` (so few shapes compile). The last step's missing rows are padding with no loss."""
    rng = np.random.default_rng(seed)
    rows = cfg.grad_accum * cfg.batch_size
    order = [int(j) for _ in range(cfg.epochs) for j in rng.permutation(len(encoded))]
    steps = []
    for start in range(0, len(order), rows):
        chunk = [encoded[j] for j in order[start : start + rows]]
        t = round_up(max(len(x.ids) for x in chunk), bucket)
        tokens = np.full((rows, t), pad_id, np.int32)
        mask = np.zeros((rows, t), np.float32)
        for i, x in enumerate(chunk):
            tokens[i, : len(x.ids)], mask[i, : len(x.ids)] = x.ids, x.mask
        shape = (cfg.grad_accum, cfg.batch_size, t)
        steps.append((tokens.reshape(shape), mask.reshape(shape)))
    return steps
