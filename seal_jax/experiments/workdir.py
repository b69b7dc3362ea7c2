"""The run directory: one run at a time, and only the config its finished work came from.

`open_workdir` is entered once a run's settings and data are known to be good, so a run that fails on bad input
leaves nothing behind that would block the corrected command. With several processes every one enters it; process
0 alone locks and checks the directory, and its verdict (a refusal included) reaches every process. The workdir
may be local or `gs://...`; an object store has no lock, so there nothing keeps a second run out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
from absl import logging
from etils import epath

from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import is_local, write_atomically
from seal_jax.errors import UserInputError

# Where a run lives, caches its compilations, how its processes meet and how much it logs: not what it computes,
# so a moved run directory still resumes (and each process's distributed.process_id differs).
_NOT_COMPARED = ("workdir", "compilation_cache_dir", "distributed", "verbose")
_ENTRIES_ARE_DIRS = {"journal": True, "checkpoints": True, "config.json": False}


def _unusable(workdir: epath.Path, why: object) -> UserInputError:
    return UserInputError(f"cannot use {workdir} as a run directory ({why})")


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} for every leaf of nested dicts."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def changed_settings(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The dotted config keys whose values differ (keys in `_NOT_COMPARED` excepted)."""
    old, new = _leaves(previous), _leaves(current)
    return sorted(
        k for k in set(old) | set(new) if k.split(".")[0] not in _NOT_COMPARED and old.get(k) != new.get(k)
    )


def holds_work(workdir: epath.Path) -> bool:
    """Whether a journal line or a round checkpoint has been written."""
    journals = (workdir / "journal").glob("*.jsonl")
    checkpoints = workdir / "checkpoints"
    return any(p.stat().length for p in journals) or (checkpoints.is_dir() and any(checkpoints.iterdir()))


@contextlib.contextmanager
def _locked(workdir: epath.Path) -> Iterator[None]:
    """Creates `workdir` and holds an exclusive lock on it for the block (released when the block ends or the
    process dies). Only a local directory can be locked."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        handle = (Path(workdir) / ".lock").open("w") if is_local(workdir) else None
    except OSError as err:
        raise _unusable(workdir, err) from None
    if handle is None:
        logging.warning("no lock is held on %s: nothing stops another run from using it", workdir)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(
                f"another process is running in {workdir} (it holds {workdir / '.lock'})"
            ) from None
        yield


def _read_json(path: epath.Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None (logged) when the file cannot be read or holds no object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logging.warning("%s is unreadable (%s)", path, type(err).__name__)
        return None
    if not isinstance(value, dict):
        logging.warning("%s holds a JSON %s, not an object", path, type(value).__name__)
        return None
    return value


def _check_devices(workdir: epath.Path, has_work: bool) -> None:
    """Warns when a run resumes on another device count: its partly finished chunks may then differ from an
    uninterrupted run's at float rounding (the mesh shapes the programs)."""
    record = workdir / "devices.json"
    current = {"platform": jax.default_backend(), "devices": jax.device_count()}
    previous = _read_json(record) if record.exists() else None
    if has_work and previous is not None and previous != current:
        logging.warning("%s was started on %s and resumes on %s", workdir, previous, current)
    if previous != current:
        write_atomically(record, json.dumps(current) + "\n")


# A directory that refuses writes or is full: the user's to fix, not a bug.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def as_user_error(err: BaseException, workdir: epath.Path) -> UserInputError | None:
    """The one-line error for a failure a run's own settings or its directory caused mid-run: bad input found
    late, out of device memory, or a directory it cannot write. None for anything else (a bug: its traceback
    is wanted)."""
    if isinstance(err, UserInputError):
        return err
    first = (str(err).strip().splitlines() or [""])[0][:200]
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in first:
        return UserInputError(f"out of memory ({first}); lower batch sizes, chunk_k or token budgets")
    if isinstance(err, OSError) and err.errno in _UNWRITABLE:
        return UserInputError(f"cannot write in {workdir} ({type(err).__name__}: {first})")
    return None


