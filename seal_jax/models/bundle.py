"""A model ready for the functional engine: config, tokenizer and base state, placed on a device mesh.

The base state is created abstractly (`nnx.eval_shape`) and each device's shard is filled from the checkpoint
(`jax.make_array_from_callback`), so no full copy of the weights ever exists on one device or in host memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from seal_jax.engine import distributed, sharding
from seal_jax.models.config import ModelConfig
from seal_jax.models.loading import CheckpointSource, open_checkpoint
from seal_jax.models.lora import LoraConfig
from seal_jax.models.tiny import tiny_model
from seal_jax.models.transformer import Kernels, Transformer, graphdef_for, kernels_for


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """`base` is the nnx.Param state every jitted function takes as an argument (never a closed-over constant);
    `kernels` the kernel set of every program built for it (`transformer.Kernels`)."""

    config: ModelConfig
    base: nnx.State
    tokenizer: Any
    name: str
    kernels: Kernels = "xla_cpu"

    def graphdef(self, lora: LoraConfig | None = None) -> nnx.GraphDef:
        return graphdef_for(self.config, lora, self.kernels)

    def with_base(self, base: nnx.State) -> LoadedModel:
        return dataclasses.replace(self, base=base)


def abstract_base(cfg: ModelConfig, dtype: Any) -> nnx.State:
    """The base state's shapes and dtypes (`jax.ShapeDtypeStruct` leaves), allocating nothing."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0), dtype=dtype)), nnx.Param)[1]


def _leaf_name(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def sharded_from_checkpoint(source: CheckpointSource, dtype: Any, mesh: Mesh) -> nnx.State:
    """The base state on `mesh` (`sharding.BASE_RULES`), each device's shard read from `source` on its own."""
    abstract = abstract_base(source.config, dtype)
    shardings = sharding.base_shardings(mesh, abstract)

    def fill(path: tuple, leaf: jax.ShapeDtypeStruct, placement: jax.sharding.Sharding) -> jax.Array:
        name = _leaf_name(path)
        last: dict[tuple, np.ndarray] = {}  # devices holding the same block (replicas) share one read

        def block(index: tuple[slice, ...]) -> np.ndarray:
            key = tuple((s.start, s.stop) for s in index)
            if key not in last:
                last.clear()
                last[key] = source.read(name, index, np.dtype(dtype))
            return last[key]

        # Waiting for each leaf's transfers bounds the host blocks alive at once to one leaf's: device copies
        # run asynchronously, and on a busy host they lagged far enough to hold most of the model twice.
        return jax.make_array_from_callback(leaf.shape, placement, block).block_until_ready()

    return jax.tree_util.tree_map_with_path(fill, abstract, shardings)


def default_mesh() -> Mesh:
    """One device: what a model loads onto when the caller names no mesh."""
    return sharding.make_mesh(sharding.MeshConfig(), jax.devices()[:1])


def load_model(name_or_path: str, dtype: Any = jnp.float32, mesh: Mesh | None = None) -> LoadedModel:
    """Loads an HF checkpoint dir, a GGUF file, the embedded default (`smollm2-135m-instruct`) or a
    `tiny-random-*` test model onto `mesh` (default: one device), sharded by `sharding.BASE_RULES`."""
    mesh = mesh or default_mesh()
    kernels = kernels_for(mesh.devices.flat[0].platform)
    if name_or_path.startswith("tiny-random-"):
        # Made whole on the host and then placed: a few KB, and eager init keeps the weights bit-identical to
        # the ones every earlier run of these test models used (XLA fuses a jitted init's rounding differently).
        cfg, base, tokenizer = tiny_model(name_or_path)
        base = jax.tree.map(lambda x: np.asarray(x.astype(dtype)), base)
        base = jax.tree.map(distributed.global_array, base, sharding.base_shardings(mesh, base))
        return LoadedModel(cfg, base, tokenizer, name_or_path, kernels)
    source = open_checkpoint(name_or_path)
    return LoadedModel(
        source.config, sharded_from_checkpoint(source, dtype, mesh), source.tokenizer, name_or_path, kernels
    )
