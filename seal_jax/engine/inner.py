"""The inner loop: K self-edits adapted in parallel, each as its own LoRA over one shared frozen base.

Host side (numpy): training examples -> token ids + loss masks -> `[K, S, B, T]` step batches (S = optimizer steps,
shorter adapters masked; T padded to a length bucket). Device side: `adapt` is a `lax.scan` of AdamW steps for one
adapter; `adapt_k = jit(vmap(adapt))` runs K of them with per-adapter learning rate, step count and warmup.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seal_jax.domains.base import TrainExample
from seal_jax.engine.loss import chunked_nll_sum, shift_targets
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import forward

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    """Static settings of the LoRA inner loop (hashable: a jit static argument).

    Defaults are the reference's knowledge-domain loop (SEAL_REFERENCE.md §2.5): r32 α64 on q,v; batch 1; AdamW
    (0.9, 0.999, 1e-8), no weight decay, linear decay without warmup, grad-norm clip 1.0.
    `pad_to` + `pad_in_loss` reproduce the reference's pad-to-2048-with-EOS-labels behaviour for parity runs.
    """

    lora: LoraConfig = LoraConfig()
    batch_size: int = 1
    schedule: Literal["linear", "cosine"] = "linear"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 2048
    length_bucket: int = 64
    step_bucket: int = 8
    loss_chunk: int = 64
    remat: bool = (
        True  # K=15 x T=256 on CPU: peak RSS 9.2 GB -> 3.4 GB at equal or better step time (benchmarks.md)
    )
    pad_to: int | None = None
    pad_in_loss: bool = False

    def __post_init__(self) -> None:
        if self.length_bucket % self.loss_chunk:
            raise ValueError(
                f"length_bucket={self.length_bucket} must be a multiple of loss_chunk={self.loss_chunk}"
            )
        if self.pad_in_loss and self.pad_to is None:
            raise ValueError("pad_in_loss needs pad_to (the reference pads every sequence to a fixed length)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepBatches:
    """tokens: int32 [K, S, B, T]; loss_mask: f32 [K, S, B, T] (1 = this token is a target); active: [K, S]."""

    tokens: Array
    loss_mask: Array
    active: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdapterHparams:
    """Per-adapter arrays [K]: peak learning rate, real optimizer steps (schedule length), warmup steps."""

    learning_rate: Array
    num_steps: Array
    warmup_steps: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdaptStats:
    """losses: [K, S] mean token loss per step (0 on masked steps); nonfinite: [K] the adapter hit NaN/inf
    and was frozen at its last finite state."""

    losses: Array
    nonfinite: Array


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """ids: int32 [n]; mask: f32 [n] (1 where the token is a training target)."""

    ids: np.ndarray
    mask: np.ndarray


def encode_example(
    tokenizer: Any, example: TrainExample, loss_on_all_tokens: bool, max_length: int
) -> EncodedExample:
    """Tokenizes `prompt + completion` (+ EOS) with the loss on the completion (or on everything).

    The split is by text, so no special-token ids are hard-coded. A BOS token is prepended only if the tokenizer
    adds one and the text does not already start with it (the reference trained ARC with a double BOS).
    """
    prompt = tokenizer.encode(example.prompt, add_special_tokens=False) if example.prompt else []
    completion = tokenizer.encode(example.completion, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    if eos is not None and (not completion or completion[-1] != eos):
        completion = [*completion, eos]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer.encode("a", add_special_tokens=True)[:1] == [bos]
    if adds_bos and (prompt or completion)[0] != bos:
        prompt = [bos, *prompt]
    ids = np.asarray(prompt + completion, np.int32)[:max_length]
    mask = np.concatenate([np.full(len(prompt), float(loss_on_all_tokens)), np.ones(len(completion))])
    return EncodedExample(ids, mask[:max_length].astype(np.float32))


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def steps_for(num_examples: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of one adapter: epochs × ceil(examples / batch) (HF Trainer, drop_last False)."""
    return epochs * math.ceil(num_examples / batch_size)


def build_step_batches(
    adapters: Sequence[Sequence[EncodedExample]],
    epochs: Sequence[int],
    seeds: Sequence[int],
    cfg: InnerConfig,
    pad_id: int,
    num_steps_to: int | None = None,
) -> tuple[StepBatches, np.ndarray]:
    """Lays out K adapters' examples as `[K, S, B, T]` step batches; examples are reshuffled every epoch (seeded).

    Returns the batches and the real step count per adapter [K]. S is the longest adapter's step count rounded up
    to `step_bucket` (or `num_steps_to`), T the longest sequence rounded up to `length_bucket` (or `pad_to`).
    """
    steps = np.array(
        [steps_for(len(ex), e, cfg.batch_size) if ex else 0 for ex, e in zip(adapters, epochs, strict=True)],
        np.int32,
    )
    longest = max((len(x.ids) for ex in adapters for x in ex), default=1)
    t = cfg.pad_to if cfg.pad_to is not None else round_up(longest, cfg.length_bucket)
    s = num_steps_to or round_up(int(steps.max(initial=1)), cfg.step_bucket)
    k, b = len(adapters), cfg.batch_size
    tokens = np.full((k, s, b, t), pad_id, np.int32)
    mask = np.zeros((k, s, b, t), np.float32)
    for i, (examples, n_epochs, seed) in enumerate(zip(adapters, epochs, seeds, strict=True)):
        rng = np.random.default_rng(seed)
        order = [j for _ in range(n_epochs if examples else 0) for j in _epoch_order(rng, len(examples), b)]
        for flat, j in enumerate(order):
            if j is None:
                continue
            step, row = divmod(flat, b)
            ex = examples[j]
            tokens[i, step, row, : len(ex.ids)] = ex.ids
            mask[i, step, row, : len(ex.ids)] = ex.mask
            if cfg.pad_in_loss:
                mask[i, step, row, len(ex.ids) :] = 1.0
    active = np.arange(s)[None, :] < steps[:, None]
    return StepBatches(tokens, mask, active), steps


