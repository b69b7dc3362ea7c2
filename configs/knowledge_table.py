"""The paper's Table 2 layout for any model, with 95% bootstrap intervals over passages and paired differences.

Default: the embedded SmolLM2 on 6 bundled passages, rows base / passage only / its own self-edits. Add rows:
  --config.table.files=gpt4_1,iter2 --config.table.directory=<dir of <name>_val.json files (reference format)>
  --config.table.rows=base,passage,self_edits,restem --config.table.restem_workdir=runs/knowledge_demo
      (a ReST-EM run of the same model: its self-edits adapted onto its checkpoint, as the paper measured SEAL;
       --config.table.restem_round=R picks a round, 0 = the last)
On SQuAD: --config.data.eval_source=hf --config.data.num_eval=200 (or a reference JSON path).
Writes results.md, results.json and results.png in the workdir; rerunning resumes from the journal.
"""

from pathlib import Path

from seal_jax import config_files


def get_config():
    # the demo's model, passages and inner loop (configs/knowledge_demo.py), evaluated row by row
    cfg = config_files.config_from(Path(__file__).with_name("knowledge_demo.py"))
    cfg.experiment = "knowledge_table"
    cfg.workdir = "runs/knowledge_table"
    cfg.restem.sample_batch = 6
    return cfg
