import http.server
import json
import threading
import time
from typing import ClassVar

import pytest

from seal_jax.domains.knowledge.grading import (
    JUDGE_INSTRUCTIONS,
    OfflineGrader,
    OpenAIJudge,
    check_judge,
    contains_answer,
    exact_match,
    failed_verdicts,
    lexical_scores,
    normalize_answer,
    parse_yes_no,
    token_f1,
)
from seal_jax.errors import UserInputError
from tests.knowledge import REFERENCE, requires_reference

GRADER = OfflineGrader()


def test_normalization():
    assert normalize_answer("  The Quick, brown-fox!  ") == "quick brownfox"
    assert normalize_answer("An apple and a pear") == "apple and pear"
    assert normalize_answer("Theatre") == "theatre"


def test_exact_match_and_f1():
    assert exact_match("the Lantern Crossing.", "Lantern Crossing")
    assert not exact_match("Lantern", "Lantern Crossing")
    assert token_f1("Lantern Crossing", "the Lantern Crossing") == 1.0
    assert token_f1("Lantern boats", "Lantern Crossing") == pytest.approx(0.5)
    assert token_f1("nothing here", "Lantern Crossing") == 0.0
    assert token_f1("", "Lantern Crossing") == 0.0


def test_containment_is_by_whole_tokens_in_order():
    assert contains_answer("It was founded in 1612 by traders.", "1612")
    assert not contains_answer("It was founded in 16120.", "1612")
    assert contains_answer("Residents hold the Lantern Crossing.", "lantern crossing")
    assert not contains_answer("Crossing the lantern", "Lantern Crossing")
    assert not contains_answer("anything", "the")  # gold empty after normalization


def test_lexical_recall():
    s = lexical_scores("The Mongolian script", "traditional Mongolian script")
    assert s.recall == pytest.approx(2 / 3) and not s.contains and s.n_tokens == 2


def test_offline_rule():
    assert GRADER.grade("q", "Otrar", "The massacre took place in Otrar.").correct
    assert GRADER.grade(
        "q", "weak policies, corruption and poor leadership", "corruption and weak policies"
    ).correct
    assert not GRADER.grade("q", "Otrar", "Karakorum").correct
    assert not GRADER.grade("q", "Otrar", "").correct
    assert not GRADER.grade("q", "Otrar", "  ...  ").correct
    rambling = "Otrar " + "and many other towns " * 20
    assert not GRADER.grade("q", "Otrar", rambling).correct
    assert OfflineGrader(max_prediction_tokens=1000).grade("q", "Otrar", rambling).correct


def test_verdict_fields():
    v = GRADER.grade("q", "1612", "1612")
    assert (v.correct, v.em, v.f1, v.contains, v.source, v.error) == (True, True, 1.0, True, "offline", None)


@requires_reference
def test_calibrated_grader_reaches_documented_held_out_agreement():
    from benchmarks.grader_agreement import HELD_OUT_RUNS, agreement, load_judged

    result = agreement(GRADER, load_judged(REFERENCE / "results", HELD_OUT_RUNS))
    assert result.n == 3896
    # docs/grader.md: held out agreement 0.876, precision 0.920, recall 0.748, kappa 0.730
    assert result.accuracy >= 0.875 and result.kappa >= 0.725
    assert result.precision >= 0.91 and result.recall >= 0.74


