"""Run state that survives a crash: Orbax checkpoints per ReST-EM round and an append-only JSONL journal.

The policy after round r is the base model with the SFT adapters of rounds 1..r merged in order, so a checkpoint
stores only that round's adapter (small), the round, the RNG key and the config. Each round's M-step starts a fresh
adapter and optimizer (as the reference does), so no optimizer state outlives a round.

With several processes every one of them calls these (they hold the same records and adapters); only process 0
touches the files. Paths are `etils.epath` paths, so a `gs://` workdir works: an object store has no append, so
there a journal write rewrites the object (journals are small).
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
from etils import epath

from seal_jax.engine import distributed
from seal_jax.errors import UserInputError


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on a local file system (not `gs://...` or another URI)."""
    return "://" not in os.fspath(path)


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Replaces `path` by `data` so that a kill leaves either the old or the new file, never a torn one (an object
    store replaces an object atomically by itself)."""
    binary = isinstance(data, bytes)
    if not is_local(path):
        if binary:
            epath.Path(path).write_bytes(data)
        else:
            epath.Path(path).write_text(data)
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb" if binary else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_line(path: epath.Path, line: str) -> None:
    """Appends `line` to `path` durably (fsynced; on an object store, by rewriting the object)."""
    if not is_local(path):
        path.write_text((path.read_text() if path.exists() else "") + line)
        return
    with Path(path).open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _read_records(path: epath.Path) -> list[dict[str, Any]]:
    """The records of the journal file `path`, in file order ([] if it does not exist); drops a torn last line
    from the file. Run on process 0 only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    torn = bool(lines) and not text.endswith("\n")  # a kill mid-write leaves no newline
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "key" in record:
            records.append(record)
        elif torn and i == len(lines) - 1:
            logging.warning("ignoring a torn last line in %s", path)
        else:
            raise UserInputError(f"{path}:{i + 1} is not a journal record (the journal is corrupted)")
    if torn:  # so later appends start on a fresh line (atomically: a kill keeps the old file)
        write_atomically(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


class Journal:
    """`<dir>/<name>.jsonl`: one JSON object per finished unit of work, keyed by `record["key"]`.

    Every write is flushed and fsynced, so a killed run loses at most the line being written; a torn last line
    is ignored when the journal is read back. Process 0 reads the file and every process gets its records (a
    corrupted journal is the same error on every process); `write` appends on process 0 and records on all.
    """

    def __init__(self, directory: str | os.PathLike, name: str):
        self.path = epath.Path(directory) / f"{name}.jsonl"
        records = distributed.on_primary(lambda: _read_records(self.path))
        self.records: dict[str, dict[str, Any]] = {r["key"]: r for r in records}

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def write(self, record: dict[str, Any]) -> None:
        """Appends `record` (must have a unique "key") durably. Every process calls it with the same record."""
        if distributed.is_primary():
            append_line(self.path, json.dumps(record) + "\n")
        self.records[record["key"]] = record


class RoundCheckpoints:
    """Orbax `CheckpointManager` over `<workdir>/checkpoints`, one step per finished ReST-EM round.

    Every process calls every method (Orbax synchronises them); adapters and the RNG key data are small host
    arrays, which Orbax writes from its primary host, process 0, and every process reads back."""

    def __init__(self, workdir: str | os.PathLike):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,
            create=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0),
        )
        directory = epath.Path(workdir) / "checkpoints"
        self.manager = ocp.CheckpointManager(
            directory.absolute() if is_local(directory) else directory, options=options
        )

    def latest_round(self) -> int:
        """The last finished round (0 = none). Every earlier round must be there too (the policy is rebuilt by
        merging them in order): a gap is a one-line error naming the missing rounds."""
        latest = self.manager.latest_step() or 0
        missing = sorted(set(range(1, latest + 1)) - set(self.manager.all_steps()))
        if missing:
            raise UserInputError(
                f"{self.manager.directory} has round {latest} but not rounds {missing}, which the policy is "
                "rebuilt from: restore them or use a new --config.workdir"
            )
        return latest

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
        try:
            out = self.manager.restore(
                round_, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
            )
        except (OSError, ValueError) as err:  # files deleted or damaged after the round finished
            line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UserInputError(
                f"the checkpoint of round {round_} in {self.manager.directory} cannot be read ({line}): restore "
                "it or use a new --config.workdir"
            ) from None
        return out.state, out.meta
