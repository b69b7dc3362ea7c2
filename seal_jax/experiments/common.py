"""Config -> objects shared by the experiment drivers (model, inner loop, evaluator, ReST-EM, workdir), and
the results they write."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from etils import epath

from seal_jax import defaults, report, sections
from seal_jax.domains.knowledge.grading import failed_verdicts
from seal_jax.domains.prompt_file import PromptSet, load_prompt_file
from seal_jax.engine import sharding
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.engine.evaluator import EngineConfig, Evaluator
from seal_jax.engine.inner import InnerConfig
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.engine.sft import SftConfig
from seal_jax.engine.text import for_tokenizer, sampling_config
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import checks, intervals
from seal_jax.experiments.checks import ModelSpec
from seal_jax.metrics import Metrics
from seal_jax.models.bundle import load_model
from seal_jax.restem import RestemConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def targets(spec: str) -> tuple[str, ...]:
    """ "q,v" -> ("q", "v")."""
    return tuple(t.strip() for t in spec.split(",") if t.strip())


def seal_label(rounds: int) -> str:
    """The held-out row of the policy after `rounds` ReST-EM rounds: "SEAL (1 round)", "SEAL (2 rounds)"."""
    return f"SEAL ({rounds} round{'' if rounds == 1 else 's'})"


@contextlib.contextmanager
def config_section(name: str) -> Iterator[None]:
    """Turns a ValueError raised while building the `name` settings into a one-line UserInputError."""
    try:
        yield
    except UserInputError:
        raise
    except ValueError as err:
        raise UserInputError(f"bad {name} config: {err}") from None


def inner_config(c: Any, seed: int) -> InnerConfig:
    """cfg.inner -> InnerConfig; `seed` seeds the epoch orders' shared stream."""
    with config_section("inner-loop"):
        return sections.build(InnerConfig(), c, defaults.INNER_KEYS, order_seed=seed)


def prompt_set(cfg: Any) -> PromptSet:
    """cfg.domain.prompt_file -> the templates it replaces ("" : seal_jax's wording throughout)."""
    if not cfg.domain.prompt_file:
        return PromptSet()
    try:
        return load_prompt_file(cfg.domain.prompt_file)
    except ValueError as err:
        raise UserInputError(str(err)) from None


def sft_config(c: Any) -> SftConfig:
    """cfg.sft -> SftConfig (the M-step)."""
    with config_section("sft"):
        return sections.build(SftConfig(), c, defaults.SFT_KEYS)


def check_eval(cfg: Any) -> None:
    """The held-out evaluation's counts (cfg.eval.samples self-edits per context, each with cfg.eval.seeds)."""
    with config_section("eval"):
        require_positive("eval", samples=int(cfg.eval.samples), seeds=int(cfg.eval.seeds))


def policy_sampling(tokenizer: Any, c: Any) -> SamplingConfig:
    """Self-edit sampling settings (cfg.restem): temperature, top-p, max new tokens, and the stop ids of the
    policy's `tokenizer`."""
    with config_section("restem sampling"):
        return for_tokenizer(sections.build(RestemConfig(), c, defaults.RESTEM_KEYS).sampling, tokenizer)


def mesh(cfg: Any, devices: list | None = None) -> jax.sharding.Mesh:
    """The configured ("data", "fsdp", "tensor") mesh over `devices` (default: every device of every process)."""
    with config_section("mesh"):
        return sharding.make_mesh(
            sections.build(sharding.MeshConfig(), cfg.mesh, defaults.MESH_KEYS), devices
        )


