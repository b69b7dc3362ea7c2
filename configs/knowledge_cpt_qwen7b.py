"""The paper's CPT on Qwen2.5-7B (SQuAD validation, k = 5 self-edits per passage, 500-question seeded subset).

Defaults: n = 200 passages, LoRA (the reference's v1: r32 α64 on q,v, 3 epochs, lr 1e-3, batch 4 × accumulation 2).
Overrides:
- n = 2067 (all validation passages): --config.data.num_eval=2067
- full fine-tuning (the reference's v2, the paper's numbers): --config.cpt.mode=full --config.cpt.learning_rate=7e-5
  --config.cpt.epochs=1 --config.cpt.warmup_ratio=0.03 --config.mesh.data=1 --config.mesh.fsdp=-1
  (weights and AdamW moments sharded over fsdp; moments in bf16 as torch keeps them for a bf16 model,
  --config.cpt.moments_dtype=float32 for f32 moments). On a TPU v5e-8 add --config.cpt.batch_size=1
  --config.cpt.grad_accum=8: the reference's 4 × 2 needs 16.4 GiB per chip (`python -m seal_jax.aot --finetune`)
- GPT-4.1's or SEAL's self-edits from a file: --config.cpt.self_edit_file=<gpt4_1_val.json>
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_cpt"
    cfg.workdir = "runs/knowledge_cpt_qwen7b"
    cfg.model = "Qwen/Qwen2.5-7B"
    cfg.data.num_eval = 200
    cfg.data.num_train = 1
    cfg.cpt.eval_questions = 500
    cfg.inner.plan_step_cost = float(cfg.inner.chunk_k)
    return cfg
