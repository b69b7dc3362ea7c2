"""ReST-EM, the outer loop of SEAL (Algorithm 1), domain-agnostic.

Per round: sample N self-edits per context from the current policy (E-step sampling); apply each one with the inner
loop (`eval_seeds` LoRA runs) and reward it by the adapted model's score; keep the best-of-N per context (or every
positive one); SFT the policy on the kept (prompt, self-edit) pairs and merge (M-step). Every finished unit of work
is journaled and every finished round checkpointed, so a killed run resumes where it stopped with the same numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from tqdm import tqdm

from seal_jax.domains.base import Domain, InnerHparams, Invalid, SelfEdit, TrainExample
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.engine.evaluator import AdaptJob, Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.engine.sft import SftConfig, sft
from seal_jax.errors import UserInputError, require_positive
from seal_jax.metrics import Metrics, summarise_curves
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import init_lora


@dataclasses.dataclass(frozen=True)
class RestemConfig:
    """Outer-loop settings; defaults are the reference's knowledge run (docs/reference.md#knowledge-rest-em)."""

    rounds: int = 2
    contexts_per_round: int = 50
    samples_per_context: int = 5
    eval_seeds: int = 3
    selection: str = "best_of_n"
    reward: str = "absolute"
    sampling: SamplingConfig = SamplingConfig(max_new=8192, temperature=1.0, top_p=0.95)
    sample_batch: int = 16
    sample_attempts: int = 1  # samples per self-edit until it parses (1: an unparseable one scores 0)
    sft: SftConfig = SftConfig()
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(
            "restem",
            contexts_per_round=self.contexts_per_round,
            samples_per_context=self.samples_per_context,
            eval_seeds=self.eval_seeds,
            sample_batch=self.sample_batch,
            sample_attempts=self.sample_attempts,
        )
        if self.rounds < 0:
            raise ValueError(f"restem: rounds={self.rounds} must be >= 0")
        if self.selection not in ("best_of_n", "all_positive"):
            raise ValueError(f"selection must be 'best_of_n' or 'all_positive', got {self.selection!r}")
        if self.reward not in ("absolute", "gain"):
            raise ValueError(f"reward must be 'absolute' or 'gain', got {self.reward!r}")


