"""Analytic FLOPs and HBM bytes of each program, and a roofline time per chip.

XLA's `cost_analysis()` counts a `scan`/`while_loop` body once, so the loops' trip counts are applied here instead,
to a transformer model counted by hand:
- forward, per token: 2 × (weight-matmul params + LoRA params) + 4 × layers × q_dim × context (scores and
  values; the implementation computes the full masked T × T attention in training and reads the whole KV cache,
  `P + max_new` slots, at every decode step);
- backward over a frozen base: activation gradients only (2 × weights, 2 × attention) plus the LoRA's two
  gradients; remat "full" adds one forward (`inner.remat_policy` decides per step size);
- bytes: the base's matmul weights once per forward or backward pass (a decode step reads them once for all rows
  and all K adapters), the KV cache (f32) every decode step, the LoRAs (f32) and, in training, their gradients
  and Adam moments; activations are not counted.
Work and bytes are split evenly over the slice's chips (ideal sharding) and collectives are not modelled, so the
times are lower bounds: the time of a phase is max(FLOPs / peak, bytes / bandwidth) per chip.
"""

from __future__ import annotations

import dataclasses

from seal_jax.aot.chips import Chip
from seal_jax.models.config import ModelConfig
from seal_jax.models.lora import LoraConfig

F32 = 4
KV_CACHE_BYTES = F32  # `transformer.KVCache` holds f32 keys and values


@dataclasses.dataclass(frozen=True)
class Work:
    """FLOPs and HBM bytes of a whole call, over all chips."""

    flops: float
    bytes: float

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes)

    def __mul__(self, n: float) -> Work:
        return Work(self.flops * n, self.bytes * n)


def _dims(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection."""
    d, q, kv, f = cfg.hidden_size, cfg.q_dim, cfg.kv_dim, cfg.intermediate_size
    return {
        "q": (d, q),
        "k": (d, kv),
        "v": (d, kv),
        "o": (q, d),
        "gate": (d, f),
        "up": (d, f),
        "down": (f, d),
    }


def weight_params(cfg: ModelConfig) -> int:
    """Matmul weights one token goes through: every projection of every layer and the LM head."""
    per_layer = sum(i * o for i, o in _dims(cfg).values())
    return cfg.num_layers * per_layer + cfg.hidden_size * cfg.vocab_size


def lora_params(cfg: ModelConfig, lora: LoraConfig | None) -> int:
    if lora is None:
        return 0
    dims = _dims(cfg)
    return cfg.num_layers * sum(lora.rank * sum(dims[t]) for t in lora.targets)


def _attention(cfg: ModelConfig, context: int) -> float:
    return 4.0 * cfg.num_layers * cfg.q_dim * context


def forward(cfg: ModelConfig, lora: LoraConfig | None, tokens: int, context: int, weight_bytes: int) -> Work:
    """A forward over `tokens` tokens attending to `context` positions, reading the weights once."""
    per_token = 2.0 * (weight_params(cfg) + lora_params(cfg, lora)) + _attention(cfg, context)
    return Work(tokens * per_token, weight_params(cfg) * weight_bytes)


def decode_step(
    cfg: ModelConfig, lora: LoraConfig | None, rows: int, context: int, adapters: int, weight_bytes: int
) -> Work:
    """One token for `rows` rows (over `adapters` LoRAs) against a KV cache of `context` slots."""
    step = forward(cfg, lora, rows, context, weight_bytes)
    cache = rows * context * cfg.num_layers * 2 * cfg.kv_dim * KV_CACHE_BYTES
    return step + Work(0.0, cache + adapters * lora_params(cfg, lora) * F32)


def train_step(
    cfg: ModelConfig, lora: LoraConfig, tokens: int, length: int, adapters: int, full_remat: bool, wb: int
) -> Work:
    """One AdamW step of `adapters` LoRAs over `tokens` tokens (all adapters) of sequences of `length`."""
    fwd = forward(cfg, lora, tokens, length, wb)
    bwd = Work(
        tokens * (2.0 * weight_params(cfg) + 4.0 * lora_params(cfg, lora) + 2 * _attention(cfg, length)),
        weight_params(cfg) * wb,
    )
    # params, gradients and two Adam moments, each read and written once
    optimizer = Work(0.0, adapters * lora_params(cfg, lora) * F32 * 8)
    return fwd * (2 if full_remat else 1) + bwd + optimizer


def seconds(work: Work, chip: Chip, chips: int) -> float:
    """Roofline time of `work` split evenly over `chips`."""
    return max(work.flops / chips / chip.bf16_flops, work.bytes / chips / chip.hbm_bandwidth)
