"""Meshes and shardings: 8 fake CPU devices (in a subprocess) must give the 1-device numbers; spec rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec

from seal_jax.engine import sharding

# Runs with 8 fake CPU devices: a K=4 inner loop + decode on a (4, 2, 1) mesh (base loaded onto it by
# `load_model(..., mesh=...)`, programs from `engine/runtime.py`) vs the same on one device; `Runtime.sample` and
# `Runtime.merge` on meshes vs one device / the host; the shardings of a (1, 1, 8) mesh whose `tensor` axis does
# not divide the byte vocabulary (259) and of a (1, 8, 1) fsdp mesh.
SCRIPT = textwrap.dedent("""
    import jax
    jax.config.update("jax_num_cpu_devices", 8)
    import json
    import jax.numpy as jnp
    import numpy as np
    from seal_jax.engine import inner, runtime, sharding
    from seal_jax.engine.inner import EncodedExample, InnerConfig, prepare_call
    from seal_jax.engine.runtime import Runtime
    from seal_jax.engine.sampling import SamplingConfig, generate_k, pad_prompts
    from seal_jax.engine.text import sampling_config
    from seal_jax.models.bundle import default_mesh, load_model
    from seal_jax.models.lora import LoraConfig, merge_lora
    from seal_jax.models.transformer import init_lora, init_lora_k

    def leaf_names(tree):
        return {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): leaf
                for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    out = {"devices": len(jax.devices())}
    model = load_model("tiny-random-llama")  # one device
    lora_cfg = LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))
    cfg = InnerConfig(lora=lora_cfg, length_bucket=16, loss_chunk=8, step_bucket=4)
    graphdef = model.graphdef(lora_cfg)
    rng = np.random.default_rng(0)
    adapters = [[EncodedExample(rng.integers(0, 256, n).astype(np.int32), np.ones(n, np.float32))
                 for n in lens] for lens in ([10, 12], [7], [9, 5, 40], [16])]
    layout, hp = prepare_call(adapters, [2, 3, 1, 4], [0, 1, 2, 3], [3e-2, 1e-2, 5e-2, 2e-2], [0] * 4, cfg, 0)
    batches, schedule = jax.tree.map(jnp.asarray, (layout.batches, layout.schedule))
    keys = jnp.stack([jax.random.key(s) for s in range(4)])
    mesh = sharding.make_mesh(sharding.MeshConfig(data=4, fsdp=2), jax.devices())

    def sharded_vs_one_device(dtype):  # -> 1-device LoRAs, the sharded runtime, sharded LoRAs, differences
        one = model if dtype == jnp.float32 else load_model("tiny-random-llama", dtype)
        ref, ref_stats = inner.adapt_k(init_lora_k(one.config, lora_cfg, keys), one.base, batches, schedule,
                                       jax.tree.map(jnp.asarray, hp), graphdef=graphdef, cfg=cfg)
        rt = Runtime(load_model("tiny-random-llama", dtype, mesh), mesh)
        lora, stats = rt.adapt(layout, hp, rt.fresh_adapters(lora_cfg, range(4)), cfg)
        diffs = {"adapt_max_diff": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                       for a, b in zip(jax.tree.leaves(lora), jax.tree.leaves(ref))),
                 "loss_max_diff": float(np.abs(stats.losses - np.asarray(ref_stats.losses)).max()),
                 "trained": float(jnp.abs(jax.tree.leaves(ref)[1]).max())}  # some B moved off zero
        return ref, rt, lora, diffs

    ref_lora, rt, lora, diffs = sharded_vs_one_device(jnp.float32)
    base = rt.base
    out.update(diffs)
    out["wq_spec"] = str(base["layers"]["wq"][...].sharding.spec)
    out["wq_shard_shape"] = list(base["layers"]["wq"][...].addressable_shards[0].data.shape)
    out["lora_spec"] = str(jax.tree.leaves(lora)[0].sharding.spec)
    out["lora_devices"] = len(jax.tree.leaves(lora)[0].sharding.device_set)
    # The default dtype: bf16 base weights (bf16 matmuls, weights sliced as bits in the layer scan), sharded.
    *_, diffs16 = sharded_vs_one_device(jnp.bfloat16)
    out.update({"bf16_" + name: value for name, value in diffs16.items()})

    scfg = SamplingConfig(max_new=6, prompt_bucket=16)
    padded = [pad_prompts([rng.integers(0, 256, n).tolist() for n in (3, 8)], scfg) for _ in range(4)]
    prompts = np.stack([p[0] for p in padded])
    lens = np.stack([p[1] for p in padded])
    # Strongly perturbed adapters, so greedy decoding does not merely echo the last prompt token. The noise is
    # drawn by numpy: jax.random would compile a program for every leaf shape, for numbers any rng gives.
    noise = np.random.default_rng(7)
    loud = jax.tree.map(lambda x: np.asarray(x) + 0.5 * noise.standard_normal(x.shape, np.float32), ref_lora)
    ref_tok, ref_n = generate_k(model.base, loud, prompts, lens, keys, graphdef=graphdef, cfg=scfg)
    k_axis = sharding.adapter_sharding(mesh)
    gen = runtime.answer_program(mesh, graphdef, scfg, rt.base_shardings)
    tok, n = gen(base, rt.put(loud, k_axis), rt.put(prompts, k_axis), rt.put(lens, k_axis),
                 jax.device_put(keys, k_axis))
    out["tokens"] = np.asarray(tok).tolist()
    out["ref_tokens"] = np.asarray(ref_tok).tolist()
    out["lengths_equal"] = bool((np.asarray(n) == np.asarray(ref_n)).all())

    # Runtime.sample: one device vs the (4, 2, 1) mesh (rows on `data`) vs a (1, 8, 1) fsdp mesh.
    texts_cfg = sampling_config(model.tokenizer, max_new=12, temperature=0.7)
    texts_prompts = ["The Zarn tower", "Mira Okafor built", "In 1873 the", "Qwiller ate"]
    out["texts1"] = Runtime(model, default_mesh()).sample(texts_prompts, texts_cfg, seed=5)
    out["texts_dp"] = rt.sample(texts_prompts, texts_cfg, seed=5)
    mesh_fsdp = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=8, tensor=1), jax.devices())
    rt_fsdp = Runtime(load_model("tiny-random-llama", mesh=mesh_fsdp), mesh_fsdp)
    out["texts_fsdp"] = rt_fsdp.sample(texts_prompts, texts_cfg, seed=5)
    out["fsdp_leaves"] = {name: {"replicated": leaf.sharding.is_fully_replicated, "ndim": leaf.ndim,
                                 "devices": len(leaf.sharding.device_set),
                                 "shard_size": leaf.addressable_shards[0].data.size, "size": leaf.size}
                          for name, leaf in leaf_names(rt_fsdp.base).items()}

    # The M-step (`sft`: one adapter, batch rows on `data` when it divides them) on the fsdp mesh, whose program
    # takes the base as it is sharded (`runtime.adapt_program`), vs one device.
    from seal_jax.domains.base import TrainExample
    from seal_jax.engine.sft import SftConfig, sft
    pairs = [TrainExample("Write about the Zarn tower.", "It stands on a hill " * (i + 1)) for i in range(4)]
    sft_cfg = SftConfig(lora=LoraConfig(rank=4, alpha=8.0, targets=("q", "v")), batch_size=2, epochs=2,
                        learning_rate=1e-2, remat=False)
    one_sft = sft(Runtime(model, default_mesh()), pairs, sft_cfg, seed=3)
    fsdp_sft = sft(rt_fsdp, pairs, sft_cfg, seed=3)
    out["sft_max_diff"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                              for a, b in zip(jax.tree.leaves(one_sft.adapter), jax.tree.leaves(fsdp_sft.adapter)))
    out["sft_trained"] = max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(fsdp_sft.adapter))
    out["sft_losses_equal"] = bool(np.allclose(one_sft.losses, fsdp_sft.losses, atol=1e-4))
    out["sft_base_still_fsdp"] = str(rt_fsdp.base["layers"]["wq"][...].sharding.spec)

    # Runtime.merge on the (4, 2, 1) mesh vs merge_lora on the host; the merged base keeps its shardings.
    adapter = init_lora(model.config, lora_cfg, jax.random.key(3))
    adapter = jax.tree.map(lambda x: np.asarray(x) + 0.1 * noise.standard_normal(x.shape, np.float32),
                           adapter)  # B off zero: the merge changes the weights
    host_base = jax.tree.map(np.asarray, model.base)
    expected = leaf_names(jax.tree.map(np.asarray, merge_lora(host_base, adapter, lora_cfg)))
    before = {name: leaf.sharding for name, leaf in leaf_names(rt.base).items()}
    rt.merge(adapter, lora_cfg)
    merged = leaf_names(rt.base)
    out["merge_max_diff"] = max(float(np.abs(np.asarray(merged[k]) - expected[k]).max()) for k in expected)
    out["merge_moved"] = max(float(np.abs(expected[k] - np.asarray(leaf_names(host_base)[k])).max())
                             for k in expected)
    out["merge_keeps_shardings"] = all(merged[k].sharding == before[k] for k in before)
    out["merge_wq_spec"] = str(merged["layers/wq"].sharding.spec)

    # Full fine-tuning (`Runtime.finetune`: AdamW, moments sharded like the weights, batch rows on `data`) on a
    # (2, 4, 1) mesh vs one device.
    from seal_jax.engine.finetune import FinetuneConfig, step_batches
    from seal_jax.engine.inner import encode_example
    from seal_jax.engine.text import pad_id
    # eps 1e-4: Adam's first step is g / (|g| + eps); with 1e-8 a rounding difference in a near-zero gradient
    # could move a weight by the whole learning rate (tests/knowledge/test_cpt.py)
    ft_cfg = FinetuneConfig(learning_rate=1e-2, epochs=2, batch_size=2, grad_accum=1, moments_dtype="float32",
                            remat=None, warmup_ratio=0.0, eps=1e-4)
    steps = step_batches([encode_example(model.tokenizer, ex, True, 64) for ex in pairs], ft_cfg, seed=0,
                         pad_id=pad_id(model.tokenizer), bucket=16)
    mesh_ft = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=4, tensor=1), jax.devices())
    one_ft = Runtime(load_model("tiny-random-llama"), default_mesh())
    mesh_ft_rt = Runtime(load_model("tiny-random-llama", mesh=mesh_ft), mesh_ft)
    ft_losses = [rt_.finetune(steps, ft_cfg)[0] for rt_ in (one_ft, mesh_ft_rt)]
    one_w, mesh_w = (leaf_names(jax.tree.map(np.asarray, rt_.base)) for rt_ in (one_ft, mesh_ft_rt))
    initial_w = leaf_names(jax.tree.map(np.asarray, model.base))
    out["ft_max_diff"] = max(float(np.abs(one_w[k] - mesh_w[k]).max()) for k in one_w)
    out["ft_moved"] = max(float(np.abs(one_w[k] - initial_w[k]).max()) for k in one_w)
    out["ft_loss_max_diff"] = float(np.abs(np.asarray(ft_losses[0]) - np.asarray(ft_losses[1])).max())
    out["ft_steps"] = len(ft_losses[0])
    out["ft_wq_spec"] = str(mesh_ft_rt.base["layers"]["wq"][...].sharding.spec)

    mesh8 = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=1, tensor=8), jax.devices())
    flat = leaf_names(sharding.base_shardings(mesh8, model.base))
    out["specs8"] = {name: str(s.spec) for name, s in flat.items()}
    base8 = load_model("tiny-random-llama", mesh=mesh8).base
    out["embed8_devices"] = len(base8["embed"][...].sharding.device_set)
    out["placed8"] = {name: str(leaf.sharding.spec) for name, leaf in leaf_names(base8).items()}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_runtime_adapt_on_a_mesh_equals_one_device(eight_devices):
    r = eight_devices
    assert r["devices"] == 8
    assert r["trained"] > 1e-3  # the comparison is not between two untouched adapters
    # fsdp splits each matmul's reduction over 2 devices (a different f32 summation order), and remat recomputes
    # the forward in the backward: after several Adam steps that is ~2e-5 apart, not bit-identical.
    assert r["adapt_max_diff"] < 5e-5
    assert r["loss_max_diff"] < 5e-5
    assert r["lora_spec"] == str(PartitionSpec("data")) and r["lora_devices"] == 8


