"""Entry point: `python -m seal_jax.main --config configs/<x>.py [--config.a.b=v]`.

Thin by design (all logic is importable from a notebook): parse the ml_collections config, set up JAX, dispatch on
`cfg.experiment`. Bad input (config key, data file, checkpoint) exits with status 2 and a one-line message.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)


def setup_jax(cfg) -> None:
    """Compilation cache, optional multi-host init and CPU device count, from the config."""
    import jax

    if cfg.get("num_cpu_devices"):
        jax.config.update("jax_num_cpu_devices", int(cfg.num_cpu_devices))
    if cfg.get("distributed", False):
        jax.distributed.initialize()
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


def main(argv: list[str]) -> None:
    del argv
    cfg = _load_config()
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config configs/knowledge_demo.py")
    setup_jax(cfg)
    from seal_jax.errors import UserInputError

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
