"""Run state that survives a crash: Orbax checkpoints per ReST-EM round and an append-only JSONL journal.

The policy after round r is the base model with the SFT adapters of rounds 1..r merged in order, so a checkpoint
stores only that round's adapter (small), the round, the RNG key and the config. Each round's M-step starts a fresh
adapter and optimizer (as the reference does), so no optimizer state outlives a round.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from seal_jax.errors import UserInputError


def write_atomically(path: Path, text: str) -> None:
    """Replaces `path` by `text` so that a kill leaves either the old or the new file, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Journal:
    """`<dir>/<name>.jsonl`: one JSON object per finished unit of work, keyed by `record["key"]`.

    Every write is flushed and fsynced, so a killed run loses at most the line being written; a torn last line
    is ignored when the journal is read back.
    """

    def __init__(self, directory: str | os.PathLike, name: str):
        self.path = Path(directory) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            text = self.path.read_text()
            lines = text.splitlines()
            torn = bool(lines) and not text.endswith("\n")  # a kill mid-write leaves no newline
            for i, line in enumerate(lines):
                try:
                    record = json.loads(line)
                    self.records[record["key"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    if torn and i == len(lines) - 1:
                        logging.warning("ignoring a torn last line in %s", self.path)
                        continue
                    raise UserInputError(
                        f"{self.path}:{i + 1} is not a journal record (the journal is corrupted)"
                    ) from None
            if torn:
                self._rewrite()

    def _rewrite(self) -> None:
        """Drops a torn last line so later appends start on a fresh line (atomically: a kill keeps the old file)."""
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in self.records.values()))

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def write(self, record: dict[str, Any]) -> None:
        """Appends `record` (must have a unique "key") durably."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record


class RoundCheckpoints:
    """Orbax `CheckpointManager` over `<workdir>/checkpoints`, one step per finished ReST-EM round."""

    def __init__(self, workdir: str | os.PathLike):
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
        self.manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)

    def latest_round(self) -> int:
        """The last finished round (0 = none)."""
        return self.manager.latest_step() or 0

    def save(self, round_: int, adapter: dict[str, Any], rng: jax.Array, meta: dict[str, Any]) -> None:
        """adapter: the round's SFT LoRA as a pure dict; meta: JSON (config, selection, round statistics)."""
        state = {"adapter": adapter, "rng": np.asarray(jax.random.key_data(rng))}
        self.manager.save(
            round_,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"round": round_, **meta})
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, round_: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """-> (state {"adapter", "rng" key data}, meta) of a finished round, as saved."""
        out = self.manager.restore(
            round_, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        return out.state, out.meta
