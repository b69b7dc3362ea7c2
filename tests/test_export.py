"""`python -m seal_jax.export`: a finished run's merged policy (HF dir) and round adapters (PEFT dirs) load in
transformers/PEFT and compute what the run's policy computes.

The runs are made directly (config.json + two round checkpoints with random non-zero adapters) over tiny random
HF checkpoints: a Llama with tied embeddings and a Qwen2 with qkv biases and its own head.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from seal_jax import defaults
from seal_jax import export as ex
from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.errors import UserInputError
from seal_jax.models.bundle import load_model
from seal_jax.models.config import tiny_config
from seal_jax.models.lora import TARGETS, LoraConfig
from seal_jax.models.transformer import init_lora
from tests.helpers import model_files

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.torch

LORA = LoraConfig(rank=4, alpha=8.0, targets=tuple(TARGETS))
ROUNDS = 2
TOKENS = np.random.default_rng(0).integers(0, 256, (2, 10))
ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, arch: str) -> tuple[Path, Path, dict, list[dict]]:
    """(workdir, base HF dir, base HF params, per-round flat adapters) of a finished 2-round float32 run."""
    cfg = tiny_config(arch)
    hf = model_files.random_hf_params(cfg, seed=1)
    base_dir = model_files.write_hf_checkpoint(root / f"{arch}-base", cfg, hf)
    run_cfg = defaults.knowledge()
    run_cfg.model, run_cfg.dtype = str(base_dir), "float32"
    run_cfg.sft.lora_rank, run_cfg.sft.lora_alpha = LORA.rank, LORA.alpha
    run_cfg.sft.lora_targets = ",".join(LORA.targets)
    workdir = root / f"{arch}-run"
    workdir.mkdir()
    (workdir / "config.json").write_text(run_cfg.to_json())
    checkpoints = RoundCheckpoints(workdir)
    rng = np.random.default_rng(2)
    adapters = []
    for r in range(1, ROUNDS + 1):
        adapter = init_lora(cfg, LORA, jax.random.key(r)).to_pure_dict()
        for pair in adapter["lora"].values():  # B = 0 would make every adapter a no-op
            pair["b"] = 0.1 * rng.standard_normal(pair["b"].shape).astype(np.float32)
        checkpoints.save(r, adapter, jax.random.key(0), {"config": run_cfg.to_json()})
        adapters.append({t: {ab: np.asarray(v) for ab, v in p.items()} for t, p in adapter["lora"].items()})
    return workdir, base_dir, hf, adapters


def merged_by_hand(cfg, hf: dict, adapters: list[dict]) -> dict:
    """HF weights with each round's W[out, in] += (alpha/r) (A @ B)^T, in numpy float64 (independent of ours)."""
    merged = {k: v.astype(np.float64) for k, v in hf.items()}
    for adapter in adapters:
        for t, pair in adapter.items():
            for i in range(cfg.num_layers):
                key = f"model.layers.{i}.{TARGETS[t][1]}.weight"
                merged[key] = merged[key] + LORA.scale * (pair["a"][i].astype(np.float64) @ pair["b"][i]).T
    return merged


def our_logits(workdir: Path, rounds: int) -> np.ndarray:
    """Our forward of the run's policy after `rounds` rounds (float32)."""
    model = ex.policy_after(ex.open_run(str(workdir)), rounds)
    return np.asarray(nnx.merge(model.graphdef(), model.base).forward_logits(TOKENS))


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(TOKENS)).logits.numpy()


