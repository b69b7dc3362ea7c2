"""The kernel switch: "xla_cpu" programs carry the XLA:CPU workarounds (custom-VJP rms_norm/softmax, bf16 layer
weights sliced as uint16 bits), "plain" programs (TPU, GPU) carry none of them."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from seal_jax.engine.inner import mean_token_loss
from seal_jax.models.bundle import load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import graphdef_for, init_lora, kernels_for, with_layer_bits

LORA = LoraConfig(rank=4, alpha=8.0, targets=("q", "v"))
CPU_BACKWARDS = {"_rms_norm_bwd", "_softmax_bwd"}


def eqns(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs nested in its equations (scan bodies, cond branches, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from eqns(inner)


def custom_backwards(jaxpr) -> set[str]:
    """The names of the backward rules of the custom-VJP calls in `jaxpr`."""
    names = set()
    for eqn in eqns(jaxpr):
        if eqn.primitive.name.startswith("custom_vjp_call"):
            names.update(re.findall(r"Core: (\w+)", str(eqn.params["bwd"])))
    return names


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_model("tiny-random-llama", jnp.bfloat16)  # bf16: the layer weights are sliced as bits


def jaxprs(model, kernels: str):
    """(forward, training): the jaxprs of one step's loss and of its loss + LoRA gradient, as the inner loop
    builds them for `kernels` (bf16 layer weights as bits under "xla_cpu", remat saving the matmuls)."""
    graphdef = graphdef_for(model.config, LORA, kernels)
    base = with_layer_bits(model.base, kernels)
    lora = init_lora(model.config, LORA, jax.random.key(0))
    tokens = jnp.asarray([[5, 17, 3, 99, 250, 7, 42, 8], [1, 2, 3, 4, 5, 6, 7, 8]], jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.float32)

    def loss(lora, base):
        return mean_token_loss(lora, base, graphdef, tokens, mask, "save_matmuls", 8)

    return jax.make_jaxpr(loss)(lora, base).jaxpr, jax.make_jaxpr(jax.value_and_grad(loss))(lora, base).jaxpr


def row_sum_dots(jaxpr) -> int:
    """Matrix-vector products [..., n] @ [n, 1]: the custom backwards' row sums (`transformer.row_dot`). The
    differentiated program inlines the backward rules, so they are recognized by these."""
    return sum(
        1 for e in eqns(jaxpr) if e.primitive.name == "dot_general" and e.outvars[0].aval.shape[-1] == 1
    )


def bitcasts(jaxpr) -> int:
    return sum(1 for e in eqns(jaxpr) if e.primitive.name == "bitcast_convert_type")


def test_xla_cpu_kernels_use_the_custom_backwards_and_layer_bits(tiny_bf16):
    forward, training = jaxprs(tiny_bf16, "xla_cpu")
    assert custom_backwards(forward) >= CPU_BACKWARDS
    # Two norms in the scanned layer body, the final norm, the attention softmax.
    assert row_sum_dots(training) == 4
    assert bitcasts(training) > 0


def test_plain_kernels_use_neither(tiny_bf16):
    forward, training = jaxprs(tiny_bf16, "plain")
    assert not custom_backwards(forward) & CPU_BACKWARDS
    assert custom_backwards(
        forward
    )  # the walk does see custom VJPs here (the bf16 matmuls' cotangent rounding)
    assert row_sum_dots(training) == 0
    assert bitcasts(training) == 0


def test_kernels_follow_the_platform():
    assert kernels_for("cpu") == "xla_cpu"
    assert kernels_for("tpu") == kernels_for("gpu") == "plain"
    assert load_model("tiny-random-llama").kernels == "xla_cpu"  # picked by the mesh's platform (a CPU here)
