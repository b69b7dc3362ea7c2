"""Next-token cross-entropy computed in sequence chunks, so no [B, T, vocab] logits tensor is ever materialized."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from seal_jax.models.transformer import weight_dot

Array = jax.Array


def chunked_nll_sum(hidden: Array, head: Array, targets: Array, mask: Array, chunk: int) -> Array:
    """Sum of masked token NLLs; differentiable in `hidden` only (the head is frozen: `stop_gradient`).

    hidden: [B, T, D] final hidden states; head: [D, V]; targets: int [B, T] (the next tokens);
    mask: [B, T] weights (0 where no loss). Chunks are as long as the largest divisor of T not above `chunk`
    (T itself if shorter): at T = 208 and `chunk` 64 that is 52, where `gcd` would give 16-token chunks whose
    head matmuls run far from the matmul peak.
    Each chunk's gradient w.r.t. its hidden states is computed in the forward pass while its [B, chunk, V]
    logits exist (`_chunk_nll`), so the backward never recomputes them: two head matmuls per chunk, not three.
    """
    b, t, _d = hidden.shape
    chunk = max(d for d in range(1, chunk + 1) if t % d == 0) if t > chunk else t
    n = t // chunk
    head = jax.lax.stop_gradient(head)

    def body(total: Array, xs: tuple[Array, Array, Array]) -> tuple[Array, None]:
        h, y, m = xs
        return total + _chunk_nll(h, head, y, m), None

    split = lambda x: jnp.moveaxis(x.reshape(b, n, chunk, *x.shape[2:]), 1, 0)
    total, _ = jax.lax.scan(
        body, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(mask.astype(jnp.float32)))
    )
    return total


def _nll_and_hidden_grad(h: Array, head: Array, y: Array, m: Array) -> tuple[Array, Array]:
    """(Σ m·NLL, its gradient w.r.t. h) for one chunk. h: [B, C, D], y, m: [B, C]."""
    logits = weight_dot(h, head)
    target_logit = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    shift = jnp.max(logits, axis=-1, keepdims=True)
    # One exp per logit, kept for both the log-sum-exp and the softmax: the exponentials are used twice, so XLA
    # computes them in an elementwise loop, where `logsumexp` + a second `exp` fused them into a YNNPACK
    # reduction 5× slower than the loop (profile, K=9 × 48 tokens: ≈ 60 → 20 ms a step for the exps, their sum
    # and the softmax cast).
    exps = jnp.exp(logits - shift)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    nll = jnp.sum((shift[..., 0] + jnp.log(total[..., 0]) - target_logit) * m)
    is_target = jnp.arange(logits.shape[-1]) == y[..., None]
    dlogits = (exps / total - is_target) * m[..., None]  # softmax - onehot
    return nll, weight_dot(dlogits, head.T).astype(h.dtype)


@jax.custom_vjp
def _chunk_nll(h: Array, head: Array, y: Array, m: Array) -> Array:
    return _nll_and_hidden_grad(h, head, y, m)[0]


def _chunk_nll_bwd(dh: Array, g: Array) -> tuple[Array, None, None, None]:
    return g * dh, None, None, None  # head, targets and mask get no gradient


_chunk_nll.defvjp(_nll_and_hidden_grad, _chunk_nll_bwd)  # forward residual: the hidden-state gradient


def shift_targets(tokens: Array, loss_mask: Array) -> tuple[Array, Array]:
    """Targets = tokens shifted left by one; the mask moves with them (position t predicts token t+1).

    tokens, loss_mask: [B, T] -> targets [B, T], mask [B, T] (the last position never has a target).
    """
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    mask = jnp.concatenate([loss_mask[:, 1:], jnp.zeros_like(loss_mask[:, :1])], axis=1)
    return targets, mask
