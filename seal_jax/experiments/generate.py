"""Sanity check: the model's chat answer to `cfg.prompt`."""

from __future__ import annotations

from typing import Any

from seal_jax.engine.text import format_chat, generate_texts, sampling_config
from seal_jax.models.bundle import load_model


def run(cfg: Any) -> str:
    model = load_model(cfg.model)
    prompt = cfg.prompt
    if cfg.chat and model.tokenizer.chat_template:
        prompt = format_chat(model.tokenizer, [{"role": "user", "content": prompt}])
    sampling = sampling_config(
        model.tokenizer, max_new=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )
    answer = generate_texts(
        model.tokenizer, model.graphdef(), model.base, None, [prompt], sampling, cfg.seed
    )[0]
    print(answer)
    return answer
