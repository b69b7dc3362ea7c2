"""The paper's Table 2 layout for any model, with bootstrap intervals: `knowledge_table` (and `knowledge_replay`).

Rows (`cfg.table.rows`, in order): `base` (no update), `passage` (train on the passage only), `self_edits` (the
model's own, `cfg.eval.samples` × `cfg.eval.seeds` per passage), `restem` (a ReST-EM run's self-edits adapted onto
its own checkpoint: `cfg.table.restem_workdir` after `restem_round` rounds, as the paper measured SEAL), then one
row per self-edit file (`cfg.table.files`: `<directory>/<name>_val.json`, the reference's format; the first
completion of each passage, an empty one meaning the passage alone). A row's value is the macro accuracy over its
passages; its 95% interval is a percentile bootstrap over passages, and every pair of rows gets the paired
bootstrap interval of their difference over the passages both scored. Writes results.{md,json,png}.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ml_collections
from absl import logging

from seal_jax import report
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.engine.evaluator import Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import checks, common, heldout, intervals, knowledge
from seal_jax.experiments.workdir import open_workdir
from seal_jax.restem import restore_policy

BUILT_IN = ("base", "passage", "self_edits", "restem")
LABELS = {
    "base": "base (no update)",
    "passage": "passage only",
    "self_edits": "own self-edits (no RL)",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row: `key` is its journal prefix; `file` the self-edit file of a file row."""

    key: str
    label: str
    file: Path | None = None


def table_rows(t: Any, restem_round: int = 0) -> list[Row]:
    """cfg.table -> rows (built-in rows, then the files); unknown or repeated names are one-line errors."""
    names = common.targets(t.rows)
    unknown = sorted(set(names) - set(BUILT_IN))
    if unknown:
        raise UserInputError(f"table.rows: unknown row(s) {unknown}: expected names among {list(BUILT_IN)}")
    rows = [
        Row(n, LABELS.get(n, f"ReST-EM round {restem_round} self-edits, on its checkpoint")) for n in names
    ]
    rows += [
        Row(f"file_{n}", f"{n} self-edits (file)", Path(t.directory) / f"{n}_val.json")
        for n in common.targets(t.files)
    ]
    if not rows:
        raise UserInputError("the table has no rows: set table.rows and/or table.files")
    keys = [r.key for r in rows]
    if len(set(keys)) != len(keys):
        raise UserInputError(f"table rows repeat: {keys}")
    return rows