def test_runtime_adapt_on_a_mesh_equals_one_device_in_bf16(eight_devices):
    r = eight_devices
    assert r["bf16_trained"] > 1e-3
    # bf16 rounds each matmul's operands, so the fsdp split's summation order shows more than in f32 (measured:
    # 2e-3 against adapters that moved 0.1; losses 3e-4 apart).
    assert r["bf16_adapt_max_diff"] < 0.05 * r["bf16_trained"]
    assert r["bf16_loss_max_diff"] < 5e-3


def test_full_finetuning_on_a_mesh_equals_one_device(eight_devices):
    r = eight_devices
    assert r["ft_steps"] == 4 and r["ft_moved"] > 1e-3  # 4 pairs, 2 per step, 2 epochs; the weights moved
    assert r["ft_max_diff"] < 1e-4 and r["ft_loss_max_diff"] < 1e-4  # f32: the summation order only
    assert r["ft_wq_spec"] == str(PartitionSpec(None, "fsdp", "tensor"))  # updated in its shardings


def test_load_model_shards_weights_by_the_rules(eight_devices):
    assert eight_devices["wq_spec"] == str(PartitionSpec(None, "fsdp", "tensor"))  # on the (4, 2, 1) mesh
    assert eight_devices["wq_shard_shape"] == [2, 32, 64]  # [L, D/fsdp, Hq*hd]: half the rows per device
    # (1, 1, 8): every leaf is placed as `base_shardings` says.
    assert eight_devices["placed8"] == eight_devices["specs8"]