def hf_model(path: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def run(request, tmp_path_factory):
    return request.param, *make_run(tmp_path_factory.mktemp("runs"), request.param)


def test_hf_export_loads_in_transformers_and_equals_our_policy(run, tmp_path):
    arch, workdir, base_dir, hf, adapters = run
    cfg = tiny_config(arch)
    shard = 0.05 if arch == "qwen2" else 1024  # MiB: the Qwen2 export is sharded, the Llama one is not
    out = tmp_path / "hf"
    assert ex.export(str(workdir), out, "hf", max_shard_bytes=int(shard * 2**20)) == ROUNDS
    files = sorted(out.glob("*.safetensors"))
    if arch == "qwen2":
        assert len(files) > 1
        index = json.loads((out / "model.safetensors.index.json").read_text())
        assert sorted(set(index["weight_map"].values())) == [f.name for f in files]
    else:
        assert [f.name for f in files] == ["model.safetensors"]
    stored = {}
    for file in files:
        with safe_open(file, framework="np") as f:
            stored |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    expected = merged_by_hand(cfg, hf, adapters)
    assert sorted(stored) == sorted(expected)  # tied: no lm_head; Qwen2: q/k/v biases
    for name, array in expected.items():
        np.testing.assert_allclose(stored[name], array, atol=1e-5, rtol=0, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is cfg.tie_word_embeddings
    assert config["torch_dtype"] == config["dtype"] == "float32"

    model = hf_model(out)
    theirs = torch_logits(model)
    ours = our_logits(workdir, ROUNDS)
    reference = model_files.numpy_reference_logits(cfg, expected, TOKENS)
    print(f"{arch} hf: max |ours - transformers| = {np.abs(ours - theirs).max():.2e}")
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    np.testing.assert_allclose(theirs, reference, atol=1e-4, rtol=0)
    assert np.abs(theirs - torch_logits(hf_model(base_dir))).max() > 1e-2  # the adapters changed the model
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "the cat sat on the mat"
    assert tokenizer(text)["input_ids"] == model_files.toy_tokenizer()(text)["input_ids"]


def test_hf_export_in_bfloat16(run, tmp_path):
    _, workdir, *_ = run
    ex.export(str(workdir), tmp_path / "f32", "hf", round_=1)
    ex.export(str(workdir), tmp_path / "bf16", "hf", round_=1, dtype="bfloat16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with (
        safe_open(tmp_path / "f32" / "model.safetensors", framework="np") as f32,
        safe_open(tmp_path / "bf16" / "model.safetensors", framework="np") as bf16,
    ):
        for key in f32.keys():  # noqa: SIM118
            assert bf16.get_tensor(key).dtype == ml_dtypes.bfloat16
            np.testing.assert_array_equal(
                bf16.get_tensor(key), f32.get_tensor(key).astype(ml_dtypes.bfloat16)
            )
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert model.dtype == torch.bfloat16


def test_peft_export_applies_to_the_policy_before_its_round(run, tmp_path):
    arch, workdir, base_dir, *_ = run
    first = tmp_path / "round1"
    ex.export(str(workdir), first, "peft", round_=1)
    assert json.loads((first / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)
    with_first = peft.PeftModel.from_pretrained(hf_model(base_dir), first)
    diff1 = np.abs(torch_logits(with_first) - our_logits(workdir, 1)).max()

    # Round 2's adapter goes on the policy after round 1, exported as an HF dir.
    policy1, second = tmp_path / "policy1", tmp_path / "round2"
    ex.export(str(workdir), policy1, "hf", round_=1)
    assert ex.export(str(workdir), second, "peft") == ROUNDS
    assert "policy after rounds 1..1" in (second / "README.md").read_text()
    with_second = peft.PeftModel.from_pretrained(hf_model(policy1), second)
    diff2 = np.abs(torch_logits(with_second) - our_logits(workdir, 2)).max()
    print(f"{arch} peft: max |ours - PEFT| round 1 {diff1:.2e}, round 2 {diff2:.2e}")
    assert diff1 < 1e-4 and diff2 < 1e-4


def _bad(workdir: Path, tmp_path: Path) -> dict[str, tuple[dict, str]]:
    """name -> (export kwargs, a fragment of the one-line error)."""
    occupied = tmp_path / "occupied"
    occupied.mkdir(exist_ok=True)
    (occupied / "keep.txt").write_text("x")
    bare = tmp_path / "bare"
    bare.mkdir(exist_ok=True)
    (bare / "config.json").write_text((workdir / "config.json").read_text())
    out = str(tmp_path / "out")
    return {
        "no config.json": (dict(workdir=str(tmp_path / "nothing"), out=out, fmt="hf"), "has no config.json"),
        "no checkpoints": (dict(workdir=str(bare), out=out, fmt="hf"), "has no checkpoints/"),
        "round not finished": (dict(workdir=str(workdir), out=out, fmt="hf", round_=3), "round 3"),
        "unknown format": (dict(workdir=str(workdir), out=out, fmt="gguf"), "unknown --format 'gguf'"),
        "non-empty out": (dict(workdir=str(workdir), out=str(occupied), fmt="peft"), "--overwrite"),
        "out holds the run": (
            dict(workdir=str(workdir), out=str(workdir.parent), fmt="peft", overwrite=True),
            "would delete it",
        ),
    }


@pytest.fixture(scope="module")
def llama_workdir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("llama"), "llama")[0]


def test_bad_input_is_one_line(llama_workdir, tmp_path):
    workdir = llama_workdir
    for name, (kwargs, fragment) in _bad(workdir, tmp_path).items():
        with pytest.raises(UserInputError) as excinfo:
            ex.export(**kwargs)
        assert fragment in str(excinfo.value) and "\n" not in str(excinfo.value), name
    assert (tmp_path / "occupied" / "keep.txt").exists() and workdir.is_dir()
    # An existing export is replaced with --overwrite.
    ex.export(str(workdir), tmp_path / "occupied", "peft", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "occupied").iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_command_line(llama_workdir, tmp_path):
    """The CLI: bad input exits 2 with a one-line error last; a good export logs what the adapter applies to."""
    workdir = llama_workdir
    env = {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "seal_jax.export", f"--workdir={workdir}"]
    cases = {
        "unfinished": [*command, "--round=3", "--format=hf", f"--out={tmp_path / 'a'}"],
        "good": [*command, "--format=peft", f"--out={tmp_path / 'c'}"],
    }
    procs = {
        k: subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, c in cases.items()
    }
    results = {k: (p.wait(timeout=120), p.stderr.read()) for k, p in procs.items()}
    status, err = results["unfinished"]
    last = err.strip().splitlines()[-1]  # Orbax may log INFO lines first, as under seal_jax.main
    assert status == 2 and "Traceback" not in err and last.startswith("error: round 3 of"), err
    status, err = results["good"]
    assert status == 0, err
    assert "round 2's adapter applies to the policy after rounds 1..1" in err
    assert (tmp_path / "c" / "adapter_model.safetensors").is_file()


def test_config_of_a_run_is_read_back(tmp_path):
    """The run's config.json is what `open_run` reads (writer_model selects the trained policy)."""
    cfg = defaults.knowledge()
    cfg.writer_model = "tiny-random-qwen2"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(cfg.to_json())
    run = ex.open_run(str(tmp_path))
    assert isinstance(run.config, ml_collections.ConfigDict) and run.policy_model == "tiny-random-qwen2"


def test_hf_export_of_a_gguf_model(tmp_path):
    """A GGUF-sourced policy exports with its metadata-built tokenizer; transformers computes our logits."""
    cfg = tiny_config("llama")
    model = load_model(
        str(model_files.write_gguf(tmp_path / "m.gguf", cfg, model_files.random_hf_params(cfg)))
    )
    ex.write_hf(tmp_path / "hf", model, np.float32)
    ours = np.asarray(nnx.merge(model.graphdef(), model.base).forward_logits(TOKENS))
    np.testing.assert_allclose(torch_logits(hf_model(tmp_path / "hf")), ours, atol=1e-4, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "<|im_start|>user\nthe answer<|im_end|>"
    assert tokenizer(text)["input_ids"] == model.tokenizer(text)["input_ids"]
    assert tokenizer.chat_template == model_files.TOY_CHAT_TEMPLATE