def _epoch_order(rng: np.random.Generator, n: int, batch: int) -> list[int | None]:
    """One epoch's example order, padded with None to whole batches (padding rows carry no loss)."""
    order: list[int | None] = list(rng.permutation(n))
    return order + [None] * (-n % batch)


def learning_rate_at(step: Array, hp: AdapterHparams, schedule: str) -> Array:
    """HF's linear / cosine-with-warmup schedules for one adapter at optimizer step `step` (0-based)."""
    step = step.astype(jnp.float32)
    total = hp.num_steps.astype(jnp.float32)
    warm = hp.warmup_steps.astype(jnp.float32)
    warmup_factor = step / jnp.maximum(warm, 1.0)
    progress = (step - warm) / jnp.maximum(total - warm, 1.0)
    if schedule == "linear":
        decay = jnp.maximum(0.0, 1.0 - progress)
    else:
        decay = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
    return hp.learning_rate * jnp.where(step < warm, warmup_factor, decay)


def _optimizer(cfg: InnerConfig) -> optax.GradientTransformation:
    """AdamW without the learning rate (applied per adapter by `learning_rate_at`)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay),
    )


def mean_token_loss(
    lora: nnx.State,
    base: nnx.State,
    graphdef: nnx.GraphDef,
    tokens: Array,
    loss_mask: Array,
    cfg: InnerConfig,
) -> Array:
    """Mean next-token NLL over the masked targets of one batch. tokens, loss_mask: [B, T]."""
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    hidden, _, head = forward(graphdef, base, lora, tokens, positions, remat=cfg.remat)
    targets, mask = shift_targets(tokens, loss_mask)
    return chunked_nll_sum(hidden, head, targets, mask, cfg.loss_chunk) / jnp.maximum(mask.sum(), 1.0)


def _where_tree(pred: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def adapt(
    lora0: nnx.State,
    base: nnx.State,
    batches: StepBatches,
    hparams: AdapterHparams,
    *,
    graphdef: nnx.GraphDef,
    cfg: InnerConfig,
) -> tuple[nnx.State, AdaptStats]:
    """LoRA SFT of one adapter: a scan over S steps ([S, B, T] batches). Non-finite loss/grads freeze it."""
    tx = _optimizer(cfg)
    grad_fn = jax.value_and_grad(mean_token_loss)

    def step(carry: tuple, xs: tuple) -> tuple[tuple, Array]:
        lora, opt_state, frozen = carry
        tokens, loss_mask, active, i = xs
        loss, grads = grad_fn(lora, base, graphdef, tokens, loss_mask, cfg)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
        )
        updates, new_opt_state = tx.update(grads, opt_state, lora)
        lr = learning_rate_at(i, hparams, cfg.schedule)
        new_lora = jax.tree.map(lambda p, u: p - lr * u, lora, updates)
        apply = active & finite & ~frozen
        carry = (
            _where_tree(apply, new_lora, lora),
            _where_tree(apply, new_opt_state, opt_state),
            frozen | (active & ~finite),
        )
        return carry, jnp.where(active, loss, 0.0)

    steps = jnp.arange(batches.tokens.shape[0])
    init = (lora0, tx.init(lora0), jnp.zeros((), bool))
    (lora, _, frozen), losses = jax.lax.scan(
        step, init, (batches.tokens, batches.loss_mask, batches.active, steps)
    )
    return lora, AdaptStats(losses, frozen)


def vmapped_adapt(graphdef: nnx.GraphDef, cfg: InnerConfig, spmd_axis_name: str | None = None):
    """`adapt` vmapped over a leading K axis of `lora0`, `batches` and `hparams`; `base` is shared."""
    fn = functools.partial(adapt, graphdef=graphdef, cfg=cfg)
    return jax.vmap(fn, in_axes=(0, None, 0, 0), spmd_axis_name=spmd_axis_name)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"), donate_argnums=(0,))
def adapt_k(
    lora0: nnx.State,
    base: nnx.State,
    batches: StepBatches,
    hparams: AdapterHparams,
    *,
    graphdef: nnx.GraphDef,
    cfg: InnerConfig,
) -> tuple[nnx.State, AdaptStats]:
    """jit(vmap(adapt)) on the default device placement (see `sharding.sharded_adapt_k` for a mesh)."""
    return vmapped_adapt(graphdef, cfg)(lora0, base, batches, hparams)
