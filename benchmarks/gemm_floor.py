"""The GEMM floor: the time the model's weight matmuls alone take for a batch of `rows` tokens.

One pass multiplies `rows` tokens through every layer's q, k, v, o, gate, up and down weights and the LM head:
the model's real weights, one array per layer, streamed from memory as a decode or training step streams them,
with nothing else of the model between them (a tanh per residual update keeps the values bounded). With
`backward`, the pass adds the input-gradient matmuls, which is all a frozen-base LoRA step multiplies by the
base weights (4·N FLOPs per token). No step over `rows` tokens that runs these weights through the same GEMM
kernels can be faster, so the floor turns a missed speed target into a measured bound: `inner_loop.py` and
`decode.py` time it next to their contenders, in the same process.

    .venv/bin/python -m benchmarks.gemm_floor --dtype bfloat16 --rows 16 64 432 1872 --torch
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks._common import (
    DTYPES,
    add_dtype_arg,
    matmul_params,
    matmul_peak_gflops,
    median,
    table,
    torch_llama,
    torch_matmul_peak_gflops,
)
from seal_jax.models.bundle import LoadedModel, load_model
from seal_jax.models.config import ModelConfig
from seal_jax.models.transformer import weight_dot

Array = jax.Array
MODEL = "smollm2-135m-instruct"
PROJECTIONS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
PASSES_PER_CALL = 4  # one timing = one loop of this many dependent passes (a decode pass is ~10-100 ms)


def gemm_flops(cfg: ModelConfig, rows: int, backward: bool) -> float:
    """FLOPs of one pass: 2·N per token forward, as much again for the input gradients."""
    return (4 if backward else 2) * matmul_params(cfg) * rows


def _matmul_pass(layers: Sequence[dict[str, Array]], embed: Array, x: Array) -> Array:
    """x f32 [rows, D] through each layer's seven weight matmuls, then the tied head -> logits [rows, V]."""
    for w in layers:
        q, k, v = (weight_dot(x, w[n]) for n in ("wq", "wk", "wv"))
        kv = k.mean(-1, keepdims=True) + v.mean(-1, keepdims=True)
        x = jnp.tanh(x + weight_dot(q, w["wo"]) + kv)
        x = jnp.tanh(x + weight_dot(weight_dot(x, w["w_gate"]) * weight_dot(x, w["w_up"]), w["w_down"]))
    return weight_dot(x, embed.T)


def _next_input(layers: Sequence[dict[str, Array]], embed: Array, x: Array, backward: bool) -> Array:
    """One pass and what the next pass starts from: forward, the greedy tokens' embeddings (as the next decode
    step's input); backward, x moved along d/dx of ½‖logits‖² (every matmul forward and its input-gradient
    matmul, no weight gradients). x: f32 [rows, D]."""
    if backward:
        grad = jax.grad(lambda x: 0.5 * jnp.sum(jnp.square(_matmul_pass(layers, embed, x))))(x)
        return x - 1e-3 * grad
    return embed[jnp.argmax(_matmul_pass(layers, embed, x), axis=-1)].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("passes", "backward"))
def gemm_passes(
    layers: Sequence[dict[str, Array]], embed: Array, x: Array, *, passes: int, backward: bool
) -> Array:
    """`passes` dependent passes in one loop, as a decode loop or a training scan runs its steps: the weights
    are loop-invariant operands (XLA:CPU runs a pass over 16 rows ≈ 1.8× faster so than in a call of its own)."""
    return jax.lax.fori_loop(0, passes, lambda _, x: _next_input(layers, embed, x, backward), x)


def layer_weights(model: LoadedModel) -> tuple[list[dict[str, Array]], Array]:
    """Each layer's projection weights as arrays of their own (sliced once, as the decode loop does), and the
    embedding the tied head multiplies by."""
    if not model.config.tie_word_embeddings:
        raise ValueError("the GEMM floor models a tied head (SmolLM2); this model has its own lm_head")
    stacked = model.base["layers"]
    layers = [{n: stacked[n][...][i] for n in PROJECTIONS} for i in range(model.config.num_layers)]
    return layers, model.base["embed"][...]


