"""The paper's Table 2 layout for any model, with 95% bootstrap intervals over passages and paired differences.

Default: the embedded SmolLM2 on 6 bundled passages, rows base / passage only / its own self-edits. Add rows:
  --config.table.files=gpt4_1,iter2 --config.table.directory=<dir of <name>_val.json files (reference format)>
  --config.table.rows=base,passage,self_edits,restem --config.table.restem_workdir=runs/knowledge_demo
      (a ReST-EM run of the same model: its self-edits adapted onto its checkpoint, as the paper measured SEAL;
       --config.table.restem_round=R picks a round, 0 = the last)
On SQuAD: --config.data.eval_source=hf --config.data.num_eval=200 (or a reference JSON path).
Writes results.md, results.json and results.png in the workdir; rerunning resumes from the journal.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_table"
    cfg.workdir = "runs/knowledge_table"
    cfg.data.train_source = cfg.data.eval_source = "demo"
    cfg.data.num_eval = 6
    cfg.data.num_train = 6
    cfg.domain.chat = True  # the embedded default is an instruct model
    # As configs/knowledge_demo.py: LoRA on every projection, 3 epochs at 3e-3 (SmolLM2 recalls nothing with q,v).
    cfg.inner.lora_targets = "q,k,v,o,gate,up,down"
    cfg.inner.epochs = 3
    cfg.inner.learning_rate = 3e-3
    cfg.inner.chunk_k = 9
    cfg.restem.max_self_edit_tokens = 160
    cfg.restem.sample_batch = 6
    return cfg
