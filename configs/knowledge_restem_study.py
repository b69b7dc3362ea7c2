"""Does ReST-EM help the embedded model? SmolLM2-135M-Instruct on SQuAD, sized to about 1 CPU-hour: 1 round of
16 train passages × 3 self-edits, then 50 held-out passages scored four ways (base, passage only, round-0
self-edits, SEAL's self-edits adapted onto its checkpoint). results.md gives each row's 95% bootstrap interval
and the paired difference SEAL − round-0 self-edits: the effect of the rounds.

The inner loop is the 50-passage replay's (`docs/benchmarks.md`): LoRA on every projection, 1 epoch at 3e-3;
the self-edit budget is the demo's. Offline, from a reference-format SQuAD JSON (train and held-out passages
are disjoint slices of it):
  python -m seal_jax.main --config configs/knowledge_restem_study.py \
      --config.data.train_source=<squad_val.json> --config.data.eval_source=<squad_val.json>
"""

from pathlib import Path

from seal_jax import config_files


def get_config():
    cfg = config_files.config_from(Path(__file__).with_name("knowledge_demo.py"))
    cfg.experiment = "knowledge"
    cfg.workdir = "runs/knowledge_restem_study"
    cfg.data.train_source = cfg.data.eval_source = "hf"
    cfg.data.num_eval = 50
    cfg.data.num_train = 16
    cfg.restem.rounds = 1
    cfg.inner.epochs = 1
    cfg.restem.contexts_per_round = 16
    return cfg
