"""Entry point: `python -m seal_jax.main --config configs/<x>.py [--config.a.b=v]`.

Thin by design (all logic is importable from a notebook): parse the ml_collections config, set up JAX, dispatch on
`cfg.experiment`. Bad input (config key, data file, checkpoint) exits with status 2 and a one-line message.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)


# Set in the child that `_supervise` starts, so that it runs the experiment instead of supervising again.
_SUPERVISED_ENV = "SEAL_JAX_SUPERVISED"
# What the JAX distributed runtime prints (then aborts) once a peer stopped sending heartbeats or the coordinator
# is gone: the process cannot catch it, so its supervising parent reads it.
_LOST_PEER_MARKER = b"the JAX distributed service detected fatal errors"


def setup_jax(cfg) -> None:
    """CPU device count, multi-process init (`cfg.distributed`), compilation cache and log levels, from the
    config. Processes other than process 0 log warnings and errors only, so the user reads one copy of the
    progress; libraries' INFO logs show only with `cfg.verbose`."""
    import jax

    from seal_jax import logs
    from seal_jax.engine import distributed

    logs.configure(bool(cfg.get("verbose", False)))

    if cfg.get("num_cpu_devices"):
        jax.config.update("jax_num_cpu_devices", int(cfg.num_cpu_devices))
    distributed.initialize(cfg.get("distributed", {}))
    if not distributed.is_primary():
        logging.set_verbosity(logging.WARNING)
    cache = cfg.get("compilation_cache_dir") or os.path.expanduser("~/.cache/seal_jax/jax")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run(cfg) -> object:
    """Runs `cfg.experiment` and returns its result (also what notebooks call)."""
    from seal_jax import experiments

    return experiments.dispatch(cfg)


def _load_config():
    """The parsed config. A missing config file surfaces only when the config is first used: exit 2, one line."""
    try:
        cfg = _CONFIG.value
        if cfg is not None:
            cfg.keys()
    except OSError as err:  # its last line names the file and the reason
        _exit_bad_input(f"cannot load the config file ({str(err).splitlines()[-1].strip()})")
    if cfg is None and flags.FLAGS["config"].present:
        _exit_bad_input("the config file's get_config() returned None")
    if cfg is not None and not isinstance(cfg, ml_collections.ConfigDict):
        _exit_bad_input(f"get_config() must return an ml_collections.ConfigDict, not {type(cfg).__name__}")
    return cfg


def _exit_bad_input(message: str) -> NoReturn:
    """Exit status 2 with one line (whitespace collapsed, at most 400 characters)."""
    line = " ".join(message.split())
    print(f"error: {line[:400]}", file=sys.stderr)
    sys.exit(2)


def _lost_peer_reason(lines: Sequence[bytes]) -> str:
    """The status the distributed runtime printed after `_LOST_PEER_MARKER` (it spans lines), as one line."""
    start = next(i for i, line in enumerate(lines) if _LOST_PEER_MARKER in line)
    status = lines[start].decode(errors="replace").partition("absl::Status:")[2]
    for line in lines[start + 1 : start + 4]:  # e.g. "...(stopped sending heartbeats):" then the task ids
        text = line.decode(errors="replace").strip()
        if not text or text.startswith("RPC:"):
            break
        status += " " + text
    return " ".join(status.split()) or "no status"


def supervise(command: list[str]) -> int:
    """Runs `command` (with `SEAL_JAX_SUPERVISED=1`) as a child, echoing its stderr, and returns the exit status
    to report: the child's, or 1 with a last line saying so when the distributed runtime ended the child because
    another process is gone.

    The runtime aborts the process from a C++ thread (no Python exception to catch), hence a parent that
    outlives it."""
    env = {**os.environ, _SUPERVISED_ENV: "1"}
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child directly (same process group)
    tail: collections.deque[bytes] = collections.deque(maxlen=200)  # the runtime's last words
    for line in child.stderr:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        tail.append(line)
    status = child.wait()
    if status != 0 and any(_LOST_PEER_MARKER in line for line in tail):
        print(
            f"error: lost contact with another process ({_lost_peer_reason(list(tail))[:300]})",
            file=sys.stderr,
        )
        return 1
    return status if status >= 0 else 128 - status


def main(argv: list[str]) -> None:
    cfg = _load_config()
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config configs/knowledge_demo.py")
    from seal_jax.engine import distributed
    from seal_jax.errors import UserInputError

    try:
        settings = distributed.parse_settings(cfg.get("distributed", {}))
    except UserInputError as err:
        _exit_bad_input(str(err))
    if settings.mode != "off" and not os.environ.get(_SUPERVISED_ENV):
        sys.exit(supervise([sys.executable, "-m", "seal_jax.main", *sys.argv[1:]]))
    del argv
    setup_jax(cfg)
    try:
        run(cfg)
    except UserInputError as err:
        logging.error("%s", err)
        _exit_bad_input(str(err))


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing; a bad flag, config override (unknown key, wrong type) or config file that fails to
    import exits 2 with one line."""
    try:
        return flags.FLAGS(argv)
    except Exception as err:  # flags and the user's config file: any error here is bad input
        lines = str(err).replace("Traceback (most recent call last):", "").strip().splitlines()
        message = f"{lines[0]} {lines[-1].strip()}" if len(lines) > 1 else str(err) or type(err).__name__
        if "get_config" in message and isinstance(err, AttributeError):
            message = "the config file defines no get_config()"
        elif isinstance(err, (AttributeError, KeyError)):
            message = f"unknown config key or bad override: {message}"
        elif not isinstance(err, (flags.Error, TypeError, ValueError)):
            message = f"cannot load the config file ({type(err).__name__}: {message})"
        _exit_bad_input(message)


def entry() -> None:
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry()
