"""Generation sanity check: `python -m seal_jax.main --config configs/generate.py --config.prompt="..."`."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()
    cfg.experiment = "generate"
    cfg.model = "smollm2-135m-instruct"
    cfg.dtype = "float32"
    cfg.prompt = "What is the capital of France?"
    cfg.chat = True
    cfg.max_new_tokens = 64
    cfg.temperature = 0.0
    cfg.top_p = 1.0
    cfg.seed = 0
    cfg.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # `experiments.common.load`
    return cfg
