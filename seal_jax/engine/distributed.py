"""Process topology and host <-> global data.

On a pod slice the same command runs on every host (a "process"); each drives its local devices and all of them
together form one global mesh. Host-side work (data, prompts, selection) is deterministic from the config, so every
process holds the same host values; only process 0 writes files, and a decision only process 0 can make (what a
file on disk says) reaches the others through `broadcast_json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from seal_jax.errors import UserInputError

T = TypeVar("T")
MODES = ("off", "auto", "explicit")


@dataclasses.dataclass(frozen=True)
class Settings:
    """`cfg.distributed`, checked. mode: "off" (one process), "auto" (`jax.distributed.initialize()` finds the
    cluster: TPU pod slices, SLURM, Open MPI) or "explicit" (coordinator address, process count and this process's
    id from the config: GPU hosts, several CPU processes)."""

    mode: str = "off"
    coordinator_address: str = ""
    num_processes: int = 1
    process_id: int = 0
    initialization_timeout: int = 300
    heartbeat_timeout: int = 60


def parse_settings(section: Any) -> Settings:
    """The `cfg.distributed` ConfigDict (or dict) as `Settings`; a bad value is a one-line `UserInputError`."""
    values = dict(section)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Settings)})
    if unknown:
        raise UserInputError(f"unknown distributed setting(s): {', '.join(unknown)}")
    settings = Settings(**values)
    if settings.mode not in MODES:
        raise UserInputError(f"distributed.mode={settings.mode!r} must be one of {', '.join(MODES)}")
    for name in ("num_processes", "initialization_timeout", "heartbeat_timeout"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserInputError(f"distributed.{name}={value!r} must be an integer >= 1")
    if settings.mode == "explicit":
        host, _, port = settings.coordinator_address.rpartition(":")
        if not host or not port.isdigit():
            raise UserInputError(
                f"distributed.coordinator_address={settings.coordinator_address!r} must be host:port "
                "with mode='explicit'"
            )
        pid = settings.process_id
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < settings.num_processes:
            raise UserInputError(
                f"distributed.process_id={pid!r} must be an integer in [0, {settings.num_processes})"
            )
    return settings


def initialize(section: Any) -> Settings:
    """Sets up `jax.distributed` from `cfg.distributed` (before any backend use). Returns the settings."""
    settings = parse_settings(section)
    if settings.mode == "off":
        return settings
    # CPU devices of different processes only reach each other through gloo (a no-op for TPU/GPU programs).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = {}
    if settings.mode == "explicit":
        explicit = {
            "coordinator_address": settings.coordinator_address,
            "num_processes": settings.num_processes,
            "process_id": settings.process_id,
        }
    # A peer that stops sending heartbeats for heartbeat_timeout seconds ends every process (main.py turns that
    # into a one-line error); without it a collective waiting for a dead peer would wait forever.
    jax.distributed.initialize(
        **explicit,
        initialization_timeout=settings.initialization_timeout,
        heartbeat_timeout_seconds=settings.heartbeat_timeout,
    )
    return settings


def is_primary() -> bool:
    """Whether this is process 0, the one that writes files."""
    return jax.process_index() == 0


def process_count() -> int:
    return jax.process_count()


def _padded_length(n: int) -> int:
    """The next power of two >= max(n, 64): broadcasts of similar sizes share one compiled program."""
    return max(64, 1 << (n - 1).bit_length())


def broadcast_json(obj: Any) -> Any:
    """Process 0's JSON-able `obj` on every process (every process must call it; the others' `obj` is ignored).

    Two broadcasts: the byte length (int64[1]), then the UTF-8 bytes as uint8[padded length]."""
    if jax.process_count() == 1:
        return obj
    data = json.dumps(obj).encode() if is_primary() else b""
    length = int(multihost_utils.broadcast_one_to_all(np.array([len(data)], np.int64))[0])
    buffer = np.zeros(_padded_length(length), np.uint8)
    buffer[: len(data)] = np.frombuffer(data, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
    return json.loads(received[:length].tobytes().decode())


def on_primary(fn: Callable[[], T]) -> T:
    """Runs `fn` on process 0 only and returns its JSON-able result on every process.

    A `UserInputError` raised by `fn` is raised with the same message on every process (so every process exits
    with the same one line); any other exception is re-raised on process 0 and reported as a RuntimeError on the
    others, instead of leaving them waiting."""
    if jax.process_count() == 1:
        return fn()
    outcome: dict[str, Any] = {}
    error: BaseException | None = None
    if is_primary():
        try:
            outcome = {"value": fn()}
        except UserInputError as err:
            error, outcome = err, {"user_error": str(err)}
        except Exception as err:  # reported to the peers, then re-raised here
            error, outcome = err, {"failure": f"{type(err).__name__}: {err}"}
    outcome = broadcast_json(outcome)
    if error is not None:
        raise error
    if "user_error" in outcome:
        raise UserInputError(outcome["user_error"])
    if "failure" in outcome:
        raise RuntimeError(f"process 0 failed: {outcome['failure']}")
    return outcome["value"]


def _process_block(shape: tuple[int, ...], sharding: jax.sharding.Sharding) -> tuple[slice, ...]:
    """The smallest box of an array of `shape` that holds every element this process's devices hold."""
    per_device = list(sharding.addressable_devices_indices_map(shape).values())
    block = []
    for axis, n in enumerate(shape):
        ranges = [index[axis].indices(n)[:2] for index in per_device]
        block.append(slice(min(r[0] for r in ranges), max(r[1] for r in ranges)))
    return tuple(block)


def global_array(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    """The global array equal to `host` (same shape, laid out by `sharding`), given that every process holds the
    same `host`: each process contributes only the block its own devices hold.

    The devices of one process must hold one box of `host` (true of the meshes `jax.make_mesh` builds); under a
    replicated sharding that box is the whole array."""
    host = np.asarray(host)
    block = host[_process_block(host.shape, sharding)]
    return jax.make_array_from_process_local_data(sharding, block, host.shape)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of `x` as a numpy array on every process (a collective when `x` spans processes)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier called `name` (a mismatched name is an error)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