def test_parse_yes_no():
    assert parse_yes_no("Yes.") and parse_yes_no("yes")
    assert not parse_yes_no("No") and not parse_yes_no("yes and no") and not parse_yes_no("yesterday")
    assert not parse_yes_no("")


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next scripted (status, body), or stalls `hang` seconds first when the status is
    None; 500 once the script runs out. Every request is recorded, so tests bound how many were made."""

    script: ClassVar[list] = []
    seen: ClassVar[list] = []
    hang: ClassVar[float] = 0.0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, dict(self.headers), body))
        status, payload = type(self).script.pop(0) if type(self).script else (500, "out of script")
        if status is None:
            time.sleep(type(self).hang)
            status = 200
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the judge gave up waiting
            pass

    def log_message(self, *args):
        pass


def _reply(text):
    """A Responses API reply."""
    return 200, {"output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}


def _chat_reply(text):
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def stub():
    _Stub.script, _Stub.seen, _Stub.hang = [], [], 0.0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def _judge(url, sleeps, **kw):
    return OpenAIJudge(
        base_url=url,
        model="judge-m",
        api_key_env="SEAL_TEST_KEY",
        **{"timeout_s": 5, "sleep": sleeps.append, **kw},
    )


@pytest.mark.parametrize(("reply", "correct"), [("Yes.", True), ("no", False), ("yes and no", False)])
def test_judge_verdicts_through_the_responses_api_at_the_default_temperature(
    stub, reply, correct, monkeypatch
):
    url, handler = stub
    monkeypatch.setenv("SEAL_TEST_KEY", "k-123")
    handler.script = [_reply(reply)]
    sleeps = []
    v = _judge(url, sleeps).grade("Topic: T\nWho?", "Otrar", "Karakorum")
    assert (v.correct, v.source, v.error, sleeps) == (correct, "judge", None, [])
    assert len(handler.seen) == 1  # one verdict per question
    path, headers, body = handler.seen[0]
    assert path == "/v1/responses" and headers["Authorization"] == "Bearer k-123"
    assert body["model"] == "judge-m" and "temperature" not in body  # the reference: GPT-4.1's default
    prompt = body["input"]
    assert "Gold answer: Otrar" in prompt and "Student answer: Karakorum" in prompt and "Who?" in prompt


def test_judge_over_chat_completions_with_a_set_temperature(stub):
    url, handler = stub
    handler.script = [_chat_reply("yes")]
    v = _judge(url, [], api="chat", temperature=0.0).grade("q", "Otrar", "Karakorum")
    assert (v.correct, v.source) == (True, "judge")
    path, _, body = handler.seen[0]
    assert path == "/v1/chat/completions" and body["temperature"] == 0.0
    assert body["messages"][0]["content"].startswith(JUDGE_INSTRUCTIONS)


def test_judge_retries_with_backoff_then_succeeds(stub, monkeypatch):
    url, handler = stub
    monkeypatch.delenv("SEAL_TEST_KEY", raising=False)
    handler.script = [(500, "boom"), (200, "not json"), _reply("yes")]
    sleeps = []
    v = _judge(url, sleeps, backoff_s=0.5).grade("q", "Otrar", "Karakorum")
    assert (v.correct, v.source, sleeps) == (True, "judge", [0.5, 1.0])
    assert "Authorization" not in handler.seen[0][1]


@pytest.mark.parametrize(
    "failure", [(500, "boom"), (200, "{not json"), (200, {"output": []}), (200, [1, 2])], ids=str
)
def test_a_verdict_the_judge_cannot_give_counts_wrong_and_warns(stub, failure, caplog):
    url, handler = stub
    handler.script = [failure] * 4
    sleeps = []
    v = _judge(url, sleeps, retries=3).grade("q", "Otrar", "It happened in Otrar.")
    assert len(handler.seen) == 4 and sleeps == [1.0, 2.0, 4.0]
    # the offline rule would accept this answer: the failed verdict is not handed to it
    assert (v.correct, v.source) == (False, "failed") and v.error
    assert "judge verdict failed" in caplog.text


def test_a_hanging_judge_is_bounded_by_its_timeout_and_total_budget(stub):
    url, handler = stub
    handler.hang = 2.0
    handler.script = [(None, "late")] * 6
    judge = _judge(url, [], timeout_s=0.2, retries=1, backoff_s=0.0, budget_s=0.5)
    start = time.monotonic()
    first = judge.grade("q1", "Otrar", "Otrar")
    second = judge.grade("q2", "Otrar", "Otrar")
    third = judge.grade("q3", "Otrar", "Otrar")
    assert time.monotonic() - start < 1.5  # not 3 x 2 x 2 s
    assert [v.source for v in (first, second, third)] == ["failed"] * 3
    assert "timed out" in first.error and "budget of 0.5 s is used up" in third.error
    assert len(handler.seen) <= 4  # 0.2 s attempts within 0.5 s, the last one cut to what is left


def test_answered_calls_cost_nothing_from_the_budget(stub):
    url, handler = stub
    handler.hang = 0.1
    handler.script = [(None, _reply("yes")[1])] * 4
    judge = _judge(url, [], budget_s=0.25)
    assert [judge.grade(f"q{i}", "Otrar", "Otrar").source for i in range(4)] == [
        "judge"
    ] * 4  # 0.4 s > 0.25 s


def test_failed_verdicts_are_counted_from_journal_records():
    def record(*sources):  # as restem.evaluate_items journals a score's details: "verdicts" at the top level
        return {"key": "k", "reward": 0.0, "answers": [], "verdicts": [{"source": s} for s in sources]}

    records = [record("judge", "failed"), record("offline", "judge"), record("fallback"), {"key": "invalid"}]
    assert failed_verdicts(records) == (4, 2)


def test_a_judge_that_cannot_answer_a_test_question_is_a_one_line_error(stub):
    url, handler = stub
    handler.script = [(401, "bad key")] * 2
    with pytest.raises(UserInputError, match="gave no verdict on a test question: HTTPError") as err:
        check_judge(_judge(url, [], retries=1))
    assert "\n" not in str(err.value) and len(handler.seen) == 2
    handler.script = [_reply("yes")]
    check_judge(_judge(url, []))


@pytest.mark.parametrize(
    "bad",
    [{"api": "grpc"}, {"timeout_s": 0}, {"budget_s": float("nan")}, {"retries": -1}, {"temperature": 9.0}],
)
def test_bad_judge_settings_are_refused(bad):
    with pytest.raises(ValueError, match="judge"):
        OpenAIJudge(**bad)


def test_judge_does_not_call_for_empty_answers(stub):
    url, handler = stub
    v = _judge(url, []).grade("q", "Otrar", "   ")
    assert not v.correct and handler.seen == []
