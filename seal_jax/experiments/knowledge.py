"""Knowledge incorporation (SQuAD): ReST-EM with held-out baselines, and replay of external self-edits.

`knowledge`: base (no update), passage only, round-0 self-edits, SEAL after R rounds, all on held-out passages.
(The paper's Table 2 layout, and the replay of self-edit files, are `experiments/table.py`.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seal_jax import report
from seal_jax.domains.base import InnerHparams
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.domains.knowledge.grading import OfflineGrader, OpenAIJudge, check_judge
from seal_jax.domains.prompt_file import PromptSet
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import EngineConfig, Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import format_chat
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import checks, common, grid, heldout, intervals
from seal_jax.experiments.workdir import open_workdir
from seal_jax.metrics import Metrics
from seal_jax.restem import RestemConfig, run_restem


def _pool(source: str, split: str) -> tuple[str, ...]:
    """What identifies a passage pool: splits only exist for the hub sources."""
    return (source, split) if source in ("hf", "tfds") else (source,)


def passages(cfg: Any) -> tuple[list[data.Passage], list[data.Passage]]:
    """(train, eval) passages, seeded; from one pool (demo / one JSON) they are disjoint slices."""
    d = cfg.data
    with common.config_section("data"):
        require_positive("data", num_train=int(d.num_train), num_eval=int(d.num_eval))
    try:
        eval_pool = data.load_passages(d.eval_source, d.eval_split)
        same = _pool(d.train_source, d.train_split) == _pool(d.eval_source, d.eval_split)
        train_pool = eval_pool if same else data.load_passages(d.train_source, d.train_split)
    except (ValueError, OSError, ImportError) as err:
        raise UserInputError(str(err).splitlines()[0]) from None
    evals = data.select_passages(eval_pool, d.num_eval, d.selection_seed, d.eval_start)
    start = d.eval_start + d.num_eval if train_pool is eval_pool else d.train_start
    train = data.select_passages(train_pool, d.num_train, d.selection_seed, start)
    if not train or not evals:
        raise UserInputError(f"data selection is empty: {len(train)} train / {len(evals)} eval passages")
    return train, evals


@dataclasses.dataclass(frozen=True)
class HeldOutRow:
    """One held-out method's scores: {grid setting (None = the run's own): {passage id: accuracy}}."""

    method: str
    label: str
    note: str
    per_setting: dict[grid.Setting | None, dict[str, float]]


def grader(cfg: Any, wording: PromptSet) -> Any:
    """The offline grader, or the LLM judge with its endpoint, temperature (< 0: the server's default, as the
    reference runs GPT-4.1) and time bounds from cfg.eval; the judge prompt's wording from `wording`."""
    e = cfg.eval
    if e.grader == "offline":
        return OfflineGrader()
    if e.grader != "judge":
        raise UserInputError(f"unknown grader {e.grader!r}: expected 'offline' or 'judge'")
    with common.config_section("judge"):
        temperature = float(e.judge_temperature)
        return OpenAIJudge(
            base_url=e.judge_base_url,
            model=e.judge_model,
            api_key_env=e.judge_api_key_env,
            api=e.judge_api,
            temperature=None if temperature < 0 else temperature,
            timeout_s=float(e.judge_timeout_s),
            retries=int(e.judge_retries),
            backoff_s=float(e.judge_backoff_s),
            budget_s=float(e.judge_budget_s),
            prompt_template=wording.judge,
        )


def judged(cfg: Any, workdir: Path) -> dict[str, int] | None:
    """The judge's verdict counts for results.json (None with the offline grader)."""
    return common.judge_summary(workdir) if cfg.eval.grader == "judge" else None


def add_judged(cfg: Any, workdir: Path, result: dict[str, Any]) -> str:
    """Puts the judge's verdict counts in `result["judge"]`; -> the line to print under the results table
    ("" with the offline grader)."""
    judge = judged(cfg, workdir)
    if judge is None:
        return ""
    result["judge"] = judge
    return common.judge_line(judge)


