"""The JAX model against the independent numpy reference forward, on weights loaded through `loading.py`."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.models.config import RopeScaling, tiny_config
from seal_jax.models.loading import load_pretrained, params_to_hf
from seal_jax.models.transformer import Transformer
from tests.helpers import model_files

CONFIGS = {
    "llama": tiny_config("llama"),
    "qwen2": tiny_config("qwen2"),
    "llama-untied-llama3rope": tiny_config(
        "llama", tie_word_embeddings=False, rope_theta=500000.0, rope_scaling=RopeScaling(8.0, 1.0, 4.0, 64)
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_jax_forward_matches_numpy_reference(tmp_path, name):
    cfg = CONFIGS[name]
    hf = model_files.random_hf_params(cfg, seed=5)
    loaded = load_pretrained(model_files.write_hf_checkpoint(tmp_path, cfg, hf))
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 33))
    model = Transformer.from_params(loaded.config, loaded.params)
    logits = model.forward_logits(jnp.asarray(tokens, jnp.int32))
    expected = model_files.numpy_reference_logits(cfg, hf, tokens)
    assert logits.shape == expected.shape and logits.dtype == jnp.float32
    assert float(np.abs(np.asarray(logits) - expected).max()) < 1e-4


@pytest.fixture(scope="module")
def smollm2():
    loaded = load_pretrained("smollm2-135m-instruct")
    return loaded, Transformer.from_params(loaded.config, loaded.params)


def chat_prompt(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text)


@pytest.mark.slow
def test_smollm2_jax_logits_match_numpy_reference(smollm2):
    loaded, model = smollm2
    tokens = np.asarray([chat_prompt(loaded.tokenizer, "Name a prime number.")])
    logits = np.asarray(model.forward_logits(jnp.asarray(tokens, jnp.int32)))
    expected = model_files.numpy_reference_logits(loaded.config, params_to_hf(loaded.params), tokens)
    assert float(np.abs(logits - expected).max()) < 1e-3 * float(np.abs(expected).max())
    assert (logits.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.slow
def test_smollm2_jax_model_answers(smollm2):
    """Greedy decoding with the JAX model names the capital of France (full recompute per token over a fixed,
    right-padded length, so it compiles once)."""
    loaded, model = smollm2
    prompt = chat_prompt(loaded.tokenizer, "What is the capital of France?")
    new = 8
    tokens = np.full((1, len(prompt) + new), loaded.tokenizer.pad_token_id, np.int32)
    tokens[0, : len(prompt)] = prompt
    for t in range(len(prompt), len(prompt) + new):
        logits = model.forward_logits(jnp.asarray(tokens))
        tokens[0, t] = int(jnp.argmax(logits[0, t - 1]))
    assert "Paris" in loaded.tokenizer.decode(tokens[0, len(prompt) :])
