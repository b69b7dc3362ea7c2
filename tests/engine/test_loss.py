import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.loss import chunked_nll_sum


def plain_nll_sum(hidden, head, targets, mask):
    logp = jax.nn.log_softmax(hidden @ head, axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0] * mask)


@pytest.mark.parametrize("chunk", [4, 6, 32])  # several chunks, gcd(6, 12) = 6, one chunk
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
