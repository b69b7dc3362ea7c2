"""Multi-passage continued pretraining (`knowledge_cpt`): n passages × k self-edits each, plus each passage once,
in ONE adaptation of the model; then the model answers the questions of all n passages (or a seeded subset) with
no passage in context. The paper's CPT setting (its §4.2 / Table 3).

Self-edits come from the model itself (`cfg.restem` sampling, journaled) or from a file in the reference's
format (`cfg.cpt.self_edit_file`: k of each passage's completions, a seeded sample); k = 0 trains on the passages
alone. Each self-edit is split into sequences as `cfg.cpt.split_newlines` says (the reference's CPT: no line
splitting); the passage is appended once per passage. Training modes (`cfg.cpt.mode`):
- "lora": one LoRA (the M-step's program, `engine/sft.py`) merged into the weights; the reference's v1 CPT;
- "full": every base weight (`engine/finetune.py`), AdamW moments sharded like the weights; the reference's v2.
The batch is `batch_size` × `grad_accum`: full fine-tuning accumulates gradients over `grad_accum` micro-batches
(a scan; the mean of the micro-batch means, as HF); LoRA trains one effective batch of batch_size × grad_accum
rows (the token mean over all of them).
Accuracy is over questions (the reference's CPT metric), with a 95% bootstrap interval over passages (a passage's
questions are resampled together) and the paired difference to the model before training. A rerun resumes: the
journal holds both rows' answers; the training is redone only when the trained model's evaluation is unfinished.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from seal_jax import report, stats
from seal_jax.domains.base import Invalid, TrainExample
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine.checkpoint import Journal
from seal_jax.engine.evaluator import Evaluator
from seal_jax.engine.finetune import FinetuneConfig, step_batches
from seal_jax.engine.inner import encode_example
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sft import SftConfig, sft
from seal_jax.engine.text import pad_id
from seal_jax.errors import UserInputError
from seal_jax.experiments import checks, common, intervals, knowledge
from seal_jax.experiments.workdir import open_workdir
from seal_jax.models.lora import LoraConfig
from seal_jax.restem import Item, evaluate_items, sample_self_edits, stable_seed

MODES = ("lora", "full")


FULL_LR_WARNING = 1e-4  # full fine-tuning above this rate is logged: LoRA's 1e-3 is 14x the reference's 7e-5


def training_config(c: Any) -> SftConfig | FinetuneConfig:
    """cfg.cpt -> the LoRA (`SftConfig`, warmup set per run) or full fine-tuning settings."""
    if c.mode not in MODES:
        raise UserInputError(f"cpt.mode={c.mode!r}: expected one of {list(MODES)}")
    with common.config_section("cpt"):
        if c.mode == "full":
            if float(c.learning_rate) > FULL_LR_WARNING:  # a LoRA rate carried over by mistake?
                logging.warning(
                    "cpt.mode=full at learning_rate=%g: every weight moves at the rate; the reference's full "
                    "fine-tuning used --config.cpt.learning_rate=7e-5 --config.cpt.epochs=1 "
                    "--config.cpt.warmup_ratio=0.03",
                    float(c.learning_rate),
                )
            return FinetuneConfig(
                learning_rate=float(c.learning_rate),
                epochs=int(c.epochs),
                batch_size=int(c.batch_size),
                grad_accum=int(c.grad_accum),
                warmup_ratio=float(c.warmup_ratio),
                moments_dtype=c.moments_dtype,
                max_length=int(c.max_length),
            )
        if int(c.grad_accum) < 1 or not 0 <= float(c.warmup_ratio) < 1:
            raise ValueError(f"grad_accum={c.grad_accum} must be >= 1 and warmup_ratio in [0, 1)")
        return SftConfig(
            lora=LoraConfig(int(c.lora_rank), float(c.lora_alpha), common.targets(c.lora_targets)),
            learning_rate=float(c.learning_rate),
            epochs=int(c.epochs),
            batch_size=int(c.batch_size) * int(c.grad_accum),
            max_length=int(c.max_length),
        )


def question_subset(passages: list[data.Passage], limit: int, seed: int) -> list[data.Passage]:
    """The passages with only the questions of a seeded sample of `limit` questions over all of them (all when
    `limit` is 0 or at least their number); passages left without a question are dropped."""
    pairs = [(i, j) for i, p in enumerate(passages) for j in range(len(p.questions))]
    if not limit or limit >= len(pairs):
        return passages
    rng = np.random.default_rng(stable_seed(seed, "cpt questions"))
    keep = {pairs[k] for k in rng.choice(len(pairs), size=limit, replace=False)}
    subset = [
        dataclasses.replace(p, questions=tuple(q for j, q in enumerate(p.questions) if (i, j) in keep))
        for i, p in enumerate(passages)
    ]
    return [p for p in subset if p.questions]


def self_edit_texts(
    model: Runtime, domain: KnowledgeDomain, passages: list[data.Passage], cfg: Any, journal: Journal
) -> dict[str, list[str]]:
    """k self-edits per passage: a seeded sample of the file's completions, or sampled from the model."""
    c, k = cfg.cpt, int(cfg.cpt.self_edits)
    if k == 0:
        return {p.id: [] for p in passages}
    if c.self_edit_file:
        try:
            completions = data.load_completions(c.self_edit_file)
        except (ValueError, OSError) as err:
            raise UserInputError(str(err).splitlines()[0]) from None
        out = {}
        for p in passages:
            have = completions.get(p.id, ())
            if len(have) < k:
                raise UserInputError(
                    f"{c.self_edit_file} has {len(have)} completion(s) of passage {p.id}, not {k}"
                )
            rng = np.random.default_rng(stable_seed(cfg.seed, "cpt self-edits", p.id))
            out[p.id] = [have[i] for i in sorted(rng.choice(len(have), size=k, replace=False))]
        return out
    sampling = common.policy_sampling(model.tokenizer, cfg.restem)
    texts = sample_self_edits(
        model, domain, passages, k, sampling, journal, "cpt", cfg.seed, int(cfg.restem.sample_batch)
    )
    return {p.id: [texts[p.id, i] for i in range(k)] for p in passages}