def test_answer_program_on_a_mesh_equals_generate_k(eight_devices):
    r = eight_devices
    assert r["tokens"] == r["ref_tokens"]
    assert r["lengths_equal"]
    assert len({t for rows in r["tokens"] for row in rows for t in row}) > 8  # not a constant echo


def test_fit_replicates_dims_the_mesh_axis_does_not_divide(eight_devices):
    specs = eight_devices["specs8"]
    assert specs["embed"] == str(PartitionSpec(None, "fsdp"))  # vocab 259 % 8 != 0 -> replicated
    assert specs["layers/wq"] == str(PartitionSpec(None, "fsdp", "tensor"))  # 64 % 8 == 0
    assert specs["layers/wk"] == str(PartitionSpec(None, "fsdp", "tensor"))  # kv 32 % 8 == 0
    assert specs["layers/w_down"] == str(PartitionSpec(None, "tensor", "fsdp"))
    assert specs["final_norm"] == str(PartitionSpec(None))
    assert eight_devices["embed8_devices"] == 8


def test_one_device_mesh_and_base_rules(tiny):
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    specs = sharding.base_shardings(mesh, tiny.base)
    assert specs["layers"]["wq"].spec == PartitionSpec(None, "fsdp", "tensor")
    assert specs["layers"]["wo"].spec == PartitionSpec(None, "tensor", "fsdp")
    assert specs["layers"]["attn_norm"].spec == PartitionSpec(None, None)
    assert specs["embed"].spec == PartitionSpec("tensor", "fsdp")
    with pytest.raises(ValueError, match="does not match"):
        sharding.make_mesh(sharding.MeshConfig(data=2))


