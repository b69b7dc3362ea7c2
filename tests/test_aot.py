"""`python -m seal_jax.aot` on the tiny random model for a v5e:2x2 topology (libtpu, no TPU needed)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seal_jax.aot import shapes
from seal_jax.aot.programs import Compiled
from seal_jax.models.known import known_names, model_config

ROOT = Path(__file__).resolve().parents[1]
LAST = re.compile(
    r"AOT topology=(\S+) fits=(yes|no) peak_hbm_gb=([\d.]+) hbm_gb=(\d+) round_minutes=([\d.]+) chunk_k=(\d+)"
)


def test_known_configs_are_the_paper_models():
    assert known_names() == ["Qwen/Qwen2.5-7B", "meta-llama/Llama-3.2-1B-Instruct"]
    qwen = model_config("Qwen/Qwen2.5-7B@main")
    assert (qwen.num_layers, qwen.hidden_size, qwen.num_kv_heads, qwen.vocab_size) == (28, 3584, 4, 152064)
    llama = model_config("meta-llama/Llama-3.2-1B-Instruct")
    assert llama.tie_word_embeddings and llama.rope_scaling is not None and llama.head_dim == 64
    with pytest.raises(KeyError, match="known models"):
        model_config("org/unknown")


def test_shape_overrides():
    from configs.knowledge_qwen7b import get_config

    base = shapes.knowledge_shapes(get_config())
    assert (base.samples, base.adaptations, base.adapt_real_steps, base.adapt_steps) == (250, 750, 90, 96)
    changed = base.replace({"adapt_lengths": "32,64", "sft_pairs": "10"})
    assert changed.adapt_lengths == (32, 64) and changed.sft_pairs == 10
    with pytest.raises(KeyError):
        base.replace({"nope": "1"})


def test_peak_subtracts_donated_aliases():
    assert Compiled("x", 10, 4, 3, 1, 4, 0.0).peak == 14


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (the aot extra)")
def test_tiny_model_compiles_for_v5e_2x2(tmp_path):
    record = tmp_path / "aot.json"
    cmd = [
        sys.executable, "-m", "seal_jax.aot", "--config", "configs/knowledge_qwen7b.py",
        "--config.model=tiny-random-llama", "--config.dtype=float32", "--config.mesh.data=-1",
        "--config.mesh.fsdp=1", "--config.restem.max_self_edit_tokens=64", "--topology=v5e:2x2", "--nosearch_k",
        "--shape=sft_length=64", "--shape=sft_pairs=10", "--shape=sample_prompt=64", f"--json={record}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JAX_PLATFORMS", None)  # the tool sets its own (the CPU backend; the TPU topology is deviceless)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    match = LAST.fullmatch(out.stdout.strip().splitlines()[-1])
    assert match, out.stdout[-500:]
    topology, fits, peak, hbm, _, chunk_k = match.groups()
    assert (topology, fits, int(hbm), int(chunk_k)) == (
        "v5e:2x2",
        "yes",
        16,
        16,
    )  # chunk_k 15 padded to data=4
    data = json.loads(record.read_text())
    programs = {p["name"].split()[0]: p for p in data["programs"]}
    assert set(programs) == {"sample", "adapt", "answer", "M-step", "merge"}
    assert data["base_bytes_per_device"] > 0
    for p in programs.values():
        assert p["argument"] >= data["base_bytes_per_device"], p  # every program takes the (replicated) base
        assert p["output"] > 0 and p["peak"] > 0
    for name in ("sample", "adapt", "answer", "M-step"):
        assert programs[name]["temp"] > 0, name
    assert max(p["peak"] for p in programs.values()) / 2**30 == pytest.approx(float(peak), abs=0.01)


@pytest.mark.parametrize("curve", ["linear", "quadratic"])
def test_chunk_k_search_brackets_the_bound_within_its_compile_budget(curve):
    """Peaks that grow faster than linearly (as measured at 7B scale) must not make the search step down one K
    at a time: it brackets the bound and returns the largest K it saw fit, within 2 + 3 compiles."""
    from seal_jax.aot.programs import Compiled
    from seal_jax.aot.report import search_k

    def peak(k):
        gib = 4.0 + 0.08 * k + (0.0006 * k * k if curve == "quadratic" else 0.0)
        return int(gib * 2**30)

    compiled = []

    def compile_at(k):
        compiled.append(k)
        return [Compiled("adapt", peak(k), 0, 0, 0, 0, 0.0)]

    budget = int(14.4 * 2**30)
    k, seen = search_k(compile_at, k0=15, step=1, budget=budget, limit=750, log=lambda _: None)
    best = max(j for j in range(1, 751) if peak(j) <= budget)
    assert len(compiled) <= 5 and set(seen) == set(compiled)
    assert peak(k) <= budget and k in compiled
    assert k == best if curve == "linear" else best - k <= 3  # within a few K of the bound


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (the aot extra)")
def test_full_finetuning_step_compiles_for_v5e_2x2():
    """CPT's full fine-tuning step: weights and AdamW moments sharded over fsdp; the arguments hold at least
    the weights' and the moments' shards."""
    cmd = [
        sys.executable, "-m", "seal_jax.aot", "--config", "configs/knowledge_cpt.py", "--finetune",
        "--config.model=tiny-random-llama", "--config.cpt.mode=full", "--config.mesh.data=1",
        "--config.mesh.fsdp=-1", "--config.cpt.max_length=128", "--topology=v5e:2x2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JAX_PLATFORMS", None)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert re.fullmatch(r"AOT-FT topology=v5e:2x2 fits=yes peak_hbm_gb=[\d.]+ hbm_gb=16", lines[-1]), lines[
        -1
    ]
    args, peak = (float(x) for x in re.search(r"args ([\d.]+) MiB.*peak ([\d.]+) MiB", lines[-2]).groups())
    assert 0 < args <= peak
    lora = [c.replace("cpt.mode=full", "cpt.mode=lora") for c in cmd]
    bad = subprocess.run(lora, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("add --config.cpt.mode=full")


def test_an_unknown_topology_is_one_line():
    from seal_jax.aot.chips import chip_of
    from seal_jax.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown topology 'v9x-8'"):
        chip_of("v9x-8")
