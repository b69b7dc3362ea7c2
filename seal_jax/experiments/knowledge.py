"""Knowledge incorporation (SQuAD): ReST-EM with held-out baselines, and replay of external self-edits.

`knowledge`: base (no update), passage only, round-0 self-edits, SEAL after R rounds, all on held-out passages.
(The paper's Table 2 layout, and the replay of self-edit files, are `experiments/table.py`.)
"""

from __future__ import annotations

import functools
from typing import Any

from seal_jax import report
from seal_jax.domains.base import InnerHparams
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.domains.knowledge.grading import OfflineGrader, OpenAIJudge
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import format_chat
from seal_jax.errors import UserInputError, require_positive
from seal_jax.experiments import common, heldout
from seal_jax.experiments.workdir import open_workdir
from seal_jax.restem import run_restem


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


def grader(cfg: Any) -> Any:
    if cfg.eval.grader == "offline":
        return OfflineGrader()
    if cfg.eval.grader == "judge":
        return OpenAIJudge(
            base_url=cfg.eval.judge_base_url,
            model=cfg.eval.judge_model,
            api_key_env=cfg.eval.judge_api_key_env,
        )
    raise UserInputError(f"unknown grader {cfg.eval.grader!r}: expected 'offline' or 'judge'")


def make_domain(cfg: Any, model: Runtime, train: list, evals: list) -> KnowledgeDomain:
    chat = functools.partial(format_chat, model.tokenizer) if cfg.domain.chat else None
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
            grader=grader(cfg),
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
) -> float:
    """Held-out macro accuracy: "base", "passage", or self-edits sampled from `policy` ("round0", "seal")."""
    contexts, seeds = domain.contexts("eval"), int(cfg.eval.seeds)
    if method == "base":
        records = heldout.evaluate_fixed(
            method, evaluator, domain, contexts, lambda c: None, 1, journal, cfg.seed
        )
    elif method == "passage":
        records = heldout.evaluate_fixed(
            method, evaluator, domain, contexts, domain.passage_only_self_edit, seeds, journal, cfg.seed
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
            common.policy_sampling(policy, cfg.restem),
            int(cfg.restem.sample_batch),
            journal,
            cfg.seed,
        )
    return heldout.accuracy(records, f"{method}/")


def run(cfg: Any) -> dict[str, Any]:
    """ReST-EM on the knowledge domain with the held-out table; writes results.json and results.png."""
    train, evals = passages(cfg)  # bad data fails before the model loads
    model = common.load(cfg)
    writer = common.load(cfg, cfg.writer_model) if cfg.writer_model else model
    domain = make_domain(cfg, writer, train, evals)
    evaluator = common.make_evaluator(model, cfg, domain.eval_max_new_tokens)
    restem_cfg = common.restem_config(cfg, writer)
    common.check_eval(cfg)
    with open_workdir(cfg) as workdir:  # only now: every setting and the data are good
        report.write_file(workdir / "selection_train.json", data.selection_json(train))
        report.write_file(workdir / "selection_eval.json", data.selection_json(evals))
        journal = Journal(workdir / "journal", "heldout")
        rows = []
        if cfg.eval.baselines:
            rows += [
                ("base (no update)", evaluate_heldout("base", evaluator, domain, model, cfg, journal), ""),
                ("passage only", evaluate_heldout("passage", evaluator, domain, model, cfg, journal), ""),
                (
                    "round-0 self-edits",
                    evaluate_heldout("round0", evaluator, domain, writer, cfg, journal),
                    "no RL",
                ),
            ]
        stats = run_restem(writer, domain, evaluator, restem_cfg, str(workdir), {"config": cfg.to_json()})
        rows.append(
            (
                f"SEAL ({cfg.restem.rounds} rounds)",
                evaluate_heldout("seal", evaluator, domain, writer, cfg, journal),
                "ReST-EM",
            )
        )
        return common.finish(workdir, rows, stats, f"knowledge: {cfg.model}, {len(evals)} held-out passages")
