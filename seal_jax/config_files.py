"""Config files as Python modules: a file's `get_config()` (or `get_sweep()`), loaded by path.

Kept apart from `seal_jax.sweep` and `seal_jax.main`: a config file run by `python -m seal_jax.main` imports this
to build on another config, and importing either entry point there would define its absl flags a second time.
"""

from __future__ import annotations

import importlib.util
import os
import types

import ml_collections


def load_module(path: str | os.PathLike) -> types.ModuleType:
    """The config file at `path`, executed as a module."""
    spec = importlib.util.spec_from_file_location("_seal_jax_config_file", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_from(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The `get_config()` of another config file, for a config or sweep built on an existing one:
    `config_files.config_from(Path(__file__).with_name("knowledge_demo.py"))`."""
    return load_module(path).get_config()
