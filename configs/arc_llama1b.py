"""The paper's few-shot ARC run (docs/reference.md#arc-model-and-tasks): Llama-3.2-1B-Instruct, the
reference's 11 training and 8 evaluation tasks, 15 self-edits per training task, 1 ReST-EM round, 5 self-edits
per evaluation task.

Needs an accelerator. The model is a Hugging Face hub id, taken from the local HF cache or downloaded into it (a
gated repo: accept its license, then `hf auth login` or HF_TOKEN); a local HF checkpoint dir works too:
`--config.model=/path/to/Llama-3.2-1B-Instruct`.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.arc()
    cfg.workdir = "runs/arc_llama1b"
    cfg.model = "meta-llama/Llama-3.2-1B-Instruct"  # hub id (HF cache or download) or a local directory
    cfg.dtype = "bfloat16"
    cfg.inner.plan_step_cost = float(cfg.inner.chunk_k)  # accelerator: K adapters cost about one
    return cfg
