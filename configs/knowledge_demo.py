"""The main job on the embedded default: real SEAL (ReST-EM) with SmolLM2-135M-Instruct on the bundled fictional
passages, sized to finish on a 2-core CPU in about 15 minutes (`make demo`).

Lighter than the paper (fewer passages, samples, seeds, epochs and tokens); every mechanism is the same.
"""

from seal_jax import defaults


def get_config():
    cfg = defaults.knowledge()
    cfg.workdir = "runs/knowledge_demo"
    cfg.data.train_source = cfg.data.eval_source = "demo"
    cfg.data.num_eval = 9
    cfg.data.num_train = 6
    cfg.domain.chat = True  # the embedded default is an instruct model
    cfg.inner.epochs = 3
    cfg.inner.chunk_k = 9
    cfg.restem.rounds = 2
    cfg.restem.contexts_per_round = 3
    cfg.restem.samples_per_context = 3
    cfg.restem.eval_seeds = 1
    cfg.restem.max_self_edit_tokens = 192
    cfg.restem.sample_batch = 9
    cfg.sft.batch_size = 3
    return cfg
