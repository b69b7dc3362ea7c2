"""Checks that run before any work: before the weights load and before the workdir is entered, so a bad setting
costs seconds and leaves nothing behind that would refuse the corrected command.

What is checked here is what the engine's dataclasses cannot see alone: the run's own settings (workdir, seed),
token budgets against the model's context length and a memory estimate, and total optimizer steps against a
cap. The model's config and tokenizer are read without its weights (`model_spec`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
from absl import logging

from seal_jax.engine.inner import steps_for
from seal_jax.engine.text import encode_prompts
from seal_jax.errors import UserInputError
from seal_jax.models.config import ModelConfig

# numpy and JAX seed streams take unsigned 32-bit seeds; JAX's keys are made from int32 on some paths.
MAX_SEED = 2**31 - 1
# Optimizer steps of a whole run: far beyond any paper setting (the reference's largest run is ~10^5), and
# small enough that a typo (epochs=10**20) is refused instead of running until killed.
MAX_TOTAL_STEPS = 10**8


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model's config and tokenizer, read without its weights."""

    config: ModelConfig
    tokenizer: Any


# Counts and sizes become int32 array entries and shapes somewhere: larger ones would overflow mid-run.
MAX_INT = 2**31 - 1


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not hasattr(tree, "items"):
        return [(prefix, tree)]
    return [
        leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}.{key}" if prefix else key)
    ]


def check_run(cfg: Any) -> None:
    """The settings every experiment shares: no integer beyond int32 and no NaN anywhere, a non-empty workdir
    (an empty one would write into the current directory) and a seed in [0, MAX_SEED]."""
    for key, value in _leaves(cfg):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise UserInputError(f"{key}={value} is out of range: integers must lie within +-{MAX_INT}")
        if isinstance(value, float) and math.isnan(value):
            raise UserInputError(f"{key} is NaN")
    workdir = cfg.get("workdir")
    if workdir is not None and not str(workdir).strip():
        raise UserInputError("workdir is empty: name a run directory, e.g. --config.workdir=runs/my_run")
    if workdir is not None and "\x00" in str(workdir):
        raise UserInputError("workdir contains a NUL character")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserInputError(f"seed={seed!r} must be an integer in [0, {MAX_SEED}]")


def model_spec(name: str) -> ModelSpec:
    """The config and tokenizer of model `name` (as `common.load` names it), weights unread. A file that
    cannot be read as a model (a truncated GGUF, ...) is a one-line error."""
    from seal_jax.models.loading import open_checkpoint
    from seal_jax.models.tiny import tiny_model

    try:
        if name.startswith("tiny-random-"):
            config, _, tokenizer = tiny_model(name)
            return ModelSpec(config, tokenizer)
        source = open_checkpoint(name)
        return ModelSpec(source.config, source.tokenizer)
    except UserInputError:
        raise
    except Exception as err:  # any parser error of a damaged file: there is no partial model to keep
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UserInputError(
            f"cannot read the model {name!r} ({type(err).__name__}{': ' + detail if detail else ''}); "
            "is the file complete?"
        ) from None