def test_runtime_sample_on_meshes_equals_one_device(eight_devices):
    r = eight_devices
    assert r["texts_dp"] == r["texts1"]  # rows on `data` (4, 2, 1)
    assert r["texts_fsdp"] == r["texts1"]  # weights split 8 ways on `fsdp`
    assert len(set(r["texts1"])) == len(r["texts1"]) and all(r["texts1"])  # real, distinct continuations


def test_fsdp_mesh_holds_no_replicated_copy_of_the_base(eight_devices):
    """On a (1, 8, 1) mesh every weight matrix is split over the 8 devices (only the norms' vectors, which no
    rule shards, are replicated): no device holds the whole base."""
    leaves = eight_devices["fsdp_leaves"]
    matrices = {n: v for n, v in leaves.items() if not n.endswith("norm")}
    assert set(matrices) >= {"embed", "layers/wq", "layers/wk", "layers/wv", "layers/wo", "layers/w_down"}
    for name, leaf in matrices.items():
        assert not leaf["replicated"], name
        assert leaf["devices"] == 8 and leaf["shard_size"] * 8 == leaf["size"], name
    held = sum(v["shard_size"] for v in leaves.values())
    assert held < 0.2 * sum(v["size"] for v in leaves.values())  # one device's share of the base


def test_runtime_merge_equals_merge_lora_and_keeps_the_shardings(eight_devices):
    r = eight_devices
    assert r["merge_moved"] > 1e-3  # the adapter really changes the weights
    assert r["merge_max_diff"] < 1e-6
    assert r["merge_keeps_shardings"]
    assert r["merge_wq_spec"] == str(PartitionSpec(None, "fsdp", "tensor"))


def test_the_m_step_on_an_fsdp_mesh_equals_one_device(eight_devices):
    r = eight_devices
    assert r["sft_trained"] > 1e-3  # B moved off zero
    assert r["sft_max_diff"] < 1e-5 and r["sft_losses_equal"]
    assert r["sft_base_still_fsdp"] == str(PartitionSpec(None, "fsdp", "tensor"))
