"""Shared fixtures: a tiny random Llama (2 layers, hidden 64) with a byte-level tokenizer."""

from __future__ import annotations

import os

# With libtpu installed (the aot extra), JAX would probe for TPU chips first: the suite runs on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

from seal_jax.engine.runtime import Runtime
from seal_jax.models.bundle import LoadedModel, default_mesh, load_model


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for the whole test run (each xdist worker its own): the drivers' tests
    build new runtimes, whose jitted programs would otherwise compile again for every run of the tiny model."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.getbasetemp() / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_qwen() -> LoadedModel:
    return load_model("tiny-random-qwen2")


@pytest.fixture(scope="session")
def tiny_runtime(tiny) -> Runtime:
    """`tiny` on one device. Never merge into it (a merge donates the base `tiny` holds): load a fresh model."""
    return Runtime(tiny, default_mesh())
