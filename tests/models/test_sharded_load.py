"""Loading a ~1B-parameter checkpoint onto 8 devices (fsdp 8): each device's shard is read on its own, so host
memory grows by about the model's size once (the shards), not by a full copy on top of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from seal_jax.models.config import ModelConfig
from tests.helpers.model_files import toy_tokenizer

REPO = Path(__file__).resolve().parents[2]
# 1.03e9 parameters: 20 layers of 45M plus a 32k x 2048 embedding and an untied head.
CONFIG = ModelConfig(
    model_type="llama",
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_layers=20,
    num_heads=16,
    num_kv_heads=4,
    head_dim=128,
    tie_word_embeddings=False,
)


def write_random_checkpoint(path: Path, cfg: ModelConfig) -> int:
    """A random bf16 HF checkpoint, one safetensors file per layer (the writer holds one layer at a time).
    -> its parameter bytes."""
    rng = np.random.default_rng(0)
    d, f, total, weight_map = cfg.hidden_size, cfg.intermediate_size, 0, {}

    def tensor(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)

    groups: list[dict[str, np.ndarray]] = [
        {
            "model.embed_tokens.weight": tensor(cfg.vocab_size, d),
            "lm_head.weight": tensor(cfg.vocab_size, d),
            "model.norm.weight": np.ones(d, ml_dtypes.bfloat16),
        }
    ]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        groups.append(
            {
                p + "input_layernorm.weight": np.ones(d, ml_dtypes.bfloat16),
                p + "post_attention_layernorm.weight": np.ones(d, ml_dtypes.bfloat16),
                p + "self_attn.q_proj.weight": tensor(cfg.q_dim, d),
                p + "self_attn.k_proj.weight": tensor(cfg.kv_dim, d),
                p + "self_attn.v_proj.weight": tensor(cfg.kv_dim, d),
                p + "self_attn.o_proj.weight": tensor(d, cfg.q_dim),
                p + "mlp.gate_proj.weight": tensor(f, d),
                p + "mlp.up_proj.weight": tensor(f, d),
                p + "mlp.down_proj.weight": tensor(d, f),
            }
        )
    path.mkdir(parents=True)
    for k, group in enumerate(groups):
        file = f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, path / file)
        weight_map |= dict.fromkeys(group, file)
        total += sum(a.nbytes for a in group.values())
        del group
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))
    toy_tokenizer().save_pretrained(path)
    return total


LOAD = textwrap.dedent("""
    import json, resource, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import jax.numpy as jnp
    import numpy as np
    from safetensors import safe_open
    from seal_jax.engine import sharding
    from seal_jax.models.bundle import load_model
    from seal_jax.models.loading import read_hf_tokenizer

    read_hf_tokenizer(sys.argv[1])  # transformers' import is not the weights' memory: done before measuring

    def rss_kb():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])

    mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8), jax.devices())
    before = rss_kb()
    model = load_model(sys.argv[1], jnp.bfloat16, mesh)
    jax.block_until_ready(model.base)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wq = model.base["layers"]["wq"][...]
    with safe_open(sys.argv[1] + "/model-00003-of-00021.safetensors", framework="np") as f:
        layer2 = f.get_tensor("model.layers.2.self_attn.q_proj.weight").T  # ours: [in, out]
    shard = wq.addressable_shards[3]
    print(json.dumps({
        "grown_bytes": (peak - before) * 1024,
        "wq_shards": len({str(s.index) for s in wq.addressable_shards}),
        "wq_shard_shape": list(shard.data.shape),
        "block_matches": bool(np.array_equal(np.asarray(shard.data[2]), layer2[shard.index[1:]])),
    }))
""")


# Peak RSS is a whole-process figure: beside another test worker it read 1.87-1.97x (alone: 1.18x), so this test
# runs alone: `.ci/run` calls it on its own after `make test`, whose parallel workers skip it.
@pytest.mark.skipif(bool(os.environ.get("PYTEST_XDIST_WORKER")), reason="measures peak RSS: run it alone")
@pytest.mark.slow
def test_a_1b_checkpoint_loads_shard_by_shard_within_1_3x_its_size(tmp_path):
    size = write_random_checkpoint(tmp_path / "ckpt", CONFIG)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "ckpt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"params {size / 2**30:.2f} GiB, host memory grew {out['grown_bytes'] / size:.3f}x")
    assert out["wq_shards"] == 8 and out["wq_shard_shape"] == [20, 256, 2048]  # fsdp: split, not replicated
    assert out["block_matches"]
    assert out["grown_bytes"] <= 1.3 * size