def make_domain(
    cfg: Any, tokenizer: Any, train: list, evals: list, writer_tokenizer: Any = None
) -> KnowledgeDomain:
    """The knowledge domain over `train` and `evals`, its prompts in the adapted model's `tokenizer`, the
    self-edit prompts in `writer_tokenizer`'s chat template (teacher-student; default: `tokenizer`'s)."""
    chat = functools.partial(format_chat, tokenizer) if cfg.domain.chat else None
    writer_chat = (
        functools.partial(format_chat, writer_tokenizer) if cfg.domain.chat and writer_tokenizer else None
    )
    wording = common.prompt_set(cfg)
    with common.config_section("domain"):
        require_positive(
            "knowledge inner loop",
            learning_rate=float(cfg.inner.learning_rate),
            epochs=int(cfg.inner.epochs),
            max_sequences=int(cfg.domain.max_sequences),
        )
    hparams = InnerHparams(
        learning_rate=float(cfg.inner.learning_rate), epochs=int(cfg.inner.epochs), loss_on_all_tokens=True
    )
    grade = grader(cfg, wording)
    if isinstance(grade, OpenAIJudge):
        check_judge(grade)
    try:
        return KnowledgeDomain(
            tuple(train),
            tuple(evals),
            prompt=cfg.domain.prompt,
            format_chat=chat,
            hparams=hparams,
            split_newlines=cfg.domain.split_newlines,
            add_context=cfg.domain.add_context,
            max_sequences=int(cfg.domain.max_sequences),
            grader=grade,
            writer_chat=writer_chat,
            wording=wording,
        )
    except (KeyError, ValueError) as err:
        raise UserInputError(f"bad domain config: {err}") from None


def evaluate_heldout(
    method: str,
    evaluator: Evaluator,
    domain: KnowledgeDomain,
    policy: Runtime,
    cfg: Any,
    journal: Journal,
    settings: Sequence[grid.Setting] = (),
) -> dict[grid.Setting | None, dict[str, float]]:
    """Held-out accuracy per passage ({passage id: accuracy}) of "base", "passage", or self-edits sampled from
    `policy` ("round0", "seal"), with the run's inner settings (key None) and each of `settings` (the base model
    trains with none)."""
    contexts, seeds = domain.contexts("eval"), int(cfg.eval.seeds)
    if method == "base":
        settings = ()
        records = heldout.evaluate_fixed(
            method, evaluator, domain, contexts, lambda c: None, 1, journal, cfg.seed
        )
    elif method == "passage":
        records = heldout.evaluate_fixed(
            method,
            evaluator,
            domain,
            contexts,
            domain.passage_only_self_edit,
            seeds,
            journal,
            cfg.seed,
            settings,
        )
    else:
        records = heldout.evaluate_sampled(
            method,
            evaluator,
            domain,
            contexts,
            policy,
            int(cfg.eval.samples),
            seeds,
            common.policy_sampling(policy.tokenizer, cfg.restem),
            int(cfg.restem.sample_batch),
            journal,
            cfg.seed,
            settings,
            int(cfg.restem.sample_attempts),
        )
    return {
        g: heldout.context_means(records, f"{grid.method_key(method, g)}/")
        for g in grid.with_settings(settings)
    }


def check_self_edit_prompts(
    cfg: Any, writer: checks.ModelSpec, domain: KnowledgeDomain, max_new: int
) -> None:
    """Every passage's self-edit prompt, plus `max_new` sampled tokens, fits the writer's context."""
    contexts = domain.contexts("train") + domain.contexts("eval")
    checks.check_prompts(
        "self-edit sampling",
        writer,
        [domain.self_edit_prompt(c) for c in contexts],
        max_new,
        int(cfg.restem.sample_batch),
        [f"passage {c.id}" for c in contexts],
    )


