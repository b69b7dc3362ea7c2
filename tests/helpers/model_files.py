"""Test helpers: random HF-named checkpoints, HF-dir and GGUF writers, and a numpy reference forward.

Deliberately independent of `loading.py`'s name table and of the JAX model: these are what they are tested
against. The numpy forward follows transformers' Llama/Qwen2 modeling code line by line (float64 by default).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from numpy.typing import DTypeLike
from safetensors.numpy import save_file
from transformers.convert_slow_tokenizer import bytes_to_unicode

from seal_jax.models.config import ModelConfig
from seal_jax.models.tokenizer import CONTROL_TOKEN_TYPE, gguf_tokenizer

# A 256-token byte-level BPE vocabulary in GGUF metadata form (fits `tiny_config`'s vocab_size): 3 control
# tokens, the 243 bytes that can occur in UTF-8 (not 0xC0, 0xC1, 0xF5..0xFF), and 10 merges.
_TOY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "r e", "a t", "a n"]
_TOY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_UTF8_BYTES = [b for b in range(256) if b not in (0xC0, 0xC1) and b < 0xF5]
TOY_TOKENS = [
    *_TOY_SPECIALS,
    *(bytes_to_unicode()[b] for b in _UTF8_BYTES),
    *(m.replace(" ", "") for m in _TOY_MERGES),
]
TOY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TOY_TOKENIZER_METADATA: dict[str, Any] = {
    "tokenizer.ggml.model": "gpt2",
    "tokenizer.ggml.pre": "smollm",
    "tokenizer.ggml.tokens": TOY_TOKENS,
    "tokenizer.ggml.token_type": [CONTROL_TOKEN_TYPE] * len(_TOY_SPECIALS)
    + [1] * (len(TOY_TOKENS) - len(_TOY_SPECIALS)),
    "tokenizer.ggml.merges": _TOY_MERGES,
    "tokenizer.ggml.bos_token_id": 1,
    "tokenizer.ggml.eos_token_id": 2,
    "tokenizer.ggml.unknown_token_id": 0,
    "tokenizer.ggml.padding_token_id": 2,
    "tokenizer.ggml.add_bos_token": False,
    "tokenizer.chat_template": TOY_CHAT_TEMPLATE,
}


def toy_tokenizer() -> Any:
    """The `TOY_TOKENIZER_METADATA` tokenizer (a transformers PreTrainedTokenizerFast)."""
    return gguf_tokenizer(TOY_TOKENIZER_METADATA)


def random_hf_params(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights in HF naming and [out, in] shapes, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size

    def linear(fan_out: int, fan_in: int) -> np.ndarray:
        return rng.normal(0.0, fan_in**-0.5, (fan_out, fan_in)).astype(np.float32)

    def vector(n: int, mean: float) -> np.ndarray:
        return (mean + 0.1 * rng.normal(size=n)).astype(np.float32)

    hf = {
        "model.embed_tokens.weight": rng.normal(size=(V, D)).astype(np.float32),
        "model.norm.weight": vector(D, 1),
    }
    if not cfg.tie_word_embeddings:
        hf["lm_head.weight"] = linear(V, D)
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = vector(D, 1)
        hf[p + "post_attention_layernorm.weight"] = vector(D, 1)
        for name, fan_out, fan_in, has_bias in (
            ("self_attn.q_proj", cfg.q_dim, D, cfg.qkv_bias),
            ("self_attn.k_proj", cfg.kv_dim, D, cfg.qkv_bias),
            ("self_attn.v_proj", cfg.kv_dim, D, cfg.qkv_bias),
            ("self_attn.o_proj", D, cfg.q_dim, False),
            ("mlp.gate_proj", F, D, False),
            ("mlp.up_proj", F, D, False),
            ("mlp.down_proj", D, F, False),
        ):
            hf[f"{p}{name}.weight"] = linear(fan_out, fan_in)
            if has_bias:
                hf[f"{p}{name}.bias"] = vector(fan_out, 0)
    return hf


def write_hf_checkpoint(
    path: str | os.PathLike, cfg: ModelConfig, hf_params: Mapping[str, np.ndarray], shards: int = 1
) -> Path:
    """An HF checkpoint dir: config.json, `shards` safetensors files (+ index when sharded), toy tokenizer."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
    names = list(hf_params)
    if shards == 1:
        save_file(dict(hf_params), path / "model.safetensors")
    else:
        weight_map = {}
        for k, group in enumerate(np.array_split(np.array(names), shards), start=1):
            file = f"model-{k:05d}-of-{shards:05d}.safetensors"
            save_file({str(n): hf_params[n] for n in group}, path / file)
            weight_map |= {str(n): file for n in group}
        total = sum(a.nbytes for a in hf_params.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    toy_tokenizer().save_pretrained(path)
    return path


def llama_cpp_permute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`): per head (2, hd/2) -> (hd/2, 2)."""
    return w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_metadata(writer: gguf.GGUFWriter, meta: Mapping[str, Any]) -> None:
    for key, value in meta.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, list(value))


def write_gguf(
    path: str | os.PathLike,
    cfg: ModelConfig,
    hf_params: Mapping[str, np.ndarray],
    tokenizer_metadata: Mapping[str, Any] = TOY_TOKENIZER_METADATA,
) -> Path:
    """A llama GGUF as llama.cpp's converter writes it: Q/K rows permuted, token_embd quantized to Q8_0."""
    if cfg.model_type != "llama" or cfg.vocab_size != len(tokenizer_metadata["tokenizer.ggml.tokens"]):
        raise ValueError("write_gguf needs a llama config whose vocab_size is the tokenizer's")
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    _add_metadata(writer, tokenizer_metadata)
    embed = hf_params["model.embed_tokens.weight"]
    writer.add_tensor(
        "token_embd.weight",
        gguf.quants.quantize(embed, gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    writer.add_tensor("output_norm.weight", hf_params["model.norm.weight"])
    if "lm_head.weight" in hf_params:
        writer.add_tensor("output.weight", hf_params["lm_head.weight"])
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        for ours, theirs in (
            ("attn_norm", "input_layernorm"),
            ("attn_output", "self_attn.o_proj"),
            ("ffn_norm", "post_attention_layernorm"),
            ("ffn_gate", "mlp.gate_proj"),
            ("ffn_up", "mlp.up_proj"),
            ("ffn_down", "mlp.down_proj"),
            ("attn_v", "self_attn.v_proj"),
        ):
            writer.add_tensor(f"blk.{i}.{ours}.weight", hf_params[f"{p}{theirs}.weight"])
        for ours, theirs, heads in (
            ("attn_q", "q_proj", cfg.num_heads),
            ("attn_k", "k_proj", cfg.num_kv_heads),
        ):
            permuted = llama_cpp_permute(hf_params[f"{p}self_attn.{theirs}.weight"], heads)
            writer.add_tensor(f"blk.{i}.{ours}.weight", permuted)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


# ------------------------------------------------------------------------------------ numpy reference forward


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def _inv_freq(cfg: ModelConfig) -> np.ndarray:
    """[hd/2] RoPE frequencies, with transformers' `_compute_llama3_parameters` when rope_scaling is set."""
    inv_freq = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled)


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE on [B, H, T, hd] with [T, hd] tables."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def numpy_reference_logits(
    cfg: ModelConfig, hf_params: Mapping[str, np.ndarray], tokens: np.ndarray, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """[B, T, V] float32 logits of a Llama/Qwen2 decoder from HF-named weights; tokens [B, T] int.

    Computes in `dtype` (float32 is twice as fast on real-size models).
    """
    w = {name: np.asarray(a, dtype) for name, a in hf_params.items()}
    B, T = tokens.shape
    H, Hkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    freqs = np.outer(np.arange(T, dtype=np.float64), _inv_freq(cfg)).astype(dtype)
    cos, sin = np.cos(np.concatenate([freqs, freqs], -1)), np.sin(np.concatenate([freqs, freqs], -1))
    causal = np.tril(np.ones((T, T), dtype=bool))

    def proj(h: np.ndarray, name: str, heads: int) -> np.ndarray:
        out = h @ w[name + ".weight"].T
        if name + ".bias" in w:
            out = out + w[name + ".bias"]
        return out.reshape(B, T, heads, hd).transpose(0, 2, 1, 3)

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = _rope(proj(h, p + "self_attn.q_proj", H), cos, sin)
        k = np.repeat(_rope(proj(h, p + "self_attn.k_proj", Hkv), cos, sin), H // Hkv, axis=1)
        v = np.repeat(proj(h, p + "self_attn.v_proj", Hkv), H // Hkv, axis=1)
        scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd), -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (h @ w[p + "mlp.up_proj.weight"].T))
            @ w[p + "mlp.down_proj.weight"].T
        )
    x = _rms_norm(x, w["model.norm.weight"], cfg.rms_norm_eps)
    tied = cfg.tie_word_embeddings or "lm_head.weight" not in w
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return (x @ head.T).astype(np.float32)


def find_equations(jaxpr: Any, primitive: str = "dot_general") -> list[Any]:
    """The `primitive` equations of a jaxpr and of all its sub-jaxprs (scan bodies, remat, custom_vjp, cond)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == primitive:
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += find_equations(inner, primitive)
    return found
