import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.loss import chunked_nll_sum


def plain_nll_sum(hidden, head, targets, mask):
    logp = jax.nn.log_softmax(hidden @ head, axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0] * mask)


# 4-token chunks; 6-token chunks (the largest divisor of 12 not above 7); one chunk.
@pytest.mark.parametrize("chunk", [4, 7, 32])
def test_chunked_nll_and_its_gradient_equal_the_plain_loss(chunk):
    keys = jax.random.split(jax.random.key(0), 4)
    hidden = jax.random.normal(keys[0], (3, 12, 8))
    head = jax.random.normal(keys[1], (8, 50))
    targets = jax.random.randint(keys[2], (3, 12), 0, 50)
    mask = (jax.random.uniform(keys[3], (3, 12)) > 0.3).astype(jnp.float32)
    value, grad = jax.value_and_grad(chunked_nll_sum)(hidden, head, targets, mask, chunk)
    ref_value, ref_grad = jax.value_and_grad(plain_nll_sum)(hidden, head, targets, mask)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-5)
    assert float(jnp.abs(grad[mask == 0]).max()) == 0.0  # unmasked positions get no gradient
    # Under a scaled cotangent (the engine divides by the token count) the gradient scales with it.
    scaled = jax.grad(lambda h: 0.25 * chunked_nll_sum(h, head, targets, mask, chunk))(hidden)
    np.testing.assert_allclose(scaled, 0.25 * ref_grad, atol=1e-5)
    # The head is frozen: no gradient flows to it.
    head_grad = jax.grad(lambda w: chunked_nll_sum(hidden, w, targets, mask, chunk))(head)
    assert float(jnp.abs(head_grad).max()) == 0.0


def test_gradient_runs_two_head_matmuls_not_three():
    """Forward logits and the hidden-state gradient, both in the forward pass; no recompute in the backward."""
    hidden, head = jnp.ones((2, 8, 4)), jnp.ones((4, 50))
    targets, mask = jnp.zeros((2, 8), jnp.int32), jnp.ones((2, 8))
    jaxpr = jax.make_jaxpr(jax.grad(chunked_nll_sum), static_argnums=4)(hidden, head, targets, mask, 8)

    def head_matmuls(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general" and 50 in (v for x in eqn.invars for v in x.aval.shape):
                n += 1
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                n += head_matmuls(sub)
        return n

    assert head_matmuls(jaxpr.jaxpr) == 2


@pytest.mark.parametrize(("t", "chunks"), [(208, 4), (200, 4), (64, 1), (48, 1), (72, 2)])
def test_chunks_are_the_largest_divisor_of_the_length_not_above_chunk(t, chunks):
    """T = 208 runs 4 chunks of 52 tokens (gcd(64, 208) = 16 would run 13), T = 200 4 of 50, T = 72 2 of 36."""
    hidden, head = jnp.zeros((1, t, 8)), jnp.zeros((8, 50))
    targets, mask = jnp.zeros((1, t), jnp.int32), jnp.ones((1, t))
    jaxpr = jax.make_jaxpr(chunked_nll_sum, static_argnums=4)(hidden, head, targets, mask, 64)
    (scan,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert scan.params["length"] == chunks