def load_files(rows: list[Row]) -> dict[str, dict[str, tuple[str, ...]]]:
    """{row key: {passage id: completions}} for the file rows, read before any work."""
    try:
        return {r.key: data.load_completions(r.file) for r in rows if r.file is not None}
    except (ValueError, OSError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None


def evaluate_row(
    row: Row,
    evaluator: Evaluator,
    domain: KnowledgeDomain,
    model: Runtime,
    completions: dict[str, tuple[str, ...]] | None,
    cfg: Any,
    journal: Journal,
) -> dict[str, float]:
    """{passage id: accuracy} of one row (journaled under `row.key/`)."""
    contexts, seeds = domain.contexts("eval"), int(cfg.eval.seeds)
    if completions is not None:  # a file row: the passages the file has a completion for
        first = {c.id: completions[c.id][0] for c in contexts if completions.get(c.id)}

        def parsed(c: data.Passage) -> Any:
            text = first[c.id]
            return domain.parse_self_edit(c, text) if text.strip() else domain.passage_only_self_edit(c)

        with_file = [c for c in contexts if c.id in first]
        records = heldout.evaluate_fixed(
            row.key,
            evaluator,
            domain,
            with_file,
            parsed,
            seeds,
            journal,
            cfg.seed,
            text=lambda c: first[c.id],
        )
    elif row.key == "base":
        records = heldout.evaluate_fixed(
            row.key, evaluator, domain, contexts, lambda c: None, 1, journal, cfg.seed
        )
    elif row.key == "passage":
        records = heldout.evaluate_fixed(
            row.key, evaluator, domain, contexts, domain.passage_only_self_edit, seeds, journal, cfg.seed
        )
    else:  # self_edits / restem: `model`'s own (for restem, the checkpoint merged in place), adapted onto it
        records = heldout.evaluate_sampled(
            row.key,
            evaluator,
            domain,
            contexts,
            model,
            int(cfg.eval.samples),
            seeds,
            common.policy_sampling(model.tokenizer, cfg.restem),
            int(cfg.restem.sample_batch),
            journal,
            cfg.seed,
        )
    return heldout.context_means(records, f"{row.key}/")


def evaluate_table(
    cfg: Any, rows: list[Row], evals: list[data.Passage], title: str, restem: tuple | None = None
) -> dict[str, Any]:
    """Loads the model, evaluates every row (the `restem` row last: it merges the checkpoint into the weights)
    and writes results.{md,json,png}."""
    intervals.bootstrap_samples(cfg)
    common.check_eval(cfg)
    completions = load_files(rows)
    spec = checks.model_spec(cfg.model)  # the files and settings are checked before the weights load
    domain = knowledge.make_domain(cfg, spec.tokenizer, [], evals)
    engine = common.engine_config(cfg, spec.tokenizer, domain.eval_max_new_tokens)
    knowledge.check_budgets(cfg, spec, spec, domain, engine, None)
    if any(r.key in ("self_edits", "restem") for r in rows):  # rows that sample self-edits
        max_new = common.policy_sampling(spec.tokenizer, cfg.restem).max_new
        knowledge.check_self_edit_prompts(cfg, spec, domain, max_new)
    model = common.load(cfg)
    evaluator = Evaluator(model, engine)
    ordered = sorted(rows, key=lambda r: r.key == "restem")
    with open_workdir(cfg) as workdir:
        report.write_file(workdir / "selection_eval.json", data.selection_json(evals))
        journal = Journal(workdir / "journal", "table")
        scores = {}
        for row in ordered:
            if row.key == "restem":
                source, rounds, sft_cfg = restem
                logging.info("merging %d round(s) of %s into the weights", rounds, source)
                restore_policy(model, RoundCheckpoints(str(source)), sft_cfg, rounds)
            scores[row.key] = evaluate_row(
                row, evaluator, domain, model, completions.get(row.key), cfg, journal
            )
        result = {
            "title": title,
            **intervals.over_passages([(r.key, r.label) for r in rows], scores, evals, cfg),
        }
        text = intervals.markdown(result)
        if line := knowledge.add_judged(cfg, workdir, result):
            text += f"\n{line}\n"
        print(text)
        report.write_file(workdir / "results.md", text)
        report.write_json(workdir / "results.json", result)
        report.plot_intervals(workdir / "results.png", result["table"], title)
        return result


def run(cfg: Any) -> dict[str, Any]:
    """`knowledge_table`: the rows of `cfg.table` on cfg.data's held-out passages."""
    restem = None
    rows = table_rows(cfg.table)
    if any(r.key == "restem" for r in rows):
        restem = common.restem_checkpoint(cfg, cfg.table.restem_workdir, int(cfg.table.restem_round))
        rows = table_rows(cfg.table, restem[1])
    _, evals = knowledge.passages(cfg)
    return evaluate_table(cfg, rows, evals, f"knowledge table: {cfg.model}, {len(evals)} passages", restem)


def replay(cfg: Any) -> dict[str, Any]:
    """`knowledge_replay`: the base row and the self-edit files of `cfg.replay` on the first
    `replay.num_passages` passages of the first file (the reference's validation order)."""
    if not str(cfg.replay.directory).strip():
        raise UserInputError(
            "replay.directory is unset: name the folder of <name>_val.json self-edit files "
            "(--config.replay.directory=DIR)"
        )
    common.prompt_set(cfg)
    with common.config_section("replay"):
        require_positive("replay", num_passages=int(cfg.replay.num_passages))
    if not common.targets(cfg.replay.names):
        raise UserInputError("replay.names is empty: name at least one self-edit file (e.g. 'base,iter2')")
    table = ml_collections.ConfigDict(
        {"rows": "base", "files": cfg.replay.names, "directory": cfg.replay.directory}
    )
    rows = table_rows(table)
    try:
        evals = data.load_json(rows[1].file)[: int(cfg.replay.num_passages)]
    except (ValueError, OSError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None
    title = f"replay: {cfg.model}, {len(evals)} passages, first completion each"
    return evaluate_table(cfg, rows, evals, title)
