"""Shapes of the paper's models without their weights: each hub id's real HF `config.json`, shipped as package
data (`<org>--<name>.json`), so `seal_jax.aot` can compile their programs on a machine that has neither the
weights nor network access."""

from __future__ import annotations

import json
from importlib import resources

from seal_jax.models.config import ModelConfig, tiny_config
from seal_jax.models.tiny import SPECIAL_TOKENS


def known_names() -> list[str]:
    """The hub ids with a shipped config (`org/name`)."""
    files = resources.files(__package__).iterdir()
    return sorted(
        f.name.removesuffix(".json").replace("--", "/", 1) for f in files if f.name.endswith(".json")
    )


def model_config(name: str) -> ModelConfig:
    """`org/name[@revision]` (a shipped config) or `tiny-random-{llama,qwen2}[:seed]` -> its ModelConfig."""
    if name.startswith("tiny-random-"):
        arch = name.removeprefix("tiny-random-").partition(":")[0]
        return tiny_config(arch, vocab_size=len(SPECIAL_TOKENS) + 256)  # the byte tokenizer's vocabulary
    repo = name.partition("@")[0]
    path = resources.files(__package__) / (repo.replace("/", "--", 1) + ".json")
    if not path.is_file():
        raise KeyError(f"no shipped config for {name!r}: known models are {', '.join(known_names())}")
    return ModelConfig.from_hf_dict(json.loads(path.read_text()))
