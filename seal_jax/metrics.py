"""A run's curves: `metrics.jsonl` and TensorBoard event files (`tensorboard/`) in the workdir, process 0 only.

One JSON line per ReST-EM round (and one for the held-out table); the same values go to TensorBoard through
`tensorboardX`: scalars by round, and each round's loss curves (the inner loop's per-step mean/min/max across
adapters, the M-step's) by step under `round_<r>/`. Compile time comes from `jax.monitoring`'s compile events
(tracing, lowering and XLA compilation or a persistent-cache load), summed per round.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import append_line

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def summarise_curves(curves: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per step index across curves of any lengths: {"mean": [...], "min": [...], "max": [...]} over the curves
    that reach that step (the inner loop's adapters run for their own step counts)."""
    steps = max((len(c) for c in curves), default=0)
    columns = [np.array([c[i] for c in curves if len(c) > i], np.float64) for i in range(steps)]
    return {
        "mean": [float(col.mean()) for col in columns],
        "min": [float(col.min()) for col in columns],
        "max": [float(col.max()) for col in columns],
    }


class Metrics:
    """Writes `metrics.jsonl` and TensorBoard events under `workdir` (process 0; the others record nothing).
    `phase(name)` times a block into the current round's wall times; `compile_s()` is the compile time since the
    last call."""

    def __init__(self, workdir: str | Any):
        self.primary = distributed.is_primary()
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.times: dict[str, float] = {}
        self._compile = 0.0
        self._writer = None
        if self.primary:
            from tensorboardX import SummaryWriter  # imported here: only process 0 writes events

            self._writer = SummaryWriter(logdir=str(epath.Path(workdir) / "tensorboard"))
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)

    def _on_duration(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event in _COMPILE_EVENTS:
            self._compile += seconds

    def compile_s(self) -> float:
        """Seconds spent compiling since the previous call."""
        seconds, self._compile = self._compile, 0.0
        return seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def take_times(self) -> dict[str, float]:
        """The phases' wall times since the previous call (seconds)."""
        times, self.times = self.times, {}
        return times

    def write(
        self, record: dict[str, Any], step: int, curves: dict[str, Sequence[float]] | None = None
    ) -> None:
        """One metrics.jsonl line (`record`, plus `curves`); TensorBoard: every number of `record` as a scalar
        at `step`, every curve under `round_<step>/<name>` by its step index."""
        if not self.primary:
            return
        curves = curves or {}
        append_line(self.path, json.dumps({**record, **curves}) + "\n")
        assert self._writer is not None
        for name, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
                self._writer.add_scalar(name, value, step)
        for name, values in curves.items():
            for i, value in enumerate(values):
                self._writer.add_scalar(f"round_{step}/{name}", value, i)
        self._writer.flush()

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        if self._writer is not None:
            self._writer.close()