@contextlib.contextmanager
def open_workdir(cfg: Any) -> Iterator[epath.Path]:
    """Creates `cfg.workdir`, locks it for the block and records the config. Finished work (journal lines,
    checkpoints) may only be resumed with the config that made it: a different one, or an unreadable or missing
    `config.json` next to finished work, is a one-line error, unless that run failed on its own settings
    (`FAILED`): its work is then moved aside, kept, and the changed config starts anew. Without finished work
    the new config replaces the old. Every process must enter it; process 0 does the work and every process
    raises its refusal (and, from the block, a failure of the run's settings as a one-line error)."""
    workdir = epath.Path(cfg.workdir)
    with contextlib.ExitStack() as lock:

        def prepare() -> None:
            lock.enter_context(_locked(workdir))
            try:
                _record_config(workdir, cfg)
            except OSError as err:
                raise _unusable(workdir, err) from None

        distributed.on_primary(prepare)
        try:
            yield workdir
        except Exception as err:
            failure = as_user_error(err, workdir)
            if failure is None:
                raise
            if distributed.is_primary():
                _record_failure(workdir, cfg, failure)
            if failure is err:
                raise
            raise failure from None
        if distributed.is_primary() and (workdir / FAILED).exists():
            (
                workdir / FAILED
            ).unlink()  # this config finished: an earlier failure no longer explains the work


# A run that failed on its own settings: {"error", "config"}. The corrected command may then replace its work.
FAILED = "failed.json"


def _record_failure(workdir: epath.Path, cfg: Any, failure: UserInputError) -> None:
    try:
        write_atomically(
            workdir / FAILED, json.dumps({"error": str(failure), "config": json.loads(cfg.to_json())}) + "\n"
        )
    except OSError as err:  # e.g. the directory became read-only: the refusal then stands, explained
        logging.warning("cannot record the failure in %s (%s)", workdir, err)


def _set_aside(workdir: epath.Path, error: str, changed: list[str]) -> None:
    """Moves a failed run's work into `failed_runs/<n>/` (kept, never deleted) and says so."""
    n = 1
    while (workdir / "failed_runs" / str(n)).exists():
        n += 1
    target = workdir / "failed_runs" / str(n)
    target.mkdir(parents=True)
    for entry in ("journal", "checkpoints", "config.json", FAILED):
        if (workdir / entry).exists():
            (workdir / entry).rename(target / entry)
    logging.warning(
        "the run in %s failed on its settings (%s); this run changes %s and starts anew; the failed run's work is "
        "kept in %s",
        workdir,
        error,
        ", ".join(changed[:6]),
        target,
    )


def _record_config(workdir: epath.Path, cfg: Any) -> None:
    for entry, is_dir in _ENTRIES_ARE_DIRS.items():  # the wrong kind of entry fails here, not mid-run
        path = workdir / entry
        if path.exists() and path.is_dir() != is_dir:
            raise _unusable(workdir, f"{path} is {'not ' if is_dir else ''}a directory")
    has_work = holds_work(workdir)
    config_file = workdir / "config.json"
    current = json.loads(cfg.to_json())
    previous = _read_json(config_file) if config_file.exists() else None
    if has_work:
        if previous is None:
            raise UserInputError(
                f"{workdir} holds finished work but no readable config.json, so it cannot be checked against "
                "this config; use a new --config.workdir"
            )
        changed = changed_settings(previous, current)
        failed = _read_json(workdir / FAILED) if (workdir / FAILED).exists() else None
        if changed and failed is not None and failed.get("config") == previous:
            _set_aside(workdir, str(failed.get("error")), changed)
            has_work, previous = False, None
        elif changed:
            shown = ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else "")
            raise UserInputError(
                f"{workdir} holds work of a run with a different config ({shown}); use a new --config.workdir"
            )
    _check_devices(workdir, has_work)
    if previous != current:
        write_atomically(config_file, json.dumps(current, indent=1) + "\n")
