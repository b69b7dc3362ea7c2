"""One tiny knowledge ReST-EM run (tiny random Llama, demo passages, baselines + 1 round) summarised as JSON:
every journal record's reward, loss, self-edit and answers, the round adapter's per-leaf sums and the table.

`python -m tests.golden.tiny_round OUT.json [num_cpu_devices]` writes the summary; `tiny_round.json` beside this
file was written (`python -m tests.golden.tiny_round tests/golden/tiny_round.json 1`) by commit 5749905, which
gives each seed index its own data-order stream (the coupled stream is now seeded by `order_seed`, the seed index
and the epoch, so every inner-loop order, its losses and a few answers changed on purpose); before it, by the
pre-runtime engine (commit 2c41562). `tests/test_golden.py` compares today's code against it, on 1 and on 8
devices.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def config(workdir: str):
    from seal_jax import defaults

    cfg = defaults.knowledge()
    cfg.workdir = workdir
    cfg.model = "tiny-random-llama"
    cfg.data.train_source = cfg.data.eval_source = "demo"
    cfg.data.num_eval = 2
    cfg.data.num_train = 4
    cfg.domain.chat = True
    cfg.domain.max_sequences = 3
    cfg.inner.update(epochs=2, chunk_k=4, lora_rank=4, lora_alpha=8.0, learning_rate=0.05, max_length=64)
    cfg.restem.update(
        rounds=1,
        contexts_per_round=4,
        samples_per_context=2,
        eval_seeds=1,
        max_self_edit_tokens=24,
        sample_batch=8,
    )
    cfg.eval.update(samples=2, seeds=1)
    cfg.sft.update(batch_size=2, lora_rank=4, lora_alpha=8.0, max_length=1024, remat=False)
    return cfg


def summarise(workdir: Path, results: dict) -> dict:
    import numpy as np
    import orbax.checkpoint as ocp

    records = {}
    for path in sorted((workdir / "journal").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            records[r["key"]] = {
                k: r.get(k) for k in ("reward", "final_loss", "text", "self_edit", "answers") if k in r
            }
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    state = manager.restore(1, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state
    flat = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}", v)
        else:
            flat[prefix] = float(np.abs(np.asarray(node, np.float64)).sum())

    walk("", state["adapter"])
    return {"records": records, "adapter_abs_sums": flat, "table": results["table"]}


def main(out: str, devices: int = 1) -> None:
    import jax

    if devices > 1:
        jax.config.update("jax_num_cpu_devices", devices)
    from seal_jax.experiments import knowledge

    with tempfile.TemporaryDirectory() as tmp:
        results = knowledge.run(config(tmp))
        Path(out).write_text(json.dumps(summarise(Path(tmp), results), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
