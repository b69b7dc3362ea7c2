"""The paper's few-shot ARC run (SEAL_REFERENCE.md §3): Llama-3.2-1B-Instruct, the reference's 11 training and
8 evaluation tasks, 15 self-edits per training task, 1 ReST-EM round, 5 self-edits per evaluation task.

Needs an accelerator and a local HF checkpoint dir: `--config.model=/path/to/Llama-3.2-1B-Instruct`.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.arc()
    cfg.workdir = "runs/arc_llama1b"
    cfg.model = "meta-llama/Llama-3.2-1B-Instruct"  # set to a local checkpoint directory
    cfg.dtype = "bfloat16"
    cfg.inner.plan_step_cost = float(cfg.inner.chunk_k)  # accelerator: K adapters cost about one
    return cfg
