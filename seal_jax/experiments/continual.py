"""Continual self-edits (`knowledge_continual`): passage after passage, the model writes one self-edit, adapts on
it, answers the questions of every passage edited so far, and keeps the update (the adapter is merged into its
weights) before the next passage. Measures forgetting (the paper's §5, Fig. 6).

Every sequence of `cfg.continual.passages` passages (seeded, without replacement, from cfg.data's held-out
selection) starts from the same policy: the base model, or a ReST-EM run's checkpoint
(`cfg.continual.policy_workdir` after `policy_round` rounds). `runs` × `sequences` sequences in all (the
reference: 8 × 8 from its RL checkpoint). The result is a (passages + 1) × passages lower-triangular matrix: row 0
the policy before any edit on every passage, row k after k edits on passages 0..k-1, each cell the mean and the
sample std over all sequences (per run, then pooled: `stats.pooled`).

Resumable: each step's evaluation goes to the journal and its adapter to an Orbax step checkpoint
(`continual/<run>_<sequence>/`); a restarted sequence merges its saved adapters back and goes on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from seal_jax import report, stats
from seal_jax.domains.base import Invalid
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.engine.evaluator import AdaptJob, Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import checks, common, knowledge
from seal_jax.experiments.workdir import open_workdir
from seal_jax.models.transformer import init_lora
from seal_jax.restem import merge_saved, restore_policy, sample_self_edits, stable_seed


def sequence_passages(
    pool: list[data.Passage], n: int, seed: int, run: int, sequence: int
) -> list[data.Passage]:
    """The `n` passages of one sequence, in edit order: drawn without replacement, seeded by (run, sequence)."""
    rng = np.random.default_rng(stable_seed(seed, "continual", run, sequence))
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


class Step(NamedTuple):
    """One continual step's evaluation: accuracy per passage seen, the answers and their verdicts (flat, in
    passage order), the adapter without its K axis (host), and whether training went non-finite."""

    rewards: list[float]
    answers: list[str]
    verdicts: list[dict[str, Any]]
    adapter: Any
    nonfinite: bool


def evaluate_step(
    evaluator: Evaluator, domain: KnowledgeDomain, job: AdaptJob, seen: list[data.Passage]
) -> Step:
    """Adapts one job (no examples: the model as it is) and scores its answers per passage of `seen`."""
    queries = [domain.eval_queries(p) for p in seen]
    job = AdaptJob(job.examples, job.hparams, job.seed, tuple(q.prompt for qs in queries for q in qs))
    adapted = evaluator.adapt_chunk([job])
    result = evaluator.answer_chunk(adapted, 1)[0]
    rewards, verdicts, start = [], [], 0
    for passage, qs in zip(seen, queries, strict=True):
        score = domain.score(passage, qs, result.answers[start : start + len(qs)])
        rewards.append(0.0 if result.nonfinite else score.reward)
        verdicts += score.details["verdicts"]
        start += len(qs)
    adapter = jax.tree.map(lambda x: distributed.to_host(x)[0], adapted.lora)
    return Step(rewards, list(result.answers), verdicts, adapter, result.nonfinite)


def run_sequence(
    model: Runtime,
    evaluator: Evaluator,
    domain: KnowledgeDomain,
    passages: list[data.Passage],
    cfg: Any,
    journal: Journal,
    checkpoints: RoundCheckpoints,
    tag: str,
) -> list[list[float]]:
    """One sequence from the policy `model` holds now: -> rows 0..K of accuracies (row k over passages 0..k-1,
    row 0 over all). Steps whose adapter is checkpointed are merged back, not recomputed."""
    lora = evaluator.cfg.inner.lora
    done = checkpoints.latest_round()
    keys = [f"{tag}/step{k}" for k in range(len(passages) + 1)]
    if done == len(passages) and all(k in journal for k in keys):
        return [journal.get(k)["rewards"] for k in keys]
    merge_saved(model, checkpoints, lora, done)
    sampling = common.policy_sampling(model.tokenizer, cfg.restem)
    no_update = AdaptJob((), domain.hparams, 0, ())
    if f"{tag}/step0" not in journal:
        step = evaluate_step(evaluator, domain, no_update, passages)
        journal.write(
            {
                "key": f"{tag}/step0",
                "passages": [p.id for p in passages],
                "rewards": step.rewards,
                "answers": step.answers,
                "verdicts": step.verdicts,
            }
        )
    for k in range(done + 1, len(passages) + 1):
        passage, seen = passages[k - 1], passages[:k]
        text = sample_self_edits(
            model, domain, [passage], 1, sampling, journal, f"{tag}/step{k}", cfg.seed, 1
        )[passage.id, 0]
        parsed = domain.parse_self_edit(passage, text)
        seed = stable_seed(cfg.seed, tag, k)
        job = (
            no_update if isinstance(parsed, Invalid) else AdaptJob(parsed.examples, parsed.hparams, seed, ())
        )
        step = evaluate_step(evaluator, domain, job, seen)
        adapter = step.adapter
        if isinstance(parsed, Invalid) or step.nonfinite:  # keep the weights: merge a no-op adapter (B = 0)
            adapter = init_lora(model.model.config, lora, jax.random.key(0))
        key = f"{tag}/step{k}"
        if key not in journal:  # else written before a kill: the recomputed step gives the same numbers
            journal.write(
                {
                    "key": key,
                    "passages": [p.id for p in seen],
                    "self_edit": text,
                    "invalid": parsed.reason if isinstance(parsed, Invalid) else None,
                    "nonfinite": step.nonfinite,
                    "rewards": step.rewards,
                    "answers": step.answers,
                    "verdicts": step.verdicts,
                }
            )
        checkpoints.save(k, adapter.to_pure_dict(), jax.random.key(seed), {"passage": passage.id})
        model.merge(adapter, lora)
    return [journal.get(k)["rewards"] for k in keys]


def matrix_stats(by_run: list[list[list[list[float]]]]) -> dict[str, Any]:
    """by_run[r][s][k][j]: accuracy on passage j after k edits in sequence s of run r. -> per-cell mean, std and
    count pooled over every sequence (from each run's own mean and std), and each run's own matrices."""
    steps = len(by_run[0][0])
    cells = [(k, j) for k in range(steps) for j in range(len(by_run[0][0][k]))]
    empty = [[None] * len(by_run[0][0][0]) for _ in range(steps)]  # row 0 covers every passage

    def cell_matrix(values: dict[tuple[int, int], float]) -> list[list[float | None]]:
        out = [row.copy() for row in empty]
        for (k, j), v in values.items():
            out[k][j] = v
        return out

    per_run, pooled = [], {}
    for runs in by_run:
        summaries = {c: stats.summary([seq[c[0]][c[1]] for seq in runs]) for c in cells}
        per_run.append(
            {
                "mean": cell_matrix({c: s[1] for c, s in summaries.items()}),
                "std": cell_matrix({c: s[2] for c, s in summaries.items()}),
                "sequences": len(runs),
            }
        )
    for c in cells:
        groups = [stats.summary([seq[c[0]][c[1]] for seq in runs]) for runs in by_run]
        pooled[c] = stats.pooled(*zip(*groups, strict=True))
    return {
        "mean": cell_matrix({c: p[1] for c, p in pooled.items()}),
        "std": cell_matrix({c: p[2] for c, p in pooled.items()}),
        "count": sum(len(runs) for runs in by_run),
        "runs": per_run,
    }


def run(cfg: Any) -> dict[str, Any]:
    """`knowledge_continual`: the mean/std forgetting matrix; writes results.json and results.png."""
    c = cfg.continual
    with common.config_section("continual"):
        require_positive("continual", runs=int(c.runs), sequences=int(c.sequences), passages=int(c.passages))
    _, pool = knowledge.passages(cfg)
    if len(pool) < int(c.passages):
        raise UserInputError(
            f"continual.passages={c.passages} needs data.num_eval >= it (the pool has {len(pool)})"
        )
    source = (
        common.restem_checkpoint(cfg, c.policy_workdir, int(c.policy_round)) if c.policy_workdir else None
    )
    spec = checks.model_spec(cfg.model)  # settings are checked before the weights load
    domain = knowledge.make_domain(cfg, spec.tokenizer, [], pool)
    engine = common.engine_config(cfg, spec.tokenizer, domain.eval_max_new_tokens)
    model = common.load(cfg)
    evaluator = Evaluator(model, engine)
    with open_workdir(cfg) as workdir:
        if source is not None:
            logging.info("starting from %s after %d round(s)", source[0], source[1])
            restore_policy(model, RoundCheckpoints(str(source[0])), source[2], source[1])
        initial = jax.tree.map(jnp.copy, model.base)  # every sequence starts from these weights
        journal = Journal(workdir / "journal", "continual")
        by_run, orders = [], []
        for r in range(int(c.runs)):
            sequences = []
            for s in tqdm(range(int(c.sequences)), desc=f"continual: run {r}", leave=False):
                passages = sequence_passages(pool, int(c.passages), cfg.seed, r, s)
                model.model = model.model.with_base(jax.tree.map(jnp.copy, initial))
                tag = f"run{r}_seq{s}"
                checkpoints = RoundCheckpoints(str(workdir / "continual" / tag))
                sequences.append(
                    run_sequence(model, evaluator, domain, passages, cfg, journal, checkpoints, tag)
                )
                orders.append({"run": r, "sequence": s, "passages": [p.id for p in passages]})
            by_run.append(sequences)
        policy = f"{source[0]} after {source[1]} round(s)" if source else cfg.model
        title = f"continual self-edits: {policy}, {c.passages} passages, {c.runs} × {c.sequences} sequence(s)"
        result = {"title": title, **matrix_stats(by_run), "sequences": orders}
        judge_line = knowledge.add_judged(cfg, workdir, result)
        report.write_json(workdir / "results.json", result)
        report.plot_matrix(workdir / "results.png", result["mean"], title)
        print(title)
        for k, row in enumerate(result["mean"]):
            print(f"after {k} edit(s): " + " ".join("  -  " if v is None else f"{100 * v:5.1f}" for v in row))
        if judge_line:
            print(judge_line)
        return result