def check_budgets(
    cfg: Any,
    spec: checks.ModelSpec,
    writer: checks.ModelSpec,
    domain: KnowledgeDomain,
    engine: EngineConfig,
    restem_cfg: RestemConfig | None,
) -> None:
    """Token budgets, memory and step counts, before any weights load: self-edit prompts (of the writer) and
    closed-book questions (of the model) fit the context; training sequences longer than `inner.max_length` are
    logged as truncated; the run's optimizer steps stay under the cap. `restem_cfg` None: no ReST-EM (replay)."""
    contexts = domain.contexts("train") + domain.contexts("eval")
    if restem_cfg is not None:
        check_self_edit_prompts(cfg, writer, domain, restem_cfg.sampling.max_new)
    queries = [(q.prompt, f"passage {c.id}") for c in contexts for q in domain.eval_queries(c)]
    checks.check_prompts(
        "closed-book answers",
        spec,
        [q for q, _ in queries],
        domain.eval_max_new_tokens,
        engine.chunk_k * max(len(c.questions) for c in contexts),
        [name for _, name in queries],
    )
    passages_text = [e.completion for c in contexts for e in domain.passage_only_self_edit(c).examples]
    checks.warn_truncation("inner loop", spec, passages_text, engine.inner.max_length, "inner.max_length")
    if restem_cfg is None:
        return
    e = cfg.eval
    per_eval = int(e.seeds) * (1 + 2 * int(e.samples)) + 1  # passage, round-0 and SEAL self-edits, base
    adaptations = len(domain.contexts("eval")) * per_eval
    adaptations += (
        restem_cfg.rounds
        * restem_cfg.contexts_per_round
        * restem_cfg.samples_per_context
        * (restem_cfg.eval_seeds)
    )
    checks.check_training(
        "knowledge",
        spec.config,
        engine,
        restem_cfg,
        adaptations,
        domain.max_sequences + 1,
        domain.hparams.epochs,
    )


def run(cfg: Any) -> dict[str, Any]:
    """ReST-EM on the knowledge domain with the held-out table; writes results.json, results.md (the rows'
    intervals and paired differences) and results.png."""
    # Everything checkable is checked before the weights load and before the workdir is entered.
    common.prompt_set(cfg)
    train, evals = passages(cfg)
    settings = grid.parse(cfg.eval.inner_grid)
    spec, writer_spec = common.model_specs(cfg)
    domain = make_domain(cfg, spec.tokenizer, train, evals, writer_spec and writer_spec.tokenizer)
    engine = common.engine_config(cfg, spec.tokenizer, domain.eval_max_new_tokens)
    restem_cfg = common.restem_config(cfg, (writer_spec or spec).tokenizer)
    common.check_eval(cfg)
    intervals.bootstrap_samples(cfg)
    check_budgets(cfg, spec, writer_spec or spec, domain, engine, restem_cfg)
    model, writer, evaluator = common.load_models(cfg, engine)
    with (
        open_workdir(cfg) as workdir,
        Metrics(workdir) as metrics,
    ):  # only now: every setting and the data are good
        report.write_file(workdir / "selection_train.json", data.selection_json(train))
        report.write_file(workdir / "selection_eval.json", data.selection_json(evals))
        journal = Journal(workdir / "journal", "heldout")

        def held_out(method: str, label: str, note: str, policy: Runtime) -> HeldOutRow:
            return HeldOutRow(
                method,
                label,
                note,
                evaluate_heldout(method, evaluator, domain, policy, cfg, journal, settings),
            )

        scored = []
        if cfg.eval.baselines:
            scored += [
                held_out("base", "base (no update)", "", model),
                held_out("passage", "passage only", "", model),
                held_out("round0", "round-0 self-edits", "no RL", writer),
            ]
        stats = run_restem(
            writer, domain, evaluator, restem_cfg, str(workdir), {"config": cfg.to_json()}, metrics=metrics
        )
        scored.append(held_out("seal", common.seal_label(cfg.restem.rounds), "ReST-EM", writer))
        title = f"knowledge: {cfg.model}, {len(evals)} held-out passages"
        return common.finish(
            workdir,
            [
                entry
                for row in scored
                for entry in grid.rows(
                    row.label, row.note, {g: heldout.macro(v) for g, v in row.per_setting.items()}
                )
            ],
            stats,
            title,
            metrics,
            judged(cfg, workdir),
            held_out_intervals(cfg, scored, evals),
        )


def held_out_intervals(cfg: Any, scored: list[HeldOutRow], evals: list[data.Passage]) -> dict[str, Any]:
    """The held-out rows (one per method and setting) with 95% bootstrap intervals over passages and every
    pair's paired difference (e.g. SEAL − round-0 self-edits: the effect of the ReST-EM rounds)."""
    rows, scores = [], {}
    for row in scored:
        for g, per_passage in row.per_setting.items():
            key = grid.method_key(row.method, g)
            rows.append((key, grid.row_label(row.label, g)))
            scores[key] = per_passage
    return intervals.over_passages(rows, scores, evals, cfg)
