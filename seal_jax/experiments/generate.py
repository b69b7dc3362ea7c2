"""Sanity check: the model's chat answer to `cfg.prompt`."""

from __future__ import annotations

from typing import Any

from seal_jax.engine.text import format_chat, sampling_config
from seal_jax.experiments import checks, common


def run(cfg: Any) -> str:
    """Prints and returns the answer; the prompt's length is checked against the model before its weights load."""
    spec = checks.model_spec(cfg.model)
    with common.config_section("generate"):
        sampling = sampling_config(
            spec.tokenizer,
            max_new=int(cfg.max_new_tokens),
            temperature=float(cfg.temperature),
            top_p=float(cfg.top_p),
        )
    prompt = cfg.prompt
    if cfg.chat and spec.tokenizer.chat_template:
        prompt = format_chat(spec.tokenizer, [{"role": "user", "content": prompt}])
    checks.check_prompts("generate", spec, [prompt], sampling.max_new, 1)
    model = common.load(cfg)
    answer = model.sample([prompt], sampling, cfg.seed)[0]
    print(answer)
    return answer
