"""Agreement of the offline grader with the reference's GPT-4.1 verdicts (~9,700 judged answers).

    .venv/bin/python -m benchmarks.grader_agreement [--results DIR]   # from the repo root

DIR defaults to $SEAL_REFERENCE_DATA/knowledge/results (the reference's result files with GPT-4.1 verdicts).

Sweeps the rule's thresholds on a fit split (base, naive, iter1 runs), picks the best by Cohen's kappa, and
reports it on the held-out runs (gpt4_1, iter2) and on all of them, next to the current defaults."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks._common import REFERENCE_ENV, reference_path
from seal_jax.domains.knowledge.grading import Lexical, OfflineGrader, lexical_scores

FIT_RUNS = ("base", "naive", "iter1")
HELD_OUT_RUNS = ("gpt4_1", "iter2")


@dataclasses.dataclass(frozen=True)
class Judged:
    """One graded answer from a reference result file: lexical scores and GPT-4.1's verdict."""

    run: str
    who: str
    lexical: Lexical
    gpt: bool


@dataclasses.dataclass(frozen=True)
class Agreement:
    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    kappa: float
    rate_ours: float
    rate_gpt: float

    def line(self) -> str:
        return (
            f"n={self.n:5d}  agreement={self.accuracy:.3f}  precision={self.precision:.3f}  "
            f"recall={self.recall:.3f}  F1={self.f1:.3f}  kappa={self.kappa:.3f}  "
            f"correct: ours {self.rate_ours:.3f} / GPT-4.1 {self.rate_gpt:.3f}"
        )


def load_judged(results: Path, runs: Iterable[str]) -> list[Judged]:
    """Every (gold, answer, GPT-4.1 verdict) triple of `eval_{run}.json`: base-model and adapted answers."""
    out = []
    for run in runs:
        for article in json.loads((results / f"eval_{run}.json").read_text())["articles"]:
            for completion in article["completions"]:
                for q in completion["questions"]:
                    for who in ("baseline", "adapter"):
                        lexical = lexical_scores(q[f"{who}_answer"], q["answer"])
                        out.append(Judged(run, who, lexical, bool(q[f"{who}_correct"])))
    return out


def agreement(grader: OfflineGrader, judged: Sequence[Judged]) -> Agreement:
    """Agreement, precision/recall/F1 of "correct" against GPT-4.1, Cohen's kappa, and both graders' share of
    answers judged correct."""
    tp = fp = fn = tn = 0
    for j in judged:
        ours = grader.accepts(j.lexical)
        tp, fp = tp + (ours and j.gpt), fp + (ours and not j.gpt)
        fn, tn = fn + (not ours and j.gpt), tn + (not ours and not j.gpt)
    n = len(judged)
    accuracy = (tp + tn) / n
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    kappa = (accuracy - chance) / (1 - chance)
    return Agreement(n, accuracy, precision, recall, f1, kappa, (tp + fp) / n, (tp + fn) / n)


def sweep(judged: Sequence[Judged]) -> list[tuple[OfflineGrader, Agreement]]:
    """Every grader of a small threshold grid with its agreement on `judged`, best kappa first."""
    grid = itertools.product((0.5, 0.6, 0.7, 0.8, 1.0), (0.3, 0.4, 0.5, 0.6, 1.01), (20, 40, 60))
    graders = [OfflineGrader(min_recall=r, min_f1=f, max_prediction_tokens=t) for r, f, t in grid]
    return sorted(((g, agreement(g, judged)) for g in graders), key=lambda ga: -ga[1].kappa)


def _name(g: OfflineGrader) -> str:
    return f"min_recall={g.min_recall} min_f1={g.min_f1} max_prediction_tokens={g.max_prediction_tokens}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results",
        type=Path,
        default=reference_path("knowledge", "results"),
        help=f"folder with eval_<run>.json files (default: ${REFERENCE_ENV}/knowledge/results)",
    )
    args = parser.parse_args()
    if args.results is None:
        parser.error(f"name the reference's result files: --results DIR, or set {REFERENCE_ENV}")
    judged = load_judged(args.results, FIT_RUNS + HELD_OUT_RUNS)
    fit = [j for j in judged if j.run in FIT_RUNS]
    held_out = [j for j in judged if j.run in HELD_OUT_RUNS]

    ranked = sweep(fit)
    print(f"threshold sweep on the fit runs {FIT_RUNS} (top 10 of {len(ranked)} by kappa):")
    for g, a in ranked[:10]:
        print(f"  {_name(g):60s} {a.line()}")
    for label, grader in (("best on fit", ranked[0][0]), ("defaults", OfflineGrader())):
        print(f"\n{label}: {_name(grader)}")
        for split, rows in (("fit", fit), ("held out", held_out), ("all", judged)):
            print(f"  {split:17s} {agreement(grader, rows).line()}")
        for run, who in itertools.product(FIT_RUNS + HELD_OUT_RUNS, ("baseline", "adapter")):
            rows = [j for j in judged if (j.run, j.who) == (run, who)]
            print(f"  {run + ' ' + who:17s} {agreement(grader, rows).line()}")


if __name__ == "__main__":
    main()
