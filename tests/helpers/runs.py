"""Test helpers for drivers that start from a ReST-EM run: a finished run written without running it, and a spy
on the runtime's phases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.engine.runtime import Runtime
from seal_jax.experiments import checks, common
from seal_jax.models.transformer import init_lora


def finished_restem_run(cfg: Any, path: Path) -> Path:
    """A one-round ReST-EM workdir of `cfg.model`: its config and the round's M-step adapter, every entry 0.01
    (a fresh adapter's B = 0 would merge nothing)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(cfg.to_json())
    lora = common.sft_config(cfg.sft).lora
    adapter = init_lora(checks.model_spec(cfg.model).config, lora, jax.random.key(1)).to_pure_dict()
    adapter = jax.tree.map(lambda x: np.full(x.shape, 0.01, x.dtype), adapter)
    RoundCheckpoints(path).save(1, adapter, jax.random.key(0), {"round": 1})
    return path


def spy_runtime(monkeypatch: Any, names: Sequence[str]) -> list[str]:
    """Records the order of calls to the named `Runtime` methods (which still run)."""
    events: list[str] = []
    for name in names:
        original = getattr(Runtime, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            events.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Runtime, name, spy)
    return events
