"""Replays given self-edit files through the inner loop: the Table 2 command (`configs/knowledge_table.py`) with
the base row and one row per file, on the first `replay.num_passages` passages of the first file, with 95%
bootstrap intervals and paired differences.

Default: the reference's Qwen2.5-7B self-edits (naive = passage only, base, iter2 = SEAL, gpt4_1) on their first
`num_passages` validation passages, the first completion each, with the embedded SmolLM2 as the adapted model:
  python -m seal_jax.main --config configs/knowledge_replay.py \
      --config.replay.directory=<reference data>/knowledge/self_edits --config.replay.num_passages=50

`replay.directory` has no default: the self-edit files are not part of seal_jax (an unset directory is a
one-line error).
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.experiment = "knowledge_replay"
    cfg.workdir = "runs/knowledge_replay"
    cfg.domain.chat = True
    cfg.replay.num_passages = 50
    return cfg
