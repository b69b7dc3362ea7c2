"""Model invariants: KV-cache decoding, LoRA identity at B = 0, merge == unmerged forward."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.models.lora import LoraConfig, merge_lora
from seal_jax.models.transformer import KVCache, forward, init_lora, rms_norm, row_dot, softmax

TOKENS = jnp.asarray([[5, 17, 3, 99, 250, 7, 42, 8], [1, 2, 3, 4, 5, 6, 7, 8]], jnp.int32)
POSITIONS = jnp.broadcast_to(jnp.arange(8), (2, 8))


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, base, lora):
    hidden, _, head = forward(graphdef, base, lora, TOKENS, POSITIONS)
    return hidden @ head


def logits(model, lora, lora_cfg=None):
    return _logits(model.graphdef(lora_cfg), model.base, lora)


@pytest.mark.parametrize("which", ["tiny", "tiny_qwen"])
def test_kv_cache_decoding_equals_full_forward(which, request):
    model = request.getfixturevalue(which)
    full = logits(model, None)
    cache = KVCache.zeros(model.config, 2, 12)
    step = jax.jit(forward, static_argnums=0)
    hidden, cache, head = step(
        model.graphdef(), model.base, None, TOKENS[:, :3], POSITIONS[:, :3], cache, write_at=0
    )
    steps = [hidden @ head]
    for t in range(3, 8):
        hidden, cache, _ = step(
            model.graphdef(),
            model.base,
            None,
            TOKENS[:, t : t + 1],
            POSITIONS[:, t : t + 1],
            cache,
            write_at=t,
        )
        steps.append(hidden @ head)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert (jnp.argmax(jnp.concatenate(steps, axis=1), -1) == jnp.argmax(full, -1)).all()


def test_fresh_lora_is_identity(tiny):
    cfg = LoraConfig(rank=4, alpha=8, targets=("q", "k", "v", "o", "gate", "up", "down"))
    lora = init_lora(tiny.config, cfg, jax.random.key(0))
    assert float(jnp.abs(lora["lora"]["q"]["a"][...]).max()) > 0  # A is random, B zero
    np.testing.assert_array_equal(logits(tiny, lora, cfg), logits(tiny, None))


def test_merged_adapter_equals_unmerged_forward(tiny):
    cfg = LoraConfig(rank=4, alpha=8, targets=("q", "v", "o", "down"))
    lora = init_lora(tiny.config, cfg, jax.random.key(0))
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), lora)
    adapted = logits(tiny, lora, cfg)
    assert float(jnp.abs(adapted - logits(tiny, None)).max()) > 1e-3  # the adapter does something
    merged = tiny.with_base(merge_lora(tiny.base, lora, cfg))
    np.testing.assert_allclose(logits(merged, None), adapted, atol=1e-4)


def _autodiff_rms_norm(x, weight, eps):
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + eps) * weight).astype(x.dtype)


@pytest.mark.parametrize(
    ("ours", "plain"),
    [
        (lambda x, w: rms_norm(x, w, 1e-5, "xla_cpu"), lambda x, w: _autodiff_rms_norm(x, w, 1e-5)),
        (lambda x, w: softmax(x * w, "xla_cpu"), lambda x, w: jax.nn.softmax(x * w, axis=-1)),
    ],
    ids=["rms_norm", "softmax"],
)
def test_hand_written_backwards_equal_autodiff(ours, plain):
    """rms_norm's and softmax's custom backwards of the "xla_cpu" kernels (row sums as matrix-vector products)
    give autodiff's gradients, for the input and the weight."""
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 5, 48))
    w = 1.0 + 0.1 * jax.random.normal(kw, (48,))
    g = jax.random.normal(kg, (3, 5, 48))
    y, vjp = jax.vjp(ours, x, w)
    y_ref, vjp_ref = jax.vjp(plain, x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(vjp(g), vjp_ref(g), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_row_dot_is_a_matrix_vector_product():
    """The row sums of a product are a dot (XLA:CPU runs a fused multiply-reduce of two arrays ≈ 10× slower)."""
    a, b = jnp.arange(12.0).reshape(3, 4), jnp.ones((3, 4)) * 2
    np.testing.assert_allclose(row_dot(a, b), jnp.sum(a * b, -1, keepdims=True))
    jaxpr = jax.make_jaxpr(row_dot)(a, b).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns if e.primitive.name in ("dot_general", "reduce_sum")] == [
        "dot_general"
    ]
