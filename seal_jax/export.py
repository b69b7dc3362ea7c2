"""Exports a finished run: `python -m seal_jax.export --workdir <run> [--round N] --format peft|hf --out <dir>`.

- `peft`: round N's M-step adapter as a PEFT LoRA dir. It applies to the policy after rounds 1..N-1 (the base
  model for N = 1), since each round's SFT adapter was trained on, and merged into, the policy before it.
- `hf`: the policy after rounds 1..N (base + the adapters of rounds 1..N merged in order) as an HF checkpoint dir
  (safetensors, sharded with an index when large; config.json; tokenizer) that transformers and vLLM load.

N defaults to the last finished round. Bad input exits 2 with one line, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from flax import nnx
from safetensors.numpy import save_file

from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.engine.runtime import Runtime
from seal_jax.errors import UserInputError
from seal_jax.experiments.common import DTYPES, sft_config
from seal_jax.main import _exit_bad_input, _parse_flags
from seal_jax.models.bundle import LoadedModel, default_mesh, load_model
from seal_jax.models.config import ModelConfig
from seal_jax.models.loading import export_peft, open_checkpoint, params_to_hf
from seal_jax.models.tiny import tiny_model
from seal_jax.restem import restore_policy

FORMATS = ("peft", "hf")
MAX_SHARD_BYTES = 5 * 2**30  # transformers' default max_shard_size ("5GB")


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run: its workdir, its config (`config.json`) and its per-round checkpoints."""

    workdir: str
    config: ml_collections.ConfigDict
    checkpoints: RoundCheckpoints

    @property
    def policy_model(self) -> str:
        """The model ReST-EM trained: the self-edit writer in a teacher-student run, else `model`."""
        return self.config.get("writer_model") or self.config.model


def open_run(workdir: str) -> Run:
    """The run in `workdir` (local or `gs://`); one-line errors when it has no config.json or checkpoints."""
    root = epath.Path(workdir)
    config_file, checkpoints = root / "config.json", root / "checkpoints"
    if not config_file.is_file():
        raise UserInputError(f"{workdir} has no config.json: expected a run's --config.workdir")
    if not checkpoints.is_dir():
        raise UserInputError(f"{workdir} has no checkpoints/: no round of this run has finished")
    try:
        config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"cannot read {config_file}: {' '.join(str(err).split())}") from None
    missing = [k for k in ("model", "dtype", "sft") if k not in config]
    if missing:
        raise UserInputError(f"{config_file} is not a ReST-EM run's config (no {', '.join(missing)})")
    if config.dtype not in DTYPES:
        raise UserInputError(
            f"{config_file}: unknown dtype {config.dtype!r}: expected one of {', '.join(DTYPES)}"
        )
    return Run(workdir, config, RoundCheckpoints(workdir))


def finished_round(run: Run, requested: int | None) -> int:
    """`requested` (default: the last finished round), checked to be a finished round."""
    last = run.checkpoints.latest_round()
    if last == 0:
        raise UserInputError(f"{run.workdir} has no finished round to export")
    round_ = last if requested is None else requested
    if not 1 <= round_ <= last:
        raise UserInputError(f"round {round_} of {run.workdir} is not finished: expected 1..{last}")
    return round_


def policy_after(run: Run, rounds: int) -> LoadedModel:
    """The policy after `rounds` rounds in the run's dtype, on one device: its base model with the adapters of
    rounds 1..`rounds` merged in order, exactly as the run computed it (`restem.restore_policy`)."""
    mesh = default_mesh()
    runtime = Runtime(load_model(run.policy_model, DTYPES[run.config.dtype], mesh), mesh)
    restore_policy(runtime, run.checkpoints, sft_config(run.config.sft), rounds)
    return runtime.model


def round_adapter(run: Run, round_: int) -> dict[str, np.ndarray]:
    """Round `round_`'s adapter, flat: `lora/{t}/a` [L, in, r], `lora/{t}/b` [L, r, out]."""
    state, _ = run.checkpoints.restore(round_)
    return {
        f"lora/{t}/{ab}": np.asarray(pair[ab])
        for t, pair in state["adapter"]["lora"].items()
        for ab in ("a", "b")
    }


def hf_tensors(base: nnx.State, dtype: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, tensor cast to `dtype`) of every weight in `base`, one of our parameters at a time, so at most
    one parameter's HF copy is on the host at once."""
    for path, variable in nnx.to_flat_state(base):
        name = "/".join(str(p) for p in path)
        for hf_name, tensor in params_to_hf({name: jax.device_get(variable.get_value())}).items():
            yield hf_name, tensor.astype(dtype, copy=False)


def hf_config(model: LoadedModel, dtype: Any) -> dict[str, Any]:
    """config.json fields: the model's HF config, the saved dtype, and the tokenizer's special token ids."""
    tok = model.tokenizer
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id", None) for k in ("bos", "eos", "pad")}
    dtype_name = np.dtype(dtype).name
    # transformers 5 reads `dtype`; vLLM and transformers 4 read `torch_dtype`.
    return {
        **model.config.to_hf_dict(),
        **{k: v for k, v in ids.items() if v is not None},
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
    }


