"""The paper's knowledge-incorporation run (docs/reference.md#knowledge-model-and-data): Qwen2.5-7B base,
SQuAD via `datasets`, 50 passages × 5 self-edits × 3 seeds per round, 2 rounds, best-of-5, held-out 200
validation passages.

Needs an accelerator. The model is a Hugging Face hub id, taken from the local HF cache or downloaded into it
(offline: `hf download Qwen/Qwen2.5-7B --include '*.safetensors' --include '*.json' --include 'tokenizer*'`
beforehand); a local HF checkpoint dir works too: `--config.model=/path/to/Qwen2.5-7B`.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.workdir = "runs/knowledge_qwen7b"
    cfg.model = "Qwen/Qwen2.5-7B"  # hub id (HF cache or download; `@revision` pins one) or a local directory
    cfg.dtype = "bfloat16"
    cfg.data.num_train = 100
    cfg.data.num_eval = 200
    cfg.inner.chunk_k = 15
    # Base weights sharded over every chip (FSDP), adapters not split: Qwen2.5-7B's 15.2 GB of bf16 weights do
    # not fit one 16 GB v5e chip next to the programs' activations, so the default data-parallel mesh (a full
    # copy per chip) cannot run; `python -m seal_jax.aot` checks the fit per topology (docs/scale.md).
    cfg.mesh.data = 1
    cfg.mesh.fsdp = -1
    cfg.inner.plan_step_cost = float(cfg.inner.chunk_k)  # accelerator: K adapters cost about one
    cfg.eval.grader = "offline"  # "judge" + OPENAI_API_KEY for the paper's GPT-4.1 grading
    return cfg