def training_sequences(
    domain: KnowledgeDomain, passages: list[data.Passage], texts: dict[str, list[str]]
) -> tuple[list[TrainExample], int]:
    """Every passage's self-edit sequences, then the passage once -> (examples, invalid self-edits skipped)."""
    examples, invalid = [], 0
    for p in passages:
        for text in texts[p.id]:
            parsed = domain.parse_self_edit(p, text)
            if isinstance(parsed, Invalid):
                invalid += 1
            else:
                examples += parsed.examples
        examples += domain.passage_only_self_edit(p).examples
    return examples, invalid


def train(model: Runtime, examples: list[TrainExample], train_cfg: Any, c: Any, seed: int) -> dict[str, Any]:
    """One adaptation of `model` (in place) on every example; -> its statistics."""
    if isinstance(train_cfg, FinetuneConfig):
        encoded = [encode_example(model.tokenizer, ex, True, train_cfg.max_length) for ex in examples]
        steps = step_batches(encoded, train_cfg, seed, pad_id(model.tokenizer))
        losses, skipped = model.finetune(steps, train_cfg)
    else:
        steps = -(-len(examples) // train_cfg.batch_size) * train_cfg.epochs
        train_cfg = dataclasses.replace(train_cfg, warmup_steps=int(np.ceil(float(c.warmup_ratio) * steps)))
        result = sft(model, examples, train_cfg, seed)
        model.merge(result.adapter, train_cfg.lora)
        losses, skipped = result.losses, 0
    logging.info("CPT: %d steps, loss %.3f -> %.3f", len(losses), losses[0], losses[-1])
    return {"steps": len(losses), "loss_first_last": [losses[0], losses[-1]], "nonfinite_steps": skipped}


def correct_by_passage(
    records: dict[str, dict[str, Any]], prefix: str, passages: list[data.Passage]
) -> np.ndarray:
    """[passages] questions answered right per passage, from the journaled verdicts."""
    return np.array(
        [sum(bool(v["correct"]) for v in records[f"{prefix}/{p.id}"]["verdicts"]) for p in passages],
        np.float64,
    )


def run(cfg: Any) -> dict[str, Any]:
    """`knowledge_cpt`: accuracy before and after one adaptation on every passage's self-edits."""
    c = cfg.cpt
    train_cfg = training_config(c)
    samples = intervals.bootstrap_samples(cfg)
    if int(c.self_edits) < 0 or int(c.eval_questions) < 0:
        raise UserInputError(
            f"cpt.self_edits={c.self_edits} and cpt.eval_questions={c.eval_questions} must be >= 0"
        )
    _, passages = knowledge.passages(cfg)
    spec = checks.model_spec(cfg.model)  # settings are checked before the weights load
    domain = dataclasses.replace(
        knowledge.make_domain(cfg, spec.tokenizer, [], passages),
        split_newlines=bool(c.split_newlines),
        add_context=False,
    )
    engine = common.engine_config(cfg, spec.tokenizer, domain.eval_max_new_tokens)
    model = common.load(cfg)
    evaluator = Evaluator(model, engine)
    evals = question_subset(passages, int(c.eval_questions), cfg.seed)
    with open_workdir(cfg) as workdir:
        report.write_file(workdir / "selection_eval.json", data.selection_json(passages))
        journal = Journal(workdir / "journal", "cpt")

        def evaluate(prefix: str) -> dict[str, dict[str, Any]]:
            items = [Item(f"{prefix}/{p.id}", p, None, None, 0) for p in evals]
            return evaluate_items(evaluator, domain, items, journal, f"CPT: {prefix}")

        before = evaluate("before")
        texts = self_edit_texts(model, domain, passages, cfg, journal)
        examples, invalid = training_sequences(domain, passages, texts)
        if not all(f"after/{p.id}" in journal for p in evals):
            stats_ = train(model, examples, train_cfg, c, stable_seed(cfg.seed, "cpt train"))
            if "train" not in journal:
                journal.write({"key": "train", **stats_})
        after = evaluate("after")
        # Accuracy over questions; intervals resample passages (a cluster bootstrap): a passage's questions
        # share its text and its self-edits, so they are not independent draws.
        a = correct_by_passage(before, "before", evals)
        b = correct_by_passage(after, "after", evals)
        asked = np.array([len(p.questions) for p in evals], np.float64)
        questions = int(asked.sum())
        indices = stats.resample_indices(len(evals), samples, stable_seed(cfg.seed, "cpt bootstrap"))
        diff, diff_ci = float((b - a).sum() / questions), stats.bootstrap_ratio(b - a, asked, indices)
        what = "passages only" if int(c.self_edits) == 0 else f"{c.self_edits} self-edit(s) per passage"
        title = f"CPT ({c.mode}): {cfg.model}, {len(passages)} passages, {what}, {questions} questions"
        table = [
            {
                "method": name,
                "accuracy": float(v.sum() / questions),
                "ci95": list(stats.bootstrap_ratio(v, asked, indices)),
                "passages": len(evals),
                "questions": questions,
            }
            for name, v in (("before training", a), ("after training", b))
        ]
        result = {
            "title": title,
            "table": table,
            "difference": {"points": diff, "ci95": list(diff_ci)},
            "sequences": len(examples),
            "invalid_self_edits": invalid,
            "training": journal.get("train"),
        }
        judge_line = knowledge.add_judged(cfg, workdir, result)
        report.write_json(workdir / "results.json", result)
        report.plot_intervals(workdir / "results.png", table, title)
        print(title)
        for row in table:
            low, high = row["ci95"]
            print(f"{row['method']:>16}: {100 * row['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}]")
        print(
            f"{'difference':>16}: {100 * diff:+.1f} points [{100 * diff_ci[0]:+.1f}, {100 * diff_ci[1]:+.1f}]"
        )
        if judge_line:
            print(judge_line)
        return result
