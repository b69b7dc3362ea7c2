"""Sweep: the inner loop's learning rate × LoRA rank on the knowledge demo (`docs/sweeps.md` has its table).

`python -m seal_jax.sweep --config configs/sweeps/demo_lr_rank.py` runs 4 points, each a knowledge run in
`runs/sweep_demo_lr_rank/<point>`. Sized for a 2-core CPU: no ReST-EM round and no baselines, 4 held-out passages
and at most 10 training sequences per self-edit, so each point samples one self-edit per held-out passage from
the unchanged policy (the same self-edits at every point: same seed) and scores it after adapting with that
point's settings.
"""

from pathlib import Path

from seal_jax import config_files, sweep


def get_config():
    cfg = config_files.config_from(Path(__file__).parents[1] / "knowledge_demo.py")
    cfg.workdir = "runs/sweep_demo_lr_rank"
    cfg.restem.rounds = 0
    cfg.eval.baselines = False
    cfg.data.num_eval = 4
    cfg.domain.max_sequences = 10
    return cfg


def get_sweep():
    return sweep.product(**{"inner.learning_rate": [1e-3, 3e-3], "inner.lora_rank": [8, 32]})
