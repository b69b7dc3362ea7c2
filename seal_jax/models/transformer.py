"""Llama / Qwen2 decoder in Flax NNX, layers stacked on a leading axis.

Parameters follow the flat layout of `loading.py` (linear weights `[in, out]`, layers stacked on axis 0). Training
runs the layers under `lax.scan`, so compile time does not grow with depth; cached decoding unrolls them over
per-layer slices (see `Transformer.__call__`). The model is used functionally (docs/design.md#model-models):

    graphdef, lora, base = nnx.split(model, nnx.LoRAParam, nnx.Param)
    hidden, cache = forward(graphdef, base, lora, tokens, positions)      # inside jit / vmap

`lora` may be `None` with the graphdef of a model built without LoRA (`graphdef_for(cfg, None)`): the base state is
the same pytree either way.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seal_jax.models.config import ModelConfig
from seal_jax.models.lora import TARGETS, LoraConfig, target_shape

Array = jax.Array
# How the training path rematerializes each layer in the backward: "full" recomputes the whole layer from its
# input; "save_matmuls" keeps the outputs of the weight matmuls (dots without batch dimensions: q, k, v, o, gate,
# up) and recomputes only the cheap rest (norms, RoPE, attention scores; under vmap also the LoRA dots, which then
# carry a batch dimension). None stores every activation.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_matmuls": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
LayerSlices = tuple[tuple[dict[str, Array], dict[str, tuple[Array, Array]]], ...]
# Which kernels the model's program uses. "xla_cpu": the XLA:CPU workarounds (row sums as matrix-vector products
# in the norm and softmax backwards, bf16 weights sliced as uint16 bits in the layer scan), each measured faster on
# XLA:CPU (docs/design.md). "plain": the model as written, for
# TPU and GPU, whose compilers need none of them. `kernels_for` picks by platform.
Kernels = Literal["xla_cpu", "plain"]


def kernels_for(platform: str) -> Kernels:
    """The kernel set for a device platform ("cpu", "tpu", "gpu"/"cuda"/"rocm")."""
    return "xla_cpu" if platform == "cpu" else "plain"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Per layer, keys as one [B*Hkv, hd, S] array and values as one [B*Hkv, S, hd], and `positions` int32
    [B, S]: the position id of each slot's token, -1 for an empty slot or a padding token. The cache is f32 like
    the activations with "xla_cpu" kernels (XLA:CPU has no fast bf16 batched dots), and in the weights' dtype
    with "plain" ones (`Transformer.cache_dtype`): a bf16 cache halves the largest buffer of self-edit sampling
    on an accelerator (Qwen2.5-7B, 16 rows × 8.7k slots: 16 → 8 GB).

    Row b*Hkv + h holds head h of batch row b. In these layouts one-query attention is two plain batched
    matmuls over the cache as stored (keys stored [S, hd] made the score dot 4× slower); merging B into the rows
    keeps a size-1 B from becoming a reshape between the in-place write and that read (with one, XLA copied
    every layer's cache at every decode step).

    Every row writes the same slots (`write_at`), so a batch of prompts is stored left-padded."""

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    positions: Array

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, length: int, dtype: Any = jnp.float32) -> KVCache:
        rows = batch * cfg.num_kv_heads
        layers = range(cfg.num_layers)
        return cls(
            tuple(jnp.zeros((rows, cfg.head_dim, length), dtype) for _ in layers),
            tuple(jnp.zeros((rows, length, cfg.head_dim), dtype) for _ in layers),
            jnp.full((batch, length), -1, jnp.int32),
        )


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """[hd/2] rotary inverse frequencies, with Llama-3 scaling when configured."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq.astype(np.float32)
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def row_dot(a: Array, b: Array) -> Array:
    """Σ a·b over the last axis, kept as a size-1 axis: [..., n] -> [..., 1].

    A matrix-vector product, not `sum(a * b)`: XLA:CPU's YNNPACK runs that fused multiply-reduce of two arrays
    ≈ 10× slower (611 µs against 61 µs at 432 × 576), and the backward of a norm or a softmax is made of it."""
    return (a * b) @ jnp.ones((a.shape[-1], 1), a.dtype)


def rms_norm(x: Array, weight: Array, eps: float, kernels: Kernels = "plain") -> Array:
    """RMSNorm over the last axis, computed in f32; with "xla_cpu" kernels its backward reduces with `row_dot`."""
    return _rms_norm_cpu(x, weight, eps) if kernels == "xla_cpu" else _rms_norm_fwd(x, weight, eps)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm_cpu(x: Array, weight: Array, eps: float) -> Array:
    return _rms_norm_fwd(x, weight, eps)[0]


def _rms_norm_fwd(x: Array, weight: Array, eps: float) -> tuple[Array, tuple[Array, Array, Array]]:
    x32 = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * inv_rms * weight.astype(jnp.float32)).astype(x.dtype), (x, weight, inv_rms)


def _rms_norm_bwd(eps: float, res: tuple[Array, Array, Array], g: Array) -> tuple[Array, Array]:
    x, weight, inv_rms = res
    x32, g32 = x.astype(jnp.float32), g.astype(jnp.float32)
    gw = g32 * weight.astype(jnp.float32)
    dx = inv_rms * gw - x32 * inv_rms**3 * row_dot(x32, gw) / x.shape[-1]
    dweight = jnp.sum(g32 * x32 * inv_rms, axis=tuple(range(x.ndim - 1)))
    return dx.astype(x.dtype), dweight.astype(weight.dtype)


_rms_norm_cpu.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def softmax(x: Array, kernels: Kernels = "plain") -> Array:
    """Softmax over the last axis; with "xla_cpu" kernels its backward reduces with `row_dot`."""
    return _softmax_cpu(x) if kernels == "xla_cpu" else jax.nn.softmax(x, axis=-1)


@jax.custom_vjp
def _softmax_cpu(x: Array) -> Array:
    return _softmax_fwd(x)[0]


def _softmax_fwd(x: Array) -> tuple[Array, Array]:
    y = jax.nn.softmax(x, axis=-1)
    return y, y


def _softmax_bwd(y: Array, g: Array) -> tuple[Array]:
    return (y * (g - row_dot(y, g)),)


_softmax_cpu.defvjp(_softmax_fwd, _softmax_bwd)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate-half RoPE. x: [B, T, H, hd]; cos, sin: [B, T, hd]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos[:, :, None, :] + rotated * sin[:, :, None, :]).astype(x.dtype)


def weight_dot(x: Array, w: Array) -> Array:
    """x [..., in] @ w [in, out] -> f32 [..., out], with the operands in w's dtype.

    bf16 weights take the bf16-in / f32-accumulate path (the MXU's native mode; 2× the f32 matmul rate on a CPU
    with avx512_bf16), forward and backward (`matmul_einsum`), while the activations between matmuls stay f32.
    """
    return matmul_einsum("...i,io->...o", x, w, w.dtype)


def matmul_einsum(spec: str, a: Array, b: Array, dtype: Any) -> Array:
    """`einsum(spec, a, b)` on operands cast to `dtype`, accumulated and returned in f32; for a non-f32 `dtype`
    the backward matmuls run in `dtype` too: the output's cotangent is rounded (as under torch autocast), else
    JAX's transpose would meet an f32 cotangent and XLA would cast the operands up to f32."""
    y = jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)
    return y if dtype == jnp.float32 else _round_cotangent(y, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _round_cotangent(y: Array, dtype: Any) -> Array:
    """Identity; its cotangent is cast to `dtype`."""
    return y


def _round_cotangent_fwd(y: Array, dtype: Any) -> tuple[Array, None]:
    return y, None


def _round_cotangent_bwd(dtype: Any, _: None, g: Array) -> tuple[Array]:
    return (g.astype(dtype),)


_round_cotangent.defvjp(_round_cotangent_fwd, _round_cotangent_bwd)


def _as_bits(w: Array) -> Array:
    """A bf16 array as its uint16 bits, other dtypes as they are. The layer scan slices its weights as bits:
    XLA:CPU runs a bf16 dynamic-slice in f32, and so converted every stacked bf16 weight to f32 and back at every
    step (a K=1 × 48-token step: 0.90 → 0.79 s; K=9: 4.62 → 4.46 s per 4 steps)."""
    return jax.lax.bitcast_convert_type(w, jnp.uint16) if w.dtype == jnp.bfloat16 else w


def with_layer_bits(base: nnx.State, kernels: Kernels) -> nnx.State:
    """`base` with its stacked bf16 layer weights as uint16 bits, for a loop that runs the training forward at
    every step: the layer scan takes them as they are. Else each step copies all of them (270 MB for
    SmolLM2-135M; 2.6% of a K=9 × 48 step's kernel time, 3-5% of a K=1 step's wall time), since XLA does not
    hoist the conversion out of the step's `lax.switch` branch."""
    if kernels != "xla_cpu":
        return base
    return jax.tree_util.tree_map_with_path(
        lambda path, w: _as_bits(w) if path[0] == jax.tree_util.DictKey("layers") else w, base
    )


def _from_bits(w: Array) -> Array:
    """The inverse of `_as_bits` (the weights are floats, so uint16 can only be bf16 bits)."""
    return jax.lax.bitcast_convert_type(w, jnp.bfloat16) if w.dtype == jnp.uint16 else w


def _project(
    x: Array, weights: dict[str, Array], lora: dict[str, tuple[Array, Array]], target: str, scale: float
) -> Array:
    """x @ W (+ scale * x @ A @ B when `target` is adapted). x: [..., in] -> f32 [..., out]."""
    y = weight_dot(x, weights[TARGETS[target][0]])
    if target in lora:
        a, b = lora[target]
        y = y + (scale * ((x @ a) @ b)).astype(y.dtype)
    return y


def _attention(
    q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array, dtype: Any, kernels: Kernels
) -> Array:
    """Causal GQA attention. q: [B,T,Hq,hd], k/v: [B,S,Hkv,hd], q_pos [B,T], k_pos [B,S] -> f32 [B,T,Hq*hd].

    A key is visible to a query when 0 <= k_pos <= q_pos (negative positions mark padding and empty slots).
    The two matmuls take `dtype` operands (in training, the weights' dtype: bf16 halves the bytes of their layout
    copies, ≈ 8% of a bf16 training step) and accumulate in f32; the softmax is f32."""
    b, t, hq, hd = q.shape
    hkv = k.shape[2]
    q = q.reshape(b, t, hkv, hq // hkv, hd)
    scores = matmul_einsum("btkgd,bskd->bkgts", q, k, dtype) / math.sqrt(hd)
    k_pos = k_pos[:, None, None, None, :]
    mask = (k_pos >= 0) & (k_pos <= q_pos[:, None, None, :, None])
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = softmax(scores, kernels)
    out = matmul_einsum("bkgts,bskd->btkgd", probs, v, dtype)
    return out.reshape(b, t, hq * hd)


def _decode_attention(q: Array, k: Array, v: Array, q_pos: Array, k_pos: Array) -> Array:
    """One query per row as batched dots over the cache in its stored layout (operands in the cache's dtype,
    f32 accumulation and softmax).

    q: [B,1,Hq,hd]; k: [B*Hkv,hd,S]; v: [B*Hkv,S,hd] (see `KVCache`); q_pos [B,1]; k_pos [B,S] -> [B,1,Hq*hd]."""
    b, _, hq, hd = q.shape
    rows = k.shape[0]
    q = q.reshape(rows, -1, hd)  # query heads grouped under their key/value head
    scores = jnp.einsum("ngd,nds->ngs", q.astype(k.dtype), k, preferred_element_type=jnp.float32) / math.sqrt(
        hd
    )
    visible = jnp.repeat((k_pos >= 0) & (k_pos <= q_pos), rows // b, axis=0)  # [B*Hkv, S]
    scores = jnp.where(visible[:, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("ngs,nsd->ngd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, 1, hq * hd)


def _decoder_layer(
    cfg: ModelConfig,
    scale: float,
    x: Array,
    w: dict[str, Array],
    lora: dict[str, tuple[Array, Array]],
    cos: Array,
    sin: Array,
    positions: Array,
    cache: tuple[Array, Array, Array, Array] | None,
    kernels: Kernels,
) -> tuple[Array, tuple[Array, Array] | None]:
    """One pre-norm decoder block. x: [B, T, D]; cache: None, or this layer's (k, v) (see `KVCache`), the
    slots' positions [B, S] (already holding `positions`) and the first slot to write, a shared scalar: the new
    keys/values go to slots [write_at, write_at + T) in place, and the updated (k, v) are returned."""
    b, t, _ = x.shape
    h = rms_norm(x, w["attn_norm"], cfg.rms_norm_eps, kernels)
    q = _project(h, w, lora, "q", scale)
    k = _project(h, w, lora, "k", scale)
    v = _project(h, w, lora, "v", scale)
    if cfg.qkv_bias:
        q, k, v = q + w["bq"], k + w["bk"], v + w["bv"]
    q = apply_rope(q.reshape(b, t, cfg.num_heads, cfg.head_dim), cos, sin)
    k = apply_rope(k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim), cos, sin)
    v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
    if cache is None:
        attn, new_cache = _attention(q, k, v, positions, positions, w["wq"].dtype, kernels), None
    else:
        attn, new_cache = _cached_attention(q, k, v, positions, cache, w["wq"].dtype, kernels)
    x = x + _project(attn, w, lora, "o", scale)
    h = rms_norm(x, w["mlp_norm"], cfg.rms_norm_eps, kernels)
    gated = jax.nn.silu(_project(h, w, lora, "gate", scale)) * _project(h, w, lora, "up", scale)
    return x + _project(gated, w, lora, "down", scale), new_cache


def _cached_attention(
    q: Array,
    k: Array,
    v: Array,
    positions: Array,
    cache: tuple[Array, Array, Array, Array],
    dtype: Any,
    kernels: Kernels,
) -> tuple[Array, tuple[Array, Array]]:
    """Writes k/v [B,T,Hkv,hd] to slots [write_at, write_at + T) of the layer's cache (k, v as in `KVCache`, the
    slots' positions [B,S], write_at) in place, then attends. -> (f32 [B,T,Hq*hd], the updated (k, v)).

    One token (T == 1) attends over the whole cache. Several tokens are a prompt's prefill into an empty cache
    (`sampling.generate`), so they attend over their own keys only, exactly as in training: attending over all
    S slots would build [B, H, T, S] scores for slots that are still empty (Qwen2.5-7B, 16 prompts of 512 tokens
    with 8192 new: 8 GB per layer, more than a v5e chip holds), and read the cache back in another layout."""
    k_cache, v_cache, k_pos, write_at = cache
    t, hd = k.shape[1], k.shape[3]
    k_all = jax.lax.dynamic_update_slice(
        k_cache, k.transpose(0, 2, 3, 1).reshape(-1, hd, t).astype(k_cache.dtype), (0, 0, write_at)
    )
    v_all = jax.lax.dynamic_update_slice(
        v_cache, v.transpose(0, 2, 1, 3).reshape(-1, t, hd).astype(v_cache.dtype), (0, write_at, 0)
    )
    if t == 1:
        return _decode_attention(q, k_all, v_all, positions, k_pos), (k_all, v_all)
    return _attention(q, k, v, positions, positions, dtype, kernels), (k_all, v_all)


class LoraPair(nnx.Module):
    """One target's adapter: `a` [L, in, r] (random), `b` [L, r, out] (zero)."""

    def __init__(self, layers: int, fan_in: int, fan_out: int, rank: int, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(fan_in)  # PEFT's kaiming-uniform(a=sqrt(5)) bound for A
        self.a = nnx.LoRAParam(
            jax.random.uniform(rngs.params(), (layers, fan_in, rank), jnp.float32, -bound, bound)
        )
        self.b = nnx.LoRAParam(jnp.zeros((layers, rank, fan_out), jnp.float32))


class Adapters(nnx.Module):
    """The LoRA pairs of every target in `LoraConfig.targets`, as attributes named by target."""

    def __init__(self, cfg: ModelConfig, lora: LoraConfig, rngs: nnx.Rngs):
        for target in lora.targets:
            fan_in, fan_out = target_shape(cfg, target)
            setattr(self, target, LoraPair(cfg.num_layers, fan_in, fan_out, lora.rank, rngs))


class DecoderStack(nnx.Module):
    """All decoder layers' weights, stacked on a leading L axis (names as in `loading.py`)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, dtype: Any):
        n, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        normal = nnx.initializers.normal(0.02)

        def dense(fan_in: int, fan_out: int) -> nnx.Param:
            return nnx.Param(normal(rngs.params(), (n, fan_in, fan_out), dtype))

        self.attn_norm = nnx.Param(jnp.ones((n, d), dtype))
        self.mlp_norm = nnx.Param(jnp.ones((n, d), dtype))
        self.wq, self.wk = dense(d, cfg.q_dim), dense(d, cfg.kv_dim)
        self.wv, self.wo = dense(d, cfg.kv_dim), dense(cfg.q_dim, d)
        self.w_gate, self.w_up, self.w_down = dense(d, f), dense(d, f), dense(f, d)
        if cfg.qkv_bias:
            self.bq = nnx.Param(jnp.zeros((n, cfg.q_dim), dtype))
            self.bk = nnx.Param(jnp.zeros((n, cfg.kv_dim), dtype))
            self.bv = nnx.Param(jnp.zeros((n, cfg.kv_dim), dtype))


class Transformer(nnx.Module):
    """Decoder-only LM. `__call__` returns final hidden states; `logits` applies the (tied) head."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        lora: LoraConfig | None = None,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        kernels: Kernels | None = None,
    ):
        self.config = cfg
        self.lora_config = lora
        self.kernels = kernels or kernels_for(jax.default_backend())
        self.embed = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), dtype)
        )
        self.layers = DecoderStack(cfg, rngs, dtype)
        self.final_norm = nnx.Param(jnp.ones((cfg.hidden_size,), dtype))
        if not cfg.tie_word_embeddings:
            self.lm_head = nnx.Param(
                nnx.initializers.normal(0.02)(rngs.params(), (cfg.hidden_size, cfg.vocab_size), dtype)
            )
        if lora is not None:
            self.lora = Adapters(cfg, lora, rngs)

    def __call__(
        self,
        tokens: Array,
        positions: Array,
        cache: KVCache | None = None,
        *,
        write_at: Array | int = 0,
        layers: LayerSlices | None = None,
        remat: str | None = None,
    ) -> tuple[Array, KVCache | None]:
        """tokens, positions: int [B, T] -> hidden [B, T, D] and the updated cache.

        Without a cache the layers run under `lax.scan` (training; `remat` names a `REMAT_POLICIES` entry).
        With one, the tokens go to cache slots [write_at, write_at + T) (`write_at` a scalar shared by the rows)
        and the layers are unrolled over `layers` (default `self.layer_slices()`). A decode loop should slice
        once, before the loop: slicing inside it copies every layer's weights at every step."""
        cfg = self.config
        x = self.embed[...][tokens].astype(jnp.float32)
        angles = positions[..., None].astype(jnp.float32) * jnp.asarray(rope_inv_freq(cfg))
        angles = jnp.concatenate([angles, angles], axis=-1)
        cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
        scale = self.lora_config.scale if self.lora_config is not None else 0.0
        kernels = self.kernels

        if cache is None:

            def body(x: Array, layer: tuple) -> tuple[Array, None]:
                w, lw = layer
                w = jax.tree.map(_from_bits, w)
                return _decoder_layer(cfg, scale, x, w, lw, cos, sin, positions, None, kernels)[0], None

            if remat is not None:
                body = jax.checkpoint(body, policy=REMAT_POLICIES[remat])
            weights, lora_weights = self._stacked_layers()
            if kernels == "xla_cpu":
                weights = jax.tree.map(_as_bits, weights)
            x, _ = jax.lax.scan(body, x, (weights, lora_weights))
            return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps, kernels), None

        slot_positions = jax.lax.dynamic_update_slice(
            cache.positions, positions.astype(jnp.int32), (0, write_at)
        )
        new_k, new_v = [], []
        for i, (w, lw) in enumerate(layers or self.layer_slices()):
            layer_cache = (cache.k[i], cache.v[i], slot_positions, write_at)
            x, (k, v) = _decoder_layer(cfg, scale, x, w, lw, cos, sin, positions, layer_cache, kernels)
            new_k.append(k)
            new_v.append(v)
        new_cache = KVCache(tuple(new_k), tuple(new_v), slot_positions)
        return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps, kernels), new_cache

    def _stacked_layers(self) -> tuple[dict[str, Array], dict[str, tuple[Array, Array]]]:
        """(base weights, LoRA (a, b) per adapted target), every leaf stacked on a leading L axis."""
        weights = {k: v[...] for k, v in vars(self.layers).items() if isinstance(v, nnx.Param)}
        targets = self.lora_config.targets if self.lora_config is not None else ()
        lora = {t: (getattr(self.lora, t).a[...], getattr(self.lora, t).b[...]) for t in targets}
        return weights, lora

    def layer_slices(self) -> LayerSlices:
        """Per-layer (base weights, LoRA) slices of the stacked parameters, for the unrolled cached path."""
        stacked = self._stacked_layers()
        return tuple(jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(self.config.num_layers))

    def cache_dtype(self) -> Any:
        """The KV cache's dtype (`KVCache`): f32 with "xla_cpu" kernels, else the weights'."""
        return jnp.float32 if self.kernels == "xla_cpu" else self.embed[...].dtype

    def head(self) -> Array:
        """The output projection [D, V] (the transposed embedding when tied)."""
        return self.embed[...].T if self.config.tie_word_embeddings else self.lm_head[...]

    def forward_logits(self, tokens: Array) -> Array:
        """Full-sequence logits: int [B, T] -> f32 [B, T, V] (tests and small batches only)."""
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        hidden, _ = self(tokens, positions)
        return weight_dot(hidden, self.head())

    @classmethod
    def from_params(cls, cfg: ModelConfig, params: dict[str, Any]) -> Transformer:
        """A LoRA-free model holding `params` (flat layout of `loading.py`), built without random init."""
        dtype = np.asarray(params["embed"]).dtype
        graphdef, base = nnx.split(nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(0), dtype=dtype)), nnx.Param)
        nnx.replace_by_pure_dict(base, unflatten(params))
        return nnx.merge(graphdef, base)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"layers/wq": x} -> {"layers": {"wq": x}} (arrays converted with `jnp.asarray`)."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return nested