@dataclasses.dataclass(frozen=True)
class Item:
    """One (context, self-edit, seed) evaluation; `parsed` None means the unadapted model (a baseline).
    `seed_index`: which of the self-edit's seeds this is (its data-order stream, `AdaptJob.order_stream`)."""

    key: str
    context: Any
    text: str | None
    parsed: SelfEdit | Invalid | None
    seed: int
    seed_index: int = 0


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from any printable parts (stable across processes, unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little") & 0x7FFFFFFF


def sample_self_edits(
    policy: Runtime,
    domain: Domain,
    contexts: Sequence[Any],
    n: int,
    sampling: SamplingConfig,
    journal: Journal,
    tag: str,
    seed: int,
    batch: int,
    attempts: int = 1,
) -> dict[tuple[str, int], str]:
    """N self-edits per context from `policy`, in fixed batches journaled as `{tag}/sample/{ctx}/{i}`.

    A reply the domain cannot parse is resampled, up to `attempts` samples in all (the reference sampled ARC
    plans until it had N valid ones); one still invalid after that is kept (and scores 0). Each record holds its
    `attempts` and the `rejected` replies' reasons. A batch is journaled only once all its attempts are done.
    """
    pairs = [(c, i) for c in contexts for i in range(n)]
    out: dict[tuple[str, int], str] = {}
    starts = range(0, len(pairs), batch)
    for start in tqdm(starts, desc=f"{tag}: sample self-edits", leave=False):
        chunk = pairs[start : start + batch]
        keys = [f"{tag}/sample/{c.id}/{i}" for c, i in chunk]
        if not all(k in journal for k in keys):
            contexts_of = [c for c, _ in chunk]
            texts, rejected = _sample_valid(
                policy, domain, contexts_of, sampling, (seed, tag, start), attempts
            )
            for key, (c, i), text, reasons in zip(keys, chunk, texts, rejected, strict=True):
                if key in journal:  # written before a kill
                    continue
                journal.write(
                    {
                        "key": key,
                        "context": c.id,
                        "sample": i,
                        "text": text,
                        "attempts": len(reasons) + 1,
                        "rejected": reasons,
                    }
                )
        out.update({(c.id, i): journal.get(k)["text"] for k, (c, i) in zip(keys, chunk, strict=True)})
    return out


def _sample_valid(
    policy: Runtime,
    domain: Domain,
    contexts: Sequence[Any],
    sampling: SamplingConfig,
    seed_parts: tuple,
    attempts: int,
) -> tuple[list[str], list[list[str]]]:
    """One self-edit per context, the unparseable ones resampled (attempt a > 0 seeded by `seed_parts` + a);
    returns the texts and, per context, the reasons its rejected samples were invalid."""
    prompts = [domain.self_edit_prompt(c) for c in contexts]
    grammar = domain.self_edit_grammar
    texts = policy.sample(prompts, sampling, stable_seed(*seed_parts), grammar)
    rejected: list[list[str]] = [[] for _ in contexts]
    for attempt in range(1, attempts):
        invalid = {j: domain.parse_self_edit(c, texts[j]) for j, c in enumerate(contexts)}
        redo = [j for j, parsed in invalid.items() if isinstance(parsed, Invalid)]
        if not redo:
            break
        for j in redo:
            rejected[j].append(invalid[j].reason)
        fresh = policy.sample(
            [prompts[j] for j in redo], sampling, stable_seed(*seed_parts, attempt), grammar
        )
        for j, text in zip(redo, fresh, strict=True):
            texts[j] = text
    return texts, rejected


def sampling_stats(journal: Journal, keys: Sequence[str], invalid: int) -> dict[str, Any]:
    """Round statistics of the samples journaled under `keys`, `invalid` of which are still unparseable:
    the samples drawn and the share of them that did not parse (the invalid rate)."""
    drawn = sum(journal.get(k).get("attempts", 1) for k in keys)
    rejected = sum(len(journal.get(k).get("rejected", ())) for k in keys)
    return {"sample_attempts": drawn, "invalid_rate": (rejected + invalid) / max(drawn, 1)}


def grading_failed(record: dict[str, Any]) -> bool:
    """Whether a journaled evaluation holds answers the grader gave no verdict on (an LLM judge's outage: its
    verdicts' "source" is "failed")."""
    return any(isinstance(v, dict) and v.get("source") == "failed" for v in record.get("verdicts") or ())


def regrade(domain: Domain, item: Item, record: dict[str, Any], journal: Journal) -> None:
    """Scores a journaled evaluation whose grading failed again from its kept answers (no adaptation), so an
    outage does not leave them wrong in a resumed run; journals the new record when a verdict changed."""
    score = domain.score(item.context, domain.eval_queries(item.context), record["answers"])
    if score.details.get("verdicts") != record.get("verdicts"):
        reward = 0.0 if record.get("nonfinite") else score.reward
        journal.write({**record, "reward": reward, **score.details})


def evaluate_items(
    evaluator: Evaluator, domain: Domain, items: Sequence[Item], journal: Journal, desc: str
) -> dict[str, dict[str, Any]]:
    """Applies and scores every item (chunk by chunk, journaled); an Invalid self-edit scores 0 untrained. A
    journaled evaluation whose grading failed is graded again from its answers."""
    records: dict[str, dict[str, Any]] = {}
    runnable = []
    for item in items:
        done = journal.get(item.key)
        if done is not None and done.get("self_edit") != item.text:
            raise UserInputError(
                f"{journal.path} holds {item.key} for another self-edit text than this run's (was a self-edit "
                "file changed?); use a new --config.workdir"
            )
        if done is not None and grading_failed(done):
            regrade(domain, item, done, journal)
        if isinstance(item.parsed, Invalid):
            if item.key not in journal:
                journal.write(
                    {
                        "key": item.key,
                        "context": item.context.id,
                        "self_edit": item.text,
                        "reward": 0.0,
                        "invalid": item.parsed.reason,
                        "seed": item.seed,
                    }
                )
            records[item.key] = journal.get(item.key)
        else:
            runnable.append(item)
    queries = {id(it): domain.eval_queries(it.context) for it in runnable}
    jobs = [
        AdaptJob(
            examples=it.parsed.examples if it.parsed else (),
            hparams=it.parsed.hparams if it.parsed else _NO_TRAINING,
            seed=it.seed,
            queries=tuple(q.prompt for q in queries[id(it)]),
            order_stream=it.seed_index,
        )
        for it in runnable
    ]
    plan = evaluator.plan(jobs)
    for idx in tqdm(plan, desc=desc, leave=False):
        chunk = [runnable[i] for i in idx]
        if not all(it.key in journal for it in chunk):
            results = evaluator.run_chunk([jobs[i] for i in idx])
            for it, res in zip(chunk, results, strict=True):
                if it.key in journal:  # written before a kill; the recomputed chunk gives the same numbers
                    continue
                score = domain.score(it.context, queries[id(it)], res.answers)
                reward = 0.0 if res.nonfinite else score.reward
                journal.write(
                    {
                        "key": it.key,
                        "context": it.context.id,
                        "self_edit": it.text,
                        "seed": it.seed,
                        "n_sequences": len(it.parsed.examples) if it.parsed else 0,
                        "reward": reward,
                        "nonfinite": res.nonfinite,
                        "final_loss": res.losses[-1] if res.losses else None,
                        "losses": res.losses,
                        **score.details,
                    }
                )
        records.update({it.key: journal.get(it.key) for it in chunk})
    return records


_NO_TRAINING = InnerHparams(learning_rate=0.0, epochs=0)


def round_contexts(contexts: Sequence[Any], round_: int, per_round: int) -> list[Any]:
    """Round r's contexts: the r-th block of `per_round` (the reference used new passages each round),
    wrapping around when the pool is smaller than rounds × per_round."""
    if not contexts:
        raise ValueError("no training contexts")
    return [contexts[(round_ * per_round + j) % len(contexts)] for j in range(min(per_round, len(contexts)))]


def select(rewards: dict[tuple[str, int], float], cfg: RestemConfig) -> list[tuple[str, int]]:
    """Kept (context id, sample) pairs: best-of-N per context (ties -> first; no threshold) or all positive."""
    if cfg.selection == "all_positive":
        return [key for key, r in rewards.items() if r > 0]
    best: dict[str, tuple[str, int]] = {}
    for key, r in rewards.items():
        if key[0] not in best or r > rewards[best[key[0]]]:
            best[key[0]] = key
    return list(best.values())


def restore_policy(policy: Runtime, checkpoints: RoundCheckpoints, sft_cfg: SftConfig, rounds: int) -> None:
    """Brings the initial `policy` to its state after `rounds` finished rounds: the saved round adapters are
    merged in order, in place."""
    merge_saved(policy, checkpoints, sft_cfg.lora, rounds)


def merge_saved(policy: Runtime, checkpoints: RoundCheckpoints, lora: LoraConfig, steps: int) -> None:
    """Merges the adapters (of config `lora`) saved as steps 1..`steps` of `checkpoints` into `policy`, in
    order, in place."""
    template = init_lora(policy.model.config, lora, jax.random.key(0))
    for r in range(1, steps + 1):
        state, _ = checkpoints.restore(r)
        adapter = jax.tree.map(lambda x: x, template)
        nnx.replace_by_pure_dict(adapter, state["adapter"])
        policy.merge(adapter, lora)


def run_restem(
    policy: Runtime,
    domain: Domain,
    evaluator: Evaluator,
    cfg: RestemConfig,
    workdir: str,
    meta: dict[str, Any],
    *,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
    metrics: Metrics | None = None,
) -> list[dict[str, Any]]:
    """Runs (or resumes) `cfg.rounds` ReST-EM rounds, updating `policy` in place; returns per-round statistics.

    When `policy` is the evaluator's runtime (the reference's setup) the model that writes self-edits is also the
    one they adapt, and the evaluator follows every M-step. Otherwise (teacher-student) the evaluator keeps its
    fixed student model and only the writer `policy` is trained. `metrics` records each round's curves, wall
    times and compile time.
    """
    phase = metrics.phase if metrics else lambda name: contextlib.nullcontext()
    checkpoints = RoundCheckpoints(workdir)
    done = checkpoints.latest_round()
    if done:
        logging.info("resuming after round %d", done)
        restore_policy(policy, checkpoints, cfg.sft, done)
    stats = [checkpoints.restore(r)[1]["stats"] for r in range(1, done + 1)]
    train = domain.contexts("train")
    for r in range(done, cfg.rounds):
        journal = Journal(f"{workdir}/journal", f"round_{r}")
        contexts = round_contexts(train, r, cfg.contexts_per_round)
        with phase("sample"):
            texts = sample_self_edits(
                policy,
                domain,
                contexts,
                cfg.samples_per_context,
                cfg.sampling,
                journal,
                f"round_{r}",
                cfg.seed,
                cfg.sample_batch,
                cfg.sample_attempts,
            )
        items = [
            Item(
                f"round_{r}/eval/{c.id}/{i}/{s}",
                c,
                texts[c.id, i],
                domain.parse_self_edit(c, texts[c.id, i]),
                stable_seed(cfg.seed, r, c.id, i, s),
                s,
            )
            for c in contexts
            for i in range(cfg.samples_per_context)
            for s in range(cfg.eval_seeds)
        ]
        if cfg.reward == "gain":
            items += [Item(f"round_{r}/base/{c.id}", c, None, None, 0) for c in contexts]
        before = dict(evaluator.timings) if metrics else {}
        records = evaluate_items(evaluator, domain, items, journal, f"round {r}: adapt + evaluate")
        rewards = {
            (c.id, i): float(
                np.mean([records[f"round_{r}/eval/{c.id}/{i}/{s}"]["reward"] for s in range(cfg.eval_seeds)])
            )
            for c in contexts
            for i in range(cfg.samples_per_context)
        }
        base_scores = (
            {c.id: records[f"round_{r}/base/{c.id}"]["reward"] for c in contexts}
            if cfg.reward == "gain"
            else {}
        )
        if base_scores:
            rewards = {key: v - base_scores[key[0]] for key, v in rewards.items()}
        kept = select(rewards, cfg)
        by_id = {c.id: c for c in contexts}
        pairs = [TrainExample(domain.self_edit_prompt(by_id[cid]), texts[cid, i]) for cid, i in kept]
        round_stats = {
            "round": r + 1,
            "mean_reward": float(np.mean(list(rewards.values()))),
            "mean_best_reward": float(
                np.mean([max(v for (c, _), v in rewards.items() if c == cid) for cid in by_id])
            ),
            "invalid": sum(isinstance(it.parsed, Invalid) for it in items),
            **sampling_stats(
                journal,
                [f"round_{r}/sample/{c.id}/{i}" for c in contexts for i in range(cfg.samples_per_context)],
                sum(isinstance(it.parsed, Invalid) for it in items if it.seed_index == 0),
            ),
            "kept": len(pairs),
        }
        adapter, sft_losses = None, []
        if not pairs:
            logging.warning("round %d kept no self-edit: the policy is unchanged", r + 1)
        else:
            try:
                with phase("sft"):
                    result = sft(policy, pairs, cfg.sft, stable_seed(cfg.seed, "sft", r))
            except FloatingPointError as err:
                logging.warning("round %d: %s", r + 1, err)
                round_stats["sft_error"] = str(err)
            else:
                with phase("merge"):
                    policy.merge(result.adapter, cfg.sft.lora)
                sft_losses = result.losses
                adapter = result.adapter.to_pure_dict()
                round_stats["sft_loss_first_last"] = [result.losses[0], result.losses[-1]]
        if adapter is None:  # the policy is unchanged: a no-op adapter (B = 0) keeps the round checkpointed
            adapter = init_lora(policy.model.config, cfg.sft.lora, jax.random.key(0)).to_pure_dict()
        checkpoints.save(
            r + 1,
            adapter,
            jax.random.key(stable_seed(cfg.seed, "rng", r + 1)),
            {**meta, "stats": round_stats, "kept": [list(k) for k in kept]},
        )
        stats.append(round_stats)
        logging.info("round %d: %s", r + 1, round_stats)
        if metrics:
            evaluated = {k: evaluator.timings[k] - before[k] for k in before}
            eval_items = [it for it in items if it.text is not None]
            curves = summarise_curves([records[it.key].get("losses") or [] for it in eval_items])
            timed = evaluated["adapt_s"] + evaluated["generate_s"]
            metrics.write(
                {
                    "round": r + 1,
                    "reward_mean": round_stats["mean_reward"],
                    "reward_best": round_stats["mean_best_reward"],
                    "invalid_rate": round_stats["invalid_rate"],
                    "sample_attempts": round_stats["sample_attempts"],
                    "invalid_after_resampling": round_stats["invalid"] / len(eval_items),
                    "self_edit_words": float(np.mean([len(t.split()) for t in texts.values()])),
                    "kept": len(pairs),
                    **{f"time_{name}_s": s for name, s in metrics.take_times().items()},
                    "time_adapt_s": evaluated["adapt_s"],
                    "time_answer_s": evaluated["generate_s"],
                    "evaluations": int(evaluated["jobs"]),
                    "evals_per_s": evaluated["jobs"] / timed if timed else None,
                    "compile_s": metrics.compile_s(),
                },
                r + 1,
                {f"inner_loss_{k}": v for k, v in curves.items()} | {"sft_loss": list(sft_losses)},
            )
        if on_round:
            on_round(r + 1, round_stats)
    return stats
