"""Generation sanity check: `python -m seal_jax.main --config configs/generate.py --config.prompt="..."`."""

import ml_collections

from seal_jax import defaults


def get_config() -> ml_collections.ConfigDict:
    cfg = defaults.common()  # model, dtype, mesh, processes, compilation cache
    cfg.experiment = "generate"
    cfg.dtype = "float32"
    cfg.prompt = "What is the capital of France?"
    cfg.chat = True
    cfg.max_new_tokens = 64
    cfg.temperature = 0.0
    cfg.top_p = 1.0
    return cfg
