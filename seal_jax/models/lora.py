"""LoRA adapters over the stacked decoder weights.

An adapter for target `t` is a pair `A: [L, in, r]`, `B: [L, r, out]` (leading L = layers); the adapted weight is
`W + (alpha / rank) * A @ B`. A is random, B is zero, so a fresh adapter leaves the model unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seal_jax.models.config import ModelConfig

# LoRA target name -> (our stacked weight name, PEFT/HF module name).
TARGETS: dict[str, tuple[str, str]] = {
    "q": ("wq", "self_attn.q_proj"),
    "k": ("wk", "self_attn.k_proj"),
    "v": ("wv", "self_attn.v_proj"),
    "o": ("wo", "self_attn.o_proj"),
    "gate": ("w_gate", "mlp.gate_proj"),
    "up": ("w_up", "mlp.up_proj"),
    "down": ("w_down", "mlp.down_proj"),
}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Rank, alpha and target projections (names from `TARGETS`) of a LoRA adapter."""

    rank: int = 32
    alpha: float = 64.0
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown LoRA targets {unknown}: expected a subset of {list(TARGETS)}")
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a finite number > 0, got {self.alpha}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def target_shape(cfg: ModelConfig, target: str) -> tuple[int, int]:
    """(in, out) features of the projection that `target` adapts."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    return {
        "q": (d, cfg.q_dim),
        "k": (d, cfg.kv_dim),
        "v": (d, cfg.kv_dim),
        "o": (cfg.q_dim, d),
        "gate": (d, f),
        "up": (d, f),
        "down": (f, d),
    }[target]


def merge_lora(base: Any, lora: Any, cfg: LoraConfig) -> Any:
    """Folds one adapter into the base weights: W += (alpha/r) A @ B for every target. Returns a new state.

    base: nnx.State of the Transformer's Params; lora: nnx.State {"lora": {target: {"a", "b"}}} (no K axis).
    """
    weights = base.to_pure_dict()
    adapters = lora.to_pure_dict()["lora"]
    for target in cfg.targets:
        name = TARGETS[target][0]
        w = weights["layers"][name]
        delta = cfg.scale * jnp.einsum("lir,lro->lio", adapters[target]["a"], adapters[target]["b"])
        weights["layers"][name] = (w + delta).astype(w.dtype)
    merged = jax.tree.map(lambda x: x, base)
    nnx.replace_by_pure_dict(merged, weights)
    return merged
