"""Grading closed-book answers against SQuAD gold answers.

`OfflineGrader`: SQuAD normalization, exact match, token F1, gold-token recall and containment, combined by
a rule calibrated against the reference's GPT-4.1 verdicts (`benchmarks/grader_agreement.py`, numbers in
`docs/grader.md`). `OpenAIJudge`: the reference's LLM judge over the OpenAI Responses API or any
OpenAI-compatible chat-completions endpoint (plain `urllib`); a verdict it cannot get is counted wrong,
journaled with its error and logged, within a settable timeout, retry count and total time budget."""

from __future__ import annotations

import collections
import dataclasses
import http.client
import json
import math
import os
import re
import string
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Protocol

from absl import logging

from seal_jax.errors import UserInputError, require_positive

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether an answer is correct, the lexical scores behind it, and who decided.

    `source` is "offline" (the rule), "judge" (the LLM) or "failed" (the judge gave no verdict: counted wrong,
    with `error`). Journals of older runs may hold "fallback" (the rule decided after the judge failed).
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


class _Clock:
    """Seconds a judge has lost so far to failed attempts and the waits after them (mutable, shared by the
    judge's copies)."""

    def __init__(self) -> None:
        self.spent = 0.0


# The reply parsers of the two endpoint kinds: the Responses API (the reference's) and chat completions.
def _responses_text(reply: dict) -> str:
    texts = [
        part.get("text")
        for item in reply["output"]
        if item.get("type") == "message"
        for part in item["content"]
        if part.get("type") == "output_text"
    ]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"reply has no output text: {str(reply)[:200]}")
    return "".join(texts)


def _chat_text(reply: dict) -> str:
    content = reply["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError(f"reply has no text content: {content!r}")
    return content


# A judge call's failures: the network and HTTP (a torn reply is an http.client.IncompleteRead), and replies
# that are not the expected JSON.
CALL_ERRORS = (OSError, http.client.HTTPException, ValueError, LookupError, TypeError, AttributeError)
JUDGE_APIS = {"responses": ("/responses", _responses_text), "chat": ("/chat/completions", _chat_text)}


@dataclasses.dataclass(frozen=True)
class OpenAIJudge:
    """LLM judge over an OpenAI-compatible endpoint: the Responses API (`api="responses"`, the reference's) or
    `/chat/completions` (`api="chat"`, e.g. a local vLLM server).

    One verdict per question: empty predictions are wrong without a call; any other answer gets one request,
    tried `1 + retries` times, each attempt bounded by `timeout_s`, with exponential backoff between attempts
    (`backoff_s`, `2 * backoff_s`, ... through the injectable `sleep`). A verdict whose attempts all fail, or
    that would start after the judge has lost `budget_s` seconds in total to failed attempts and backoff (over
    the whole run; answered calls cost nothing, so a long healthy run is never cut short), counts as wrong
    with `source="failed"` and the error, and logs a warning: it is never handed to another grader. The API
    key is read from the environment variable named `api_key_env` at call time (no Authorization header when
    it is unset). `temperature=None` sends none: the server's default, as the reference runs GPT-4.1.
    `prompt_template` replaces the judge prompt's wording (`judge_prompt`)."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4.1"
    api_key_env: str = "OPENAI_API_KEY"
    api: str = "responses"
    temperature: float | None = None
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    budget_s: float = 600.0
    lexical: OfflineGrader = OfflineGrader()  # fills the verdict's lexical scores, never its `correct`
    sleep: Callable[[float], None] = time.sleep
    prompt_template: str | None = None
    clock: _Clock = dataclasses.field(default_factory=_Clock, compare=False)

    def __post_init__(self) -> None:
        if self.api not in JUDGE_APIS:
            raise ValueError(f"judge api={self.api!r} must be one of {sorted(JUDGE_APIS)}")
        require_positive("judge", timeout_s=self.timeout_s, budget_s=self.budget_s)
        if not (self.retries >= 0 and math.isfinite(self.backoff_s) and self.backoff_s >= 0):
            raise ValueError(f"judge retries={self.retries} and backoff_s={self.backoff_s} must be >= 0")
        if self.temperature is not None and not (0 <= self.temperature <= 2):
            raise ValueError(f"judge temperature={self.temperature} must be in [0, 2]")

    def _request(self, prompt: str, timeout: float) -> str:
        path, parse = JUDGE_APIS[self.api]
        body: dict = {"model": self.model}
        body |= (
            {"input": prompt}
            if self.api == "responses"
            else {"messages": [{"role": "user", "content": prompt}]}
        )
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base_url.rstrip("/") + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return parse(json.loads(resp.read()))

    def _attempt(self, prompt: str) -> str:
        """One timed request, within what is left of the budget; a failure's time is charged to it."""
        left = self.budget_s - self.clock.spent
        start = time.monotonic()
        try:
            return self._request(prompt, min(self.timeout_s, left))
        except BaseException:
            self.clock.spent += time.monotonic() - start
            raise

    def grade(self, question: str, gold: str, prediction: str) -> Verdict:
        lexical = self.lexical.grade(question, gold, prediction)
        if not prediction.strip():
            return dataclasses.replace(lexical, correct=False)
        error = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2 ** (attempt - 1) if attempt else 0.0
            if self.clock.spent + wait >= self.budget_s:
                error = (
                    f"the judge's time budget of {self.budget_s:g} s is used up ({error or 'no call made'})"
                )
                break
            if wait:
                self.sleep(wait)
                self.clock.spent += wait
            try:
                reply = self._attempt(judge_prompt(question, gold, prediction, self.prompt_template))
            except CALL_ERRORS as e:
                error = f"{type(e).__name__}: {e}"
                continue
            return dataclasses.replace(lexical, correct=parse_yes_no(reply), source="judge")
        logging.warning("judge verdict failed, counted wrong (%s)", " ".join(error.split())[:300])
        return dataclasses.replace(lexical, correct=False, source="failed", error=error)


def check_judge(judge: OpenAIJudge) -> None:
    """One call before any work: a wrong key, URL or model is then a one-line error, not a run whose every answer
    is counted wrong. Its time counts against the judge's budget as any call's."""
    verdict = judge.grade("What is 2 + 2?", "4", "4")
    if verdict.source != "judge":
        raise UserInputError(
            f"the judge ({judge.model} at {judge.base_url}) gave no verdict on a test question: "
            f"{' '.join((verdict.error or '').split())[:300]}"
        )


def failed_verdicts(records: Iterable[dict]) -> tuple[int, int]:
    """(judged, failed): how many answers of the journal `records` (each with its "verdicts", as the
    evaluations journal them) the judge was asked about (empty answers excepted) and how many of those got no
    verdict from it."""
    sources = [
        v.get("source")
        for r in records
        for v in r.get("verdicts") or ()
        if isinstance(v, dict) and v.get("source") in ("judge", "failed", "fallback")
    ]
    return len(sources), sum(s != "judge" for s in sources)
