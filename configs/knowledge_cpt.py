"""Multi-passage continued pretraining (CPT) on the embedded SmolLM2: 20 bundled passages × 5 self-edits of its
own, plus each passage once, in one LoRA (the reference's v1 CPT: r32 α64, 3 epochs, lr 1e-3, batch 4 ×
accumulation 2; here on every projection, which SmolLM2 needs to recall anything). Full fine-tuning:
--config.cpt.mode=full --config.cpt.learning_rate=7e-5 --config.cpt.epochs=1 --config.cpt.warmup_ratio=0.03.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_cpt"
    cfg.workdir = "runs/knowledge_cpt"
    cfg.data.train_source = cfg.data.eval_source = "demo"
    cfg.data.num_eval = 20
    cfg.data.num_train = 1
    cfg.domain.chat = True
    cfg.cpt.lora_targets = "q,k,v,o,gate,up,down"
    cfg.restem.max_self_edit_tokens = 160
    cfg.restem.sample_batch = 10
    return cfg