def load(cfg: Any, name: str | None = None) -> Runtime:
    """The runtime of model `name` (default `cfg.model`) on the configured mesh, its weights sharded."""
    if cfg.dtype not in DTYPES:
        raise UserInputError(f"unknown dtype {cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    placement = mesh(cfg)
    try:
        return Runtime(load_model(name or cfg.model, DTYPES[cfg.dtype], placement), placement)
    except ValueError as err:
        raise UserInputError(str(err).splitlines()[0]) from None


def model_specs(cfg: Any) -> tuple[ModelSpec, ModelSpec | None]:
    """The specs (config, tokenizer; weights unread) of `cfg.model` and of `cfg.writer_model` (None: the model
    writes its own self-edits)."""
    return checks.model_spec(cfg.model), (checks.model_spec(cfg.writer_model) if cfg.writer_model else None)


def load_models(cfg: Any, engine: EngineConfig) -> tuple[Runtime, Runtime, Evaluator]:
    """(the model, the self-edit writer: the model itself or `cfg.writer_model`, the model's evaluator)."""
    model = load(cfg)
    writer = load(cfg, cfg.writer_model) if cfg.writer_model else model
    return model, writer, Evaluator(model, engine)


def engine_config(cfg: Any, tokenizer: Any, max_new: int) -> EngineConfig:
    """The K-adapter evaluator's settings (answers of at most `max_new` tokens, greedy, with `tokenizer`'s stop
    ids); built before the weights load, so a bad value costs no load."""
    with config_section("inner-loop"):
        return sections.build(
            EngineConfig(),
            cfg.inner,
            defaults.ENGINE_KEYS,
            inner=inner_config(cfg.inner, int(cfg.seed)),
            sampling=sampling_config(tokenizer, max_new=max_new),
        )


def restem_config(cfg: Any, tokenizer: Any) -> RestemConfig:
    """cfg.restem + cfg.sft -> RestemConfig, sampling with the policy `tokenizer`'s stop ids."""
    with config_section("restem"):
        return sections.build(
            RestemConfig(),
            cfg.restem,
            defaults.RESTEM_KEYS,
            sampling=policy_sampling(tokenizer, cfg.restem),
            sft=sft_config(cfg.sft),
            seed=int(cfg.seed),
        )


def judge_summary(workdir: Path) -> dict[str, int]:
    """{"judged", "failed"}: answers sent to the LLM judge over every journal of the run, and how many of them
    got no verdict from it (counted wrong). Read from the journals, so a resumed run counts its earlier work."""
    records = [
        record
        for path in sorted((Path(workdir) / "journal").glob("*.jsonl"))
        for record in Journal(path.parent, path.stem).records.values()
    ]
    judged, failed = failed_verdicts(records)
    if failed:
        logging.warning("the judge gave no verdict on %d of %d answers: they count as wrong", failed, judged)
    return {"judged": judged, "failed": failed}


def judge_line(judge: dict[str, int]) -> str:
    """The line under a results table that says how many answers the judge gave no verdict on."""
    return f"judge: no verdict on {judge['failed']} of {judge['judged']} answers (counted wrong)"


def restem_checkpoint(cfg: Any, workdir: str, round_: int) -> tuple[epath.Path, int, SftConfig]:
    """(workdir, rounds, its M-step config) of a finished ReST-EM run to start a policy from (merged with
    `restem.restore_policy`): it must be a run of `cfg.model` with at least `round_` finished rounds (0: all)."""
    path = epath.Path(workdir)
    if not workdir or not (path / "config.json").exists() or not (path / "checkpoints").is_dir():
        raise UserInputError(f"{workdir!r} holds no ReST-EM run (config.json + checkpoints)")
    saved = json.loads((path / "config.json").read_text())
    if saved.get("model") != cfg.model:
        raise UserInputError(f"{workdir} is a run of {saved.get('model')!r}, not of model {cfg.model!r}")
    if saved.get("writer_model"):  # its checkpoints hold the writer's adapters, not the model's
        raise UserInputError(
            f"{workdir} is a teacher-student run (writer_model {saved['writer_model']!r}): its checkpoints "
            f"train the writer, not {cfg.model!r}"
        )
    finished = RoundCheckpoints(path).latest_round()
    rounds = round_ or finished
    if not 1 <= rounds <= finished:
        raise UserInputError(f"{workdir} has {finished} finished round(s), not {rounds}")
    return path, rounds, sft_config(ml_collections.ConfigDict(saved["sft"]))


def finish(
    workdir: Path,
    rows: list[tuple[str, float, str]],
    stats: list[dict[str, Any]],
    title: str,
    metrics: Metrics | None = None,
    judge: dict[str, int] | None = None,
    uncertainty: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prints the table (with the judge's failed verdicts under it when `judge` is given); writes results.json
    and results.png (and the table to `metrics`). `uncertainty` (`intervals.summarize`): the rows' 95%
    intervals and paired differences, printed, written to results.md and kept in results.json."""
    table = report.format_table(rows, title)
    if judge is not None:
        table += "\n" + judge_line(judge)
    print(table)
    payload = {
        "title": title,
        "table": [{"method": m, "accuracy": a, "note": n} for m, a, n in rows],
        "rounds": stats,
        **({"judge": judge} if judge is not None else {}),
    }
    if uncertainty is not None:
        text = intervals.markdown({"title": title, **uncertainty})
        print(text)
        report.write_file(workdir / "results.md", text)
        payload["intervals"] = uncertainty
    report.write_json(workdir / "results.json", payload)
    report.plot_results(workdir / "results.png", rows, stats, title)
    logging.info("wrote %s", workdir / "results.json")
    if metrics:
        metrics.write({f"heldout/{m}": a for m, a, _ in rows}, len(stats))
    return payload