def available_bytes() -> int:
    """Memory one device can hold: the accelerator's limit, or the host's RAM for CPU devices."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def kv_cache_bytes(model: ModelConfig, batch: int, length: int) -> int:
    """Bytes of the f32 key/value cache of `batch` sequences of `length` tokens (what sampling allocates)."""
    return 2 * 4 * batch * length * model.num_layers * model.num_kv_heads * model.head_dim


def check_prompts(
    what: str, spec: ModelSpec, prompts: Sequence[str], max_new: int, batch: int, names: Sequence[str] = ()
) -> None:
    """Every prompt plus `max_new` generated tokens fits the model's context, and a batch of `batch` such
    sequences fits in memory (its KV cache). `names` name the prompts in the error (e.g. passage ids)."""
    if not prompts:
        return
    lengths = [len(ids) for ids in encode_prompts(spec.tokenizer, prompts)]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    total = lengths[longest] + max_new
    context = spec.config.max_position_embeddings
    if total > context:
        name = f" ({names[longest]})" if names else ""
        raise UserInputError(
            f"{what}: the longest prompt{name} has {lengths[longest]} tokens; with {max_new} new tokens that is "
            f"{total} > the model's context length {context}"
        )
    need, have = kv_cache_bytes(spec.config, min(batch, len(prompts)), total), available_bytes()
    if need > have:
        raise UserInputError(
            f"{what}: a batch of {min(batch, len(prompts))} sequences of {total} tokens needs ~{need / 2**30:.1f} "
            f"GiB of cache > {have / 2**30:.1f} GiB of device memory; lower the batch or the token budget"
        )


def check_steps(what: str, total: int, hint: str) -> None:
    """`total` optimizer steps of a run is at most MAX_TOTAL_STEPS."""
    if total > MAX_TOTAL_STEPS:
        raise UserInputError(
            f"{what}: {total:.3g} optimizer steps in total > the cap of {MAX_TOTAL_STEPS:.0e}; {hint}"
        )


def check_batch(what: str, batch_size: int, most: int, key: str) -> None:
    """Logs (a decision, not an error) a batch size above the `most` examples a batch can hold: the loop then
    runs them as one batch of their own size (HF's partial batch), so nothing is padded."""
    if batch_size > most:
        logging.warning(
            "%s: %s=%d exceeds the at most %d examples there are to batch: they run as one batch of their own size",
            what,
            key,
            batch_size,
            most,
        )


def check_max_length(what: str, max_length: int, key: str) -> None:
    """A training sequence needs two tokens: one to read and one to predict (max_length=1 trains on nothing
    and reports loss 0)."""
    if max_length < 2:
        raise UserInputError(f"{what}: {key}={max_length} leaves no token to predict; it must be >= 2")


def check_targets(what: str, targets: Sequence[str], key: str) -> None:
    """An adapter with no target projection trains nothing."""
    if not targets:
        raise UserInputError(f"{what}: {key} is empty, so the adapter would train nothing; name projections")


def warn_truncation(what: str, spec: ModelSpec, texts: Sequence[str], max_length: int, key: str) -> None:
    """Logs (a decision, not an error) how many training texts are cut to `max_length` tokens."""
    if not texts:
        return
    cut = sum(len(ids) > max_length for ids in encode_prompts(spec.tokenizer, texts))
    if cut:
        logging.warning(
            "%s: %d of %d training sequences are longer than %s=%d and are truncated to it",
            what,
            cut,
            len(texts),
            key,
            max_length,
        )


def check_training(
    what: str, model: ModelConfig, engine: Any, restem: Any, adaptations: int, examples: int, epochs: int
) -> None:
    """The inner loop (`engine`: EngineConfig) and the M-step (`restem`: RestemConfig) train something, within
    batch sizes their data can fill and `MAX_TOTAL_STEPS` over the run: `adaptations` inner-loop adaptations of
    at most `examples` examples for `epochs` epochs, plus every round's M-step."""
    inner, sft = engine.inner, restem.sft
    check_targets(what, inner.lora.targets, "inner.lora_targets")
    check_targets(what, sft.lora.targets, "sft.lora_targets")
    check_max_length(what, inner.max_length, "inner.max_length")
    check_max_length(what, sft.max_length, "sft.max_length")
    for key, lora in (("inner.lora_rank", inner.lora), ("sft.lora_rank", sft.lora)):
        if lora.rank > model.hidden_size:  # beyond the projections' smaller side a rank adds only memory
            raise UserInputError(
                f"{what}: {key}={lora.rank} exceeds the model's hidden size {model.hidden_size}"
            )
    kept = restem.contexts_per_round * restem.samples_per_context  # the most self-edits a round can keep
    check_batch(what, inner.batch_size, examples, "inner.batch_size")
    check_batch(what, sft.batch_size, kept, "sft.batch_size")
    for key, warmup in (("inner.warmup_steps", engine.warmup_steps), ("sft.warmup_steps", sft.warmup_steps)):
        check_steps(what, warmup, f"{key} is a count of optimizer steps")
    total = adaptations * steps_for(examples, epochs, inner.batch_size)
    total += restem.rounds * steps_for(kept, sft.epochs, sft.batch_size)
    check_steps(what, total, "lower the epochs, rounds or counts")
