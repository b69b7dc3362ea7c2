"""Shared fixtures: a tiny random Llama (2 layers, hidden 64) with a byte-level tokenizer."""

from __future__ import annotations

import os

# With libtpu installed (the aot extra), JAX would probe for TPU chips first: the suite runs on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

from seal_jax.models.bundle import LoadedModel, load_model


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_qwen() -> LoadedModel:
    return load_model("tiny-random-qwen2")