@functools.cache
def graphdef_for(cfg: ModelConfig, lora: LoraConfig | None, kernels: Kernels | None = None) -> nnx.GraphDef:
    """The (static) graph definition of a model with this config, built without allocating weights; `kernels`
    defaults to the default backend's (`kernels_for`)."""
    abstract = nnx.eval_shape(lambda: Transformer(cfg, lora=lora, rngs=nnx.Rngs(0), kernels=kernels))
    return nnx.split(abstract, nnx.LoRAParam, nnx.Param)[0]


def init_lora(cfg: ModelConfig, lora: LoraConfig, key: Array) -> nnx.State:
    """A fresh adapter state (A random, B zero) for one model."""
    adapters = Adapters(cfg, lora, nnx.Rngs(params=key))
    flat = nnx.to_flat_state(nnx.state(adapters, nnx.LoRAParam))
    return nnx.from_flat_state([(("lora", *path), var) for path, var in flat])


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_lora_k(cfg: ModelConfig, lora: LoraConfig, keys: Array) -> nnx.State:
    """K fresh adapters at once: keys [K] -> state with a leading K axis on every leaf (one compiled call)."""
    return jax.vmap(lambda key: init_lora(cfg, lora, key))(keys)


def merge_model(graphdef: nnx.GraphDef, base: nnx.State, lora: nnx.State | None) -> Transformer:
    """The module view of (graphdef, base[, lora]) states; `lora` None needs a LoRA-free graphdef."""
    return nnx.merge(graphdef, base) if lora is None else nnx.merge(graphdef, lora, base)


def forward(
    graphdef: nnx.GraphDef,
    base: nnx.State,
    lora: nnx.State | None,
    tokens: Array,
    positions: Array,
    cache: KVCache | None = None,
    *,
    write_at: Array | int = 0,
    remat: str | None = None,
) -> tuple[Array, KVCache | None, Array]:
    """Pure forward: -> (hidden [B, T, D], updated cache, head [D, V]). Call inside jit/vmap."""
    model = merge_model(graphdef, base, lora)
    hidden, cache = model(tokens, positions, cache, write_at=write_at, remat=remat)
    return hidden, cache, model.head()
