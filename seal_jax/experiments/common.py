"""Config -> objects shared by the experiment drivers (model, inner loop, evaluator, ReST-EM, workdir), and
the results they write."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from seal_jax import report
from seal_jax.engine import sharding
from seal_jax.engine.evaluator import EngineConfig, Evaluator
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.engine.sft import SftConfig
from seal_jax.engine.text import sampling_config
from seal_jax.errors import UserInputError, require_positive
from seal_jax.models.bundle import load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.restem import RestemConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def targets(spec: str) -> tuple[str, ...]:
    """ "q,v" -> ("q", "v")."""
    return tuple(t.strip() for t in spec.split(",") if t.strip())


@contextlib.contextmanager
def config_section(name: str) -> Iterator[None]:
    """Turns a ValueError raised while building the `name` settings into a one-line UserInputError."""
    try:
        yield
    except UserInputError:
        raise
    except ValueError as err:
        raise UserInputError(f"bad {name} config: {err}") from None


def lora_config(c: Any) -> LoraConfig:
    return LoraConfig(rank=int(c.lora_rank), alpha=float(c.lora_alpha), targets=targets(c.lora_targets))


def inner_config(c: Any, seed: int) -> InnerConfig:
    """cfg.inner -> InnerConfig (pad_to 0 = bucketed lengths, the default); `seed` seeds the shared order stream."""
    with config_section("inner-loop"):
        return InnerConfig(
            lora=lora_config(c),
            batch_size=int(c.batch_size),
            schedule=c.schedule,
            max_length=int(c.max_length),
            length_bucket=int(c.length_bucket),
            max_levels=int(c.max_levels),
            order_seed=seed,
            loss_chunk=int(c.loss_chunk),
            remat=bool(c.remat),
            saved_matmuls_gb=float(c.saved_matmuls_gb),
            pad_to=int(c.pad_to) or None,
            pad_in_loss=bool(c.pad_in_loss),
            coupled_order=bool(c.coupled_order),
        )


def sft_config(c: Any) -> SftConfig:
    with config_section("sft"):
        return SftConfig(
            lora=lora_config(c),
            learning_rate=float(c.learning_rate),
            epochs=int(c.epochs),
            batch_size=int(c.batch_size),
            schedule=c.schedule,
            warmup_steps=int(c.warmup_steps),
            max_length=int(c.max_length),
            remat=bool(c.remat),
            saved_matmuls_gb=float(c.saved_matmuls_gb),
        )


def check_eval(cfg: Any) -> None:
    """The held-out evaluation's counts (cfg.eval.samples self-edits per context, each with cfg.eval.seeds)."""
    with config_section("eval"):
        require_positive("eval", samples=int(cfg.eval.samples), seeds=int(cfg.eval.seeds))


def policy_sampling(model: Runtime, c: Any) -> SamplingConfig:
    """Self-edit sampling settings (cfg.restem): temperature, top-p, max new tokens."""
    with config_section("restem sampling"):
        return sampling_config(
            model.tokenizer,
            max_new=int(c.max_self_edit_tokens),
            temperature=float(c.temperature),
            top_p=float(c.top_p),
        )


def mesh(cfg: Any) -> jax.sharding.Mesh:
    """The configured ("data", "fsdp", "tensor") mesh over every device of every process."""
    with config_section("mesh"):
        return sharding.make_mesh(sharding.MeshConfig(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor))


def load(cfg: Any, name: str | None = None) -> Runtime:
    """The runtime of model `name` (default `cfg.model`) on the configured mesh, its weights sharded."""
    if cfg.dtype not in DTYPES:
        raise UserInputError(f"unknown dtype {cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    placement = mesh(cfg)
    try:
        return Runtime(load_model(name or cfg.model, DTYPES[cfg.dtype], placement), placement)
    except ValueError as err:
        raise UserInputError(str(err).splitlines()[0]) from None


def make_evaluator(model: Runtime, cfg: Any, max_new: int) -> Evaluator:
    """The K-adapter evaluator on `model`'s runtime."""
    with config_section("inner-loop"):
        engine = EngineConfig(
            inner=inner_config(cfg.inner, int(cfg.seed)),
            sampling=sampling_config(model.tokenizer, max_new=max_new),
            chunk_k=int(cfg.inner.chunk_k),
            warmup_steps=int(cfg.inner.warmup_steps),
            step_cost=float(cfg.inner.plan_step_cost),
            call_cost=float(cfg.inner.plan_call_cost),
        )
    return Evaluator(model, engine)


def restem_config(cfg: Any, model: Runtime) -> RestemConfig:
    r = cfg.restem
    with config_section("restem"):
        return RestemConfig(
            rounds=int(r.rounds),
            contexts_per_round=int(r.contexts_per_round),
            samples_per_context=int(r.samples_per_context),
            eval_seeds=int(r.eval_seeds),
            selection=r.selection,
            reward=r.reward,
            sampling=policy_sampling(model, r),
            sample_batch=int(r.sample_batch),
            sft=sft_config(cfg.sft),
            seed=int(cfg.seed),
        )


def finish(
    workdir: Path,
    rows: list[tuple[str, float, str]],
    stats: list[dict[str, Any]],
    title: str,
) -> dict[str, Any]:
    """Prints the table; writes results.json and results.png."""
    table = report.format_table(rows, title)
    print(table)
    payload = {
        "title": title,
        "table": [{"method": m, "accuracy": a, "note": n} for m, a, n in rows],
        "rounds": stats,
    }
    report.write_json(workdir / "results.json", payload)
    report.plot_results(workdir / "results.png", rows, stats, title)
    logging.info("wrote %s", workdir / "results.json")
    return payload
