"""bf16 base weights: bf16-operand / f32-accumulate matmuls forward and backward, f32 activations."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.inner import mean_token_loss
from seal_jax.engine.sampling import SamplingConfig, generate_jit
from seal_jax.models.bundle import load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import init_lora, merge_model
from tests.helpers.model_files import find_equations

LORA = LoraConfig(rank=4, alpha=8, targets=("q", "v", "down"))
TOKENS = jnp.asarray([[5, 17, 3, 99, 250, 7, 42, 8], [1, 2, 3, 4, 5, 6, 7, 8]], jnp.int32)


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_model("tiny-random-llama", jnp.bfloat16)


def _logits(model, tokens):
    return merge_model(model.graphdef(), model.base, None).forward_logits(tokens)


def _lora(model):
    lora = init_lora(model.config, LORA, jax.random.key(0))
    return jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), lora)


def _loss_fn(model):
    return functools.partial(
        mean_token_loss,
        base=model.base,
        graphdef=model.graphdef(LORA),
        tokens=TOKENS,
        loss_mask=jnp.ones(TOKENS.shape, jnp.float32),
        remat="save_matmuls",
        loss_chunk=4,
    )


def _gradient_dots(model):
    """The dot_general equations of the LoRA gradient's jaxpr (forward, remat and backward)."""
    return find_equations(jax.make_jaxpr(jax.grad(_loss_fn(model)))(_lora(model)).jaxpr)


def test_bf16_weights_keep_f32_activations_and_match_f32(tiny, tiny_bf16):
    lora = _lora(tiny)
    f32_loss, f32_grads = jax.value_and_grad(_loss_fn(tiny))(lora)
    bf16_loss, bf16_grads = jax.value_and_grad(_loss_fn(tiny_bf16))(lora)
    assert tiny_bf16.base["layers"]["wq"].dtype == jnp.bfloat16
    assert _logits(tiny_bf16, TOKENS).dtype == jnp.float32
    np.testing.assert_allclose(bf16_loss, f32_loss, rtol=2e-2)
    for g32, g16 in zip(jax.tree.leaves(f32_grads), jax.tree.leaves(bf16_grads), strict=True):
        assert g16.dtype == jnp.float32
        scale = float(jnp.abs(g32).max())
        assert float(jnp.abs(g16 - g32).max()) < 0.05 * scale


def test_bf16_backward_matmuls_never_cast_weights_up(tiny_bf16):
    """Every matmul that touches a bf16 operand, in the forward and the backward, has only bf16 operands
    (else XLA converts the weights to f32 at every step and runs the f32 kernel)."""
    dots = [tuple(v.aval.dtype for v in eqn.invars) for eqn in _gradient_dots(tiny_bf16)]
    bf16 = [d for d in dots if jnp.bfloat16 in d]
    assert len(bf16) >= 2 * 7  # forward and backward of the 7 weight matmuls (the scanned layer body)
    assert all(d == (jnp.bfloat16, jnp.bfloat16) for d in bf16), set(bf16)


def test_bf16_attention_matmuls_run_in_bf16(tiny_bf16):
    """The training attention's matmuls (the dots with batch dimensions: scores and values, forward and
    backward) take bf16 operands like the weight matmuls."""
    batched = [eqn for eqn in _gradient_dots(tiny_bf16) if eqn.params["dimension_numbers"][1][0]]
    assert len(batched) >= 2 + 4  # scores and values; their backward: dq, dk, dprobs, dv
    assert all(tuple(v.aval.dtype for v in eqn.invars) == (jnp.bfloat16,) * 2 for eqn in batched)


def test_bf16_training_step_keeps_no_f32_copy_of_the_weights(tiny_bf16):
    """The compiled gradient holds no f32 array of a stacked weight's shape (XLA:CPU upcast the layer scan's
    bf16 weight slices, converting every weight to f32 and back at every step, until the scan sliced bits)."""
    hlo = jax.jit(jax.grad(_loss_fn(tiny_bf16))).lower(_lora(tiny_bf16)).compile().as_text()
    stacked = {w.shape for w in jax.tree.leaves(tiny_bf16.base["layers"]) if w.ndim == 3}
    assert stacked
    for shape in stacked:
        assert f"f32[{','.join(map(str, shape))}]" not in hlo


def test_bf16_cached_decoding_equals_full_forward(tiny_bf16):
    model = tiny_bf16
    prompt = TOKENS[:, :4]
    cfg = SamplingConfig(max_new=4)
    out, _ = generate_jit(
        model.base,
        None,
        prompt,
        jnp.full((2,), 4, jnp.int32),
        jax.random.key(0),
        graphdef=model.graphdef(),
        cfg=cfg,
    )
    tokens = prompt
    for _ in range(4):
        nxt = jnp.argmax(_logits(model, tokens)[:, -1], -1).astype(jnp.int32)
        tokens = jnp.concatenate([tokens, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, tokens[:, 4:])
