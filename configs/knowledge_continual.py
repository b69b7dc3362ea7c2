"""Continual self-edits (the paper's §5 forgetting experiment) on the embedded SmolLM2 and the bundled passages:
passage after passage, one self-edit, adapt, evaluate on every passage so far, merge, continue.

The reference: 8 runs × 8 sequences of 8 SQuAD passages from its RL checkpoint, the knowledge inner loop. Here:
3 runs × 1 sequence of 8 passages from the base model, with the demo's inner loop (LoRA on every projection,
3 epochs at 3e-3). From a ReST-EM run of the same model: --config.continual.policy_workdir=runs/knowledge_demo
(--config.continual.policy_round=R, 0 = its last). Writes results.json (mean, std pooled over all sequences,
per-run matrices) and results.png (the mean matrix); rerunning resumes.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_continual"
    cfg.workdir = "runs/knowledge_continual"
    cfg.data.train_source = cfg.data.eval_source = "demo"
    cfg.data.num_eval = 31  # the pool the sequences draw their passages from (one passage left for "train")
    cfg.data.num_train = 1
    cfg.domain.chat = True
    cfg.inner.lora_targets = "q,k,v,o,gate,up,down"
    cfg.inner.epochs = 3
    cfg.inner.learning_rate = 3e-3
    cfg.restem.max_self_edit_tokens = 160
    cfg.continual.runs = 3
    cfg.continual.sequences = 1
    cfg.continual.passages = 8
    return cfg
