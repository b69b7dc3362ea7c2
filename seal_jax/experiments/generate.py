"""Sanity check: the model's chat answer to `cfg.prompt`."""

from __future__ import annotations

from typing import Any

from seal_jax.engine.text import format_chat, sampling_config
from seal_jax.experiments import common


def run(cfg: Any) -> str:
    model = common.load(cfg)
    with common.config_section("generate"):
        sampling = sampling_config(
            model.tokenizer,
            max_new=int(cfg.max_new_tokens),
            temperature=float(cfg.temperature),
            top_p=float(cfg.top_p),
        )
    prompt = cfg.prompt
    if cfg.chat and model.tokenizer.chat_template:
        prompt = format_chat(model.tokenizer, [{"role": "user", "content": prompt}])
    answer = model.sample([prompt], sampling, cfg.seed)[0]
    print(answer)
    return answer
