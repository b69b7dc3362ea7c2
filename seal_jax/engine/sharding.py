"""Meshes and shardings: the adapter axis K on `data`, base weights by logical-axis rules on `fsdp`/`tensor`.

The runtime (`engine/runtime.py`) compiles every phase with these shardings. On one device every spec collapses
to replication, so the same code runs unchanged on a laptop, a GPU and a TPU pod slice.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")

# Base parameter name (regex over the flat name) -> logical axes of its dims. First match wins.
BASE_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"^embed$", ("vocab", "embed")),
    (r"^lm_head$", ("embed", "vocab")),
    (r"^final_norm$", (None,)),
    (r"^layers/(attn_norm|mlp_norm)$", ("layers", None)),
    (r"^layers/(wq|wk|wv|w_gate|w_up)$", ("layers", "embed", "heads")),
    (r"^layers/(wo|w_down)$", ("layers", "heads", "embed")),
    (r"^layers/b[qkv]$", ("layers", "heads")),
)
# Logical axis -> mesh axis (MaxText style; "heads" also stands for the MLP width).
LOGICAL_TO_MESH = {"vocab": "tensor", "embed": "fsdp", "heads": "tensor", "layers": None, "adapters": "data"}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Devices per mesh axis; -1 on one axis takes all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: list | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh with Auto axis types (Explicit mode breaks FSDP-style matmuls)."""
    devices = devices or jax.devices()
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(AXES, sizes, strict=True))} does not match {len(devices)} devices")
    return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _fit(mesh: Mesh, shape: tuple[int, ...], axes: tuple[str | None, ...]) -> PartitionSpec:
    """Logical axes -> PartitionSpec, replicating any dim the mesh axis size does not divide."""
    spec = []
    for dim, logical in zip(shape, axes, strict=False):
        mesh_axis = LOGICAL_TO_MESH.get(logical) if logical else None
        ok = mesh_axis is not None and dim % mesh.shape[mesh_axis] == 0
        spec.append(mesh_axis if ok else None)
    return PartitionSpec(*spec)


def base_shardings(mesh: Mesh, base: nnx.State) -> Any:
    """A NamedSharding per base leaf, from `BASE_RULES` (unmatched names are replicated)."""

    def rule(path: tuple, leaf: Any) -> NamedSharding:
        name = jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")
        axes = next((a for pattern, a in BASE_RULES if re.search(pattern, name)), ())
        return NamedSharding(mesh, _fit(mesh, leaf.shape, axes[: leaf.ndim]))

    return jax.tree_util.tree_map_with_path(rule, base)


def adapter_sharding(mesh: Mesh) -> NamedSharding:
    """For leading-K-axis pytrees (adapters, batches, hparams, stats): K on `data`, the rest replicated.

    Used as a pytree prefix, so K must be a multiple of the `data` axis size (`chunk_k` is padded to one).
    """
    return NamedSharding(mesh, PartitionSpec("data"))