def jax_gemm_pass(
    model: LoadedModel, rows: int, backward: bool = False, passes: int = PASSES_PER_CALL
) -> Callable[[], float]:
    """A compiled and warmed-up (run once) GEMM pass over `rows` tokens; calling it returns seconds per pass
    (the mean over one loop of `passes` passes)."""
    layers, embed = layer_weights(model)
    x = jax.random.normal(jax.random.key(0), (rows, model.config.hidden_size), jnp.float32)
    fn = functools.partial(gemm_passes, passes=passes, backward=backward)
    jax.block_until_ready(fn(layers, embed, x))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(layers, embed, x))
        return (time.perf_counter() - t0) / passes

    return run


def torch_gemm_pass(torch_model: Any, rows: int) -> Callable[[], float]:
    """The same forward pass in PyTorch (`F.linear` on an HF Llama's own weights, activations in its dtype, as
    HF `generate` runs them); calling it returns seconds per pass."""
    import torch
    from torch.nn import functional as F

    head = torch_model.lm_head.weight
    x0 = torch.randn(rows, head.shape[1], generator=torch.Generator().manual_seed(0)).to(head.dtype)

    def one_pass(x: Any) -> Any:
        for layer in torch_model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            q, k, v = (F.linear(x, p.weight) for p in (att.q_proj, att.k_proj, att.v_proj))
            x = torch.tanh(x + F.linear(q, att.o_proj.weight) + k.mean(-1, True) + v.mean(-1, True))
            hidden = F.linear(x, mlp.gate_proj.weight) * F.linear(x, mlp.up_proj.weight)
            x = torch.tanh(x + F.linear(hidden, mlp.down_proj.weight))
        return F.embedding(F.linear(x, head).argmax(-1), head)

    def run() -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            x = x0
            for _ in range(PASSES_PER_CALL):
                x = one_pass(x)
            return (time.perf_counter() - t0) / PASSES_PER_CALL

    run()
    return run


def timed_median(run: Callable[[], float], repeats: int) -> float:
    return median([run() for _ in range(repeats)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[16, 64, 432, 1872], help="tokens per pass")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median)")
    p.add_argument("--torch", action="store_true", help="also time the forward pass in PyTorch")
    add_dtype_arg(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_model(MODEL, DTYPES[args.dtype])
    torch_model = torch_llama(model) if args.torch else None
    peak, _ = matmul_peak_gflops(dtype=args.dtype)
    torch_peak = torch_matmul_peak_gflops(dtype=args.dtype) if args.torch else float("nan")
    rows_out = []
    for rows in args.rows:
        runs = {
            "forward": jax_gemm_pass(model, rows),
            "forward + input grads": jax_gemm_pass(model, rows, True),
        }
        if torch_model is not None:
            runs["torch forward"] = torch_gemm_pass(torch_model, rows)
        for name, run in runs.items():
            seconds = timed_median(run, args.repeats)
            rate = gemm_flops(model.config, rows, "grads" in name) / seconds / 1e9
            rows_out.append(
                [
                    rows,
                    name,
                    f"{1e3 * seconds:.1f}",
                    f"{rate:.0f}",
                    f"{100 * rate / (torch_peak if 'torch' in name else peak):.0f}%",
                ]
            )
        print(f"rows {rows} done", flush=True)
    print()
    print(table(["rows", "pass", "ms / pass", "GFLOP/s", "of 2048³ peak"], rows_out))
    print(
        f"\n{args.dtype}; {model.config.num_layers} layers × 7 weights + tied head, real weights; medians of "
        f"{args.repeats} calls of {PASSES_PER_CALL} passes; 2048³ peak: jnp.dot {peak:.0f}, torch.mm "
        f"{torch_peak:.0f} GFLOP/s"
    )
    rates = {r[0]: r[3] for r in rows_out if r[1] == "forward"}
    print("RESULT gemm_floor " + " ".join(f"forward_gflops_rows{k}={v}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