def write_hf(out: Path, model: LoadedModel, dtype: Any, max_shard_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """Writes `model` as an HF checkpoint dir in `dtype`: `model.safetensors`, or `model-0000k-of-0000n`
    shards of at most `max_shard_bytes` (a larger tensor gets its own) with `model.safetensors.index.json`;
    config.json; the tokenizer. Returns the weight files."""
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[str]] = []  # tensor names per written shard, in order
    pending: dict[str, np.ndarray] = {}

    def flush() -> None:
        save_file(pending, out / f"shard-{len(shards)}.tmp", metadata={"format": "pt"})
        shards.append(list(pending))
        pending.clear()

    total = 0  # tensor bytes, as transformers' index counts them
    for hf_name, tensor in hf_tensors(model.base, dtype):
        total += tensor.nbytes
        if pending and sum(t.nbytes for t in pending.values()) + tensor.nbytes > max_shard_bytes:
            flush()
        pending[hf_name] = tensor
    flush()
    # Named once their count is known, as transformers names them.
    n = len(shards)
    names = (
        ["model.safetensors"]
        if n == 1
        else [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    )
    for k, name in enumerate(names):
        (out / f"shard-{k}.tmp").rename(out / name)
    if n > 1:
        weight_map = {t: name for name, group in zip(names, shards, strict=True) for t in group}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(hf_config(model, dtype), indent=2) + "\n")
    model.tokenizer.save_pretrained(str(out))
    return [out / name for name in names]


def applies_to(run: Run, round_: int) -> str:
    """What round `round_`'s adapter applies to, in words."""
    if round_ == 1:
        return f"the base model {run.policy_model}"
    return (
        f"the policy after rounds 1..{round_ - 1} of {run.workdir} (python -m seal_jax.export "
        f"--workdir {run.workdir} --round {round_ - 1} --format hf --out <dir>), not the base model"
    )


def write_peft(out: Path, run: Run, round_: int, base_model: str | None) -> None:
    """Round `round_`'s adapter as a PEFT dir; `base_model_name_or_path` is `base_model` or, by default, the base
    model for round 1 and `<workdir>@round<N-1>` otherwise (no hub name exists for that policy: PEFT only
    records it). A README.md says what the adapter applies to and how to export that policy."""
    cfg = run.config
    default_base = run.policy_model if round_ == 1 else f"{run.workdir}@round{round_ - 1}"
    export_peft(
        out,
        round_adapter(run, round_),
        sft_config(cfg.sft).lora,
        _model_config(run),
        base_model or default_base,
    )
    (out / "README.md").write_text(
        f"# SEAL ReST-EM round {round_} adapter\n\n"
        f"The M-step LoRA of round {round_} of the run in `{run.workdir}`. It applies to {applies_to(run, round_)}: "
        "each round's adapter was trained on, and merged into, the policy the rounds before it made.\n"
    )


def _model_config(run: Run) -> ModelConfig:
    """The policy model's ModelConfig (a `tiny-random-*` name or a checkpoint's config), read without weights."""
    name = run.policy_model
    return tiny_model(name)[0] if name.startswith("tiny-random-") else open_checkpoint(name).config


def check_out(out: Path, workdir: str, overwrite: bool) -> None:
    """Refuses an existing non-empty `out` (unless `overwrite`, which removes it) and an `out` holding the run."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserInputError(f"--out {out} exists and is not empty: pass --overwrite to replace it")
    run_dir = Path(workdir).resolve()
    if "://" not in workdir and (run_dir == out.resolve() or out.resolve() in run_dir.parents):
        raise UserInputError(f"--out {out} holds the run {workdir}: --overwrite would delete it")
    shutil.rmtree(out)  # stale shards or an old index would be loaded with the new files


def export(
    workdir: str,
    out: str | Path,
    fmt: str,
    round_: int | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
    base_model: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> int:
    """Runs one export (see the module docstring) and returns the exported round."""
    out = Path(out)
    if fmt not in FORMATS:
        raise UserInputError(f"unknown --format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if dtype is not None and dtype not in DTYPES:
        raise UserInputError(f"unknown --dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    run = open_run(workdir)
    round_ = finished_round(run, round_)
    check_out(out, workdir, overwrite)
    if fmt == "peft":
        logging.info("round %d's adapter applies to %s", round_, applies_to(run, round_))
        write_peft(out, run, round_, base_model)
    else:
        dtype = dtype or run.config.dtype
        logging.info("merging rounds 1..%d into %s (%s), writing %s", round_, run.policy_model, dtype, out)
        write_hf(out, policy_after(run, round_), DTYPES[dtype], max_shard_bytes)
    logging.info("wrote %s", out)
    return round_


_WORKDIR = flags.DEFINE_string("workdir", None, "The run's --config.workdir (local or gs://).")
_ROUND = flags.DEFINE_integer("round", None, "Finished round to export (default: the last).")
_FORMAT = flags.DEFINE_string("format", None, "peft: round N's adapter; hf: the merged policy after round N.")
_OUT = flags.DEFINE_string("out", None, "Output directory (must not exist or be empty unless --overwrite).")
_DTYPE = flags.DEFINE_string("dtype", None, "hf: weights' dtype (float32, bfloat16; default the run's).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")
_BASE_MODEL = flags.DEFINE_string("base_model", None, "peft: base_model_name_or_path to record.")
_MAX_SHARD_MB = flags.DEFINE_float(
    "max_shard_mb", MAX_SHARD_BYTES / 2**20, "hf: largest safetensors shard (MiB)."
)


flags.mark_flags_as_required(["workdir", "format", "out"])


def main(argv: list[str]) -> None:
    del argv
    try:
        export(
            _WORKDIR.value,
            _OUT.value,
            _FORMAT.value,
            _ROUND.value,
            _DTYPE.value,
            _OVERWRITE.value,
            _BASE_MODEL.value,
            int(_MAX_SHARD_MB.value * 2**20),
        )
    except UserInputError as err:
        _exit_bad_input(str(err))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
