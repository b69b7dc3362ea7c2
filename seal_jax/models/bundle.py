"""A loaded model ready for the functional engine: config, base state and tokenizer."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seal_jax.models.config import ModelConfig
from seal_jax.models.loading import load_pretrained
from seal_jax.models.lora import LoraConfig
from seal_jax.models.tiny import tiny_model
from seal_jax.models.transformer import Transformer, graphdef_for


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """`base` is the nnx.Param state every jitted function takes as an argument (never a closed-over constant)."""

    config: ModelConfig
    base: nnx.State
    tokenizer: Any
    name: str

    def graphdef(self, lora: LoraConfig | None = None) -> nnx.GraphDef:
        return graphdef_for(self.config, lora)

    def with_base(self, base: nnx.State) -> LoadedModel:
        return dataclasses.replace(self, base=base)


def load_model(name_or_path: str, dtype: Any = jnp.float32) -> LoadedModel:
    """Loads an HF checkpoint dir, a GGUF file, the embedded default (`smollm2-135m-instruct`) or a
    `tiny-random-*` test model."""
    if name_or_path.startswith("tiny-random-"):
        cfg, base, tokenizer = tiny_model(name_or_path)
        return LoadedModel(cfg, jax.tree.map(lambda x: x.astype(dtype), base), tokenizer, name_or_path)
    pretrained = load_pretrained(name_or_path, dtype=dtype)
    model = Transformer.from_params(pretrained.config, pretrained.params)
    _, base = nnx.split(model, nnx.Param)
    return LoadedModel(pretrained.config, base, pretrained.tokenizer, name_or_path)


def base_from_params(cfg: ModelConfig, params: dict[str, Any]) -> nnx.State:
    """The base state for flat-layout `params` (tests and tiny models)."""
    return nnx.split(Transformer.from_params(cfg, params), nnx.Param)[1]
