"""Accelerator facts: per-chip peak bf16 FLOP/s, HBM bandwidth and capacity, and TPU topologies by their
user-facing names (`v5e-8`) mapped to the arguments of `jax.experimental.topologies.get_topology_desc`."""

from __future__ import annotations

import dataclasses

from seal_jax.errors import UserInputError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip (one JAX device: v4 and v5p run their two TensorCores as one megacore device)."""

    name: str
    bf16_flops: float  # peak dense bf16 FLOP/s
    hbm_bandwidth: float  # bytes/s
    hbm_bytes: int


# TPU: Google Cloud TPU docs, "TPU versions" pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e), per chip.
# GPU: NVIDIA A100 and H100 datasheets, SXM parts, dense (no sparsity) bf16 tensor-core peak.
CHIPS = {
    "v4": Chip("TPU v4", 275e12, 1200e9, 32 * GIB),
    "v5e": Chip("TPU v5e", 197e12, 819e9, 16 * GIB),
    "v5p": Chip("TPU v5p", 459e12, 2765e9, 95 * GIB),
    "v6e": Chip("TPU v6e", 918e12, 1640e9, 32 * GIB),
    "a100-80gb": Chip("A100 80GB SXM", 312e12, 2039e9, 80 * 10**9),
    "h100-80gb": Chip("H100 80GB SXM", 989e12, 3350e9, 80 * 10**9),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice: `get_topology_desc(platform="tpu", topology_name, chip_config_name, chips_per_host_bounds)`."""

    name: str
    chip: str  # key of CHIPS
    topology_name: str
    chip_config_name: str
    chips_per_host_bounds: tuple[int, int, int]
    devices: int = 0  # compile for the first `devices` chips of the topology (0: all of them)


# Host bounds as the slices ship: v5e-8 / v6e-8 are one host of 8 chips, larger v5e slices have 4 chips per host,
# v4-8 / v5p-8 are one host of 4 (megacore) chips. A single chip is one device of a v5e:2x2: a one-device program
# has no collectives, and the "v5e:1x1" name would need hand-set 1x1x1 host bounds.
TOPOLOGIES = {
    t.name: t
    for t in (
        Topology("v5e-1", "v5e", "v5e:2x2", "default", (2, 2, 1), devices=1),
        Topology("v5e-4", "v5e", "v5e:2x2", "default", (2, 2, 1)),
        Topology("v5e-8", "v5e", "v5e:2x4", "default", (2, 4, 1)),
        Topology("v5e-32", "v5e", "v5e:4x8", "default", (2, 2, 1)),
        Topology("v4-8", "v4", "v4:2x2x1", "megacore", (2, 2, 1)),
        Topology("v5p-8", "v5p", "v5p:2x2x1", "megacore", (2, 2, 1)),
        Topology("v6e-8", "v6e", "v6e:2x4", "default", (2, 4, 1)),
    )
}


def topology_devices(name: str) -> list:
    """The (deviceless) TPU devices of topology `name` (a TOPOLOGIES key or a raw name such as `v5e:2x2`)."""
    from jax.experimental import topologies

    t = TOPOLOGIES.get(name)
    if t is None:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=name).devices)
    devices = topologies.get_topology_desc(
        platform="tpu",
        topology_name=t.topology_name,
        chip_config_name=t.chip_config_name,
        chips_per_host_bounds=t.chips_per_host_bounds,
        wrap=(False, False, False),
    ).devices
    return list(devices[: t.devices or None])


def chip_of(name: str) -> Chip:
    """The chip of a topology (`v5e-8` or a raw `v5e:2x2`)."""
    t = TOPOLOGIES.get(name)
    chip = t.chip if t else name.partition(":")[0]
    if chip not in CHIPS:
        raise UserInputError(
            f"unknown topology {name!r}: expected one of {sorted(TOPOLOGIES)} or e.g. v5e:2x2"
        )
    return CHIPS[chip]
