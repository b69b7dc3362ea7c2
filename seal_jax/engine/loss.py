"""Next-token cross-entropy computed in sequence chunks, so no [B, T, vocab] logits tensor is ever materialized."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def chunked_nll_sum(hidden: Array, head: Array, targets: Array, mask: Array, chunk: int) -> Array:
    """Sum of masked token NLLs.

    hidden: [B, T, D] final hidden states; head: [D, V]; targets: int [B, T] (the next tokens);
    mask: [B, T] weights (0 where no loss). Chunks are `gcd(chunk, T)` tokens long (T itself if shorter).
    Each chunk's [B, chunk, V] logits are rematerialized in the backward pass instead of stored.
    """
    b, t, _d = hidden.shape
    chunk = math.gcd(chunk, t) if t > chunk else t
    n = t // chunk

    @jax.checkpoint
    def chunk_nll(h: Array, y: Array, m: Array) -> Array:
        logits = (h @ head).astype(jnp.float32)
        target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
        return jnp.sum((jax.nn.logsumexp(logits, axis=-1) - target_logit) * m)

    def body(total: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, None]:
        return total + chunk_nll(*xs), None

    split = lambda x: jnp.moveaxis(x.reshape(b, n, chunk, *x.shape[2:]), 1, 0)
    total, _ = jax.lax.scan(
        body, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(mask.astype(jnp.float32)))
    )
    return total


def shift_targets(tokens: Array, loss_mask: Array) -> tuple[Array, Array]:
    """Targets = tokens shifted left by one; the mask moves with them (position t predicts token t+1).

    tokens, loss_mask: [B, T] -> targets [B, T], mask [B, T] (the last position never has a target).
    """
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    mask = jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)
    return targets, mask
