"""Grading closed-book answers against SQuAD gold answers.

`OfflineGrader`: SQuAD normalization, exact match, token F1, gold-token recall and containment, combined by
a rule calibrated against the reference's GPT-4.1 verdicts (`benchmarks/grader_agreement.py`, numbers in
`docs/grader.md`). `OpenAIJudge`: the reference's LLM judge over any OpenAI-compatible chat-completions
endpoint (plain `urllib`), falling back to the offline grader, with the error recorded, when the endpoint
keeps failing."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import string
import time
import urllib.request
from collections.abc import Callable
from typing import Protocol

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an answer is correct, the lexical scores behind it, and who decided.

    `source` is "offline" (the rule), "judge" (the LLM) or "fallback" (the rule, after the judge failed with
    `error`).
    """

    correct: bool
    em: bool
    f1: float
    recall: float
    contains: bool
    source: str = "offline"
    error: str | None = None


class Grader(Protocol):
    def grade(self, question: str, gold: str, prediction: str) -> Verdict: ...


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalization: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def _overlap(pred: list[str], gold: list[str]) -> int:
    return sum((collections.Counter(pred) & collections.Counter(gold)).values())


def _f1(pred: list[str], gold: list[str]) -> float:
    common = _overlap(pred, gold)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _contains(pred: list[str], gold: list[str]) -> bool:
    return bool(gold) and any(pred[i : i + len(gold)] == gold for i in range(len(pred) - len(gold) + 1))


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token-level F1 between normalized prediction and gold."""
    return _f1(_tokens(prediction), _tokens(gold))


def contains_answer(prediction: str, gold: str) -> bool:
    """Normalized gold appears as a contiguous run of whole tokens in the normalized prediction."""
    return _contains(_tokens(prediction), _tokens(gold))


@dataclasses.dataclass(frozen=True)
class Lexical:
    """A prediction compared with the gold; `recall` = share of gold tokens the prediction has."""

    em: bool
    f1: float
    recall: float
    contains: bool
    n_tokens: int


def lexical_scores(prediction: str, gold: str) -> Lexical:
    pred, ref = _tokens(prediction), _tokens(gold)
    recall = _overlap(pred, ref) / len(ref) if ref else 0.0
    return Lexical(pred == ref, _f1(pred, ref), recall, _contains(pred, ref), len(pred))


@dataclasses.dataclass(frozen=True)
class OfflineGrader:
    """Correct iff the prediction is non-empty, at most `max_prediction_tokens` normalized tokens long, and
    either contains the gold, recalls at least `min_recall` of its tokens, or reaches token F1 `min_f1`.

    Defaults: best Cohen's kappa against GPT-4.1 on the reference's base/naive/iter1 runs
    (`docs/grader.md`). The length guard never binds at the reference's 64-token answer budget; it stops a
    policy from earning reward with answers that enumerate many candidates when the budget is raised."""

    min_recall: float = 0.7
    min_f1: float = 0.6
    max_prediction_tokens: int = 60

    def accepts(self, s: Lexical) -> bool:
        return 0 < s.n_tokens <= self.max_prediction_tokens and (
            s.em or s.contains or s.recall >= self.min_recall or s.f1 >= self.min_f1
        )

    def grade(self, question: str, gold: str, prediction: str) -> Verdict:
        s = lexical_scores(prediction, gold)
        return Verdict(self.accepts(s), s.em, s.f1, s.recall, s.contains)


JUDGE_INSTRUCTIONS = (
    "You grade a student's answer to a question. Decide using only the gold answer given below; "
    "do not use any knowledge of your own. The student may add information, as long as the answer "
    "fully conveys the gold answer and says nothing that contradicts it. Ignore style, wording and "
    "irrelevant details. Reply with only 'yes' or 'no'."
)
_YES = re.compile(r"\byes\b", re.IGNORECASE)
_NO = re.compile(r"\bno\b", re.IGNORECASE)


def judge_prompt(question: str, gold: str, prediction: str, template: str | None = None) -> str:
    """The judge's user message: seal_jax's wording, or `template` over {question}, {gold}, {prediction}."""
    if template is not None:
        return template.format(question=question, gold=gold, prediction=prediction.strip())
    return (
        f"{JUDGE_INSTRUCTIONS}\n\nQuestion: {question}\nGold answer: {gold}\n"
        f"Student answer: {prediction.strip()}\n"
        "Is the student answer correct according to the gold answer? Reply 'yes' or 'no'."
    )


def parse_yes_no(reply: str) -> bool:
    """The reference's rule: a standalone "yes" and no standalone "no" (so "yes and no" is False)."""
    return bool(_YES.search(reply)) and not _NO.search(reply)


@dataclasses.dataclass(frozen=True)
class OpenAIJudge:
    """LLM judge over an OpenAI-compatible `/chat/completions` endpoint.

    Empty predictions are wrong without a call. Each request is tried `1 + retries` times with exponential
    backoff (waits `backoff_s`, `2 * backoff_s`, ... through the injectable `sleep`); after that the
    `fallback` grader decides and the verdict says `source="fallback"` with the last error. The API key is
    read from the environment variable named `api_key_env` at call time (no Authorization header when it is
    unset, e.g. for a local vLLM server). `temperature=None` leaves it to the server (for models that only
    accept their default). `prompt_template` replaces the judge prompt's wording (`judge_prompt`)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4.1"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = 0.0
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 1.0
    fallback: OfflineGrader = OfflineGrader()
    sleep: Callable[[float], None] = time.sleep
    prompt_template: str | None = None

    def _request(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            content = json.loads(resp.read())["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError(f"reply has no text content: {content!r}")
        return content

    def grade(self, question: str, gold: str, prediction: str) -> Verdict:
        lexical = self.fallback.grade(question, gold, prediction)
        if not prediction.strip():
            return lexical
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                reply = self._request(judge_prompt(question, gold, prediction, self.prompt_template))
            except (OSError, ValueError, LookupError, TypeError) as e:
                error = f"{type(e).__name__}: {e}"
                continue
            return dataclasses.replace(lexical, correct=parse_yes_no(reply), source="judge")
        return dataclasses.replace(lexical, source="fallback", error=error)
