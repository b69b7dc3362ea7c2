import dataclasses
import json

import pytest

from seal_jax.domains.base import InnerHparams, Invalid, SelfEdit, TrainExample
from seal_jax.domains.knowledge import prompts
from seal_jax.domains.knowledge.data import QA, make_passage
from seal_jax.domains.knowledge.domain import KnowledgeDomain

PASSAGE = make_passage(
    "Varnholt",
    "Varnholt was founded in 1612 by salt traders from Peldra.",
    [QA("When was Varnholt founded?", "1612"), QA("Where did its founders come from?", "Peldra")],
)
OTHER = make_passage("Gorran", "Gorran has a glassworks.", [QA("What does Gorran have?", "a glassworks")])


@pytest.mark.parametrize("name", sorted(prompts.SELF_EDIT_TEMPLATES))
def test_plain_self_edit_prompt_layout(name):
    t = prompts.SELF_EDIT_TEMPLATES[name]
    text = prompts.self_edit_prompt_text(name, "Varnholt", "Some context.")
    head = f"{t.instruction}\n\n" if t.instruction else ""
    assert text == f"{head}Passage:\nVarnholt\nSome context.\n\n{t.cue}"


def test_cues():
    cues = {name: t.cue for name, t in prompts.SELF_EDIT_TEMPLATES.items()}
    assert cues["implications"] == cues["implications-long"] == "Implications:\n"
    assert (
        cues["self-qa"] == "Question 1: "
        and cues["rewrite"] == "Rewritten passages:\n"
        and cues["none"] == ""
    )
    assert "long list" in prompts.SELF_EDIT_TEMPLATES["implications-long"].instruction
    assert "very long list" in prompts.SELF_EDIT_TEMPLATES["implications-very-long"].instruction


@pytest.mark.parametrize("name", sorted(prompts.SELF_EDIT_TEMPLATES))
def test_chat_self_edit_prompt_is_one_user_message(name):
    [message] = prompts.self_edit_prompt_messages(name, "Varnholt", "Some context.")
    assert message["role"] == "user" and "Passage:\nVarnholt\nSome context." in message["content"]
    assert message["content"].startswith(prompts.SELF_EDIT_TEMPLATES[name].instruction)


def test_unknown_prompt_name():
    with pytest.raises(ValueError, match="implications-cot"):
        prompts.self_edit_prompt_text("implication", "T", "C")
    with pytest.raises(ValueError, match="unknown self-edit prompt"):
        KnowledgeDomain((PASSAGE,), (OTHER,), prompt="nope")


def test_qa_prompts():
    question = prompts.qa_question("Varnholt", "When was it founded?")
    assert question == "Topic: Varnholt\nWhen was it founded?"
    text = prompts.qa_prompt_text(question)
    assert text.endswith("\nQuestion: Topic: Varnholt\nWhen was it founded?\nAnswer:\n")
    assert "concisely" in text.splitlines()[0]
    [message] = prompts.qa_prompt_messages(question)
    assert message["role"] == "user" and message["content"].endswith("Question: " + question)


def fake_chat(messages):
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_domain_contexts_and_prompts():
    domain = KnowledgeDomain((PASSAGE,), (OTHER,))
    assert domain.contexts("train") == [PASSAGE] and domain.contexts("eval") == [OTHER]
    with pytest.raises(ValueError):
        domain.contexts("test")
    assert domain.self_edit_prompt(PASSAGE) == prompts.self_edit_prompt_text(
        "implications", PASSAGE.title, PASSAGE.context
    )
    chat = dataclasses.replace(domain, format_chat=fake_chat, prompt="rewrite")
    assert chat.self_edit_prompt(PASSAGE).startswith("<user>Read the passage below and restate")
    assert chat.eval_queries(PASSAGE)[0].prompt.endswith("When was Varnholt founded?</user><assistant>")
    assert (domain.name, domain.eval_max_new_tokens) == ("knowledge", 64)


def test_domain_parse_self_edit():
    domain = KnowledgeDomain((PASSAGE,), (OTHER,))
    se = domain.parse_self_edit(PASSAGE, "Intro:\n1. Varnholt is old.\n2. Peldra traded salt.")
    assert isinstance(se, SelfEdit)
    assert se.hparams == InnerHparams(learning_rate=1e-3, epochs=10, loss_on_all_tokens=True)
    assert se.examples == (
        TrainExample("", "Varnholt\n1. Varnholt is old."),
        TrainExample("", "Varnholt\n2. Peldra traded salt."),
        TrainExample("", f"Varnholt\n{PASSAGE.context}"),
    )
    assert isinstance(domain.parse_self_edit(PASSAGE, " \n "), Invalid)
    no_context = dataclasses.replace(domain, add_context=False, max_sequences=1)
    assert [e.completion for e in no_context.parse_self_edit(PASSAGE, "a\nb").examples] == ["Varnholt\na"]
    baseline = domain.passage_only_self_edit(PASSAGE)
    assert (
        baseline.examples == (TrainExample("", f"Varnholt\n{PASSAGE.context}"),)
        and baseline.hparams == se.hparams
    )


def test_domain_eval_and_score():
    domain = KnowledgeDomain((PASSAGE,), (OTHER,))
    queries = domain.eval_queries(PASSAGE)
    assert [q.meta for q in queries] == [0, 1]
    assert queries[0].prompt == prompts.qa_prompt_text("Topic: Varnholt\nWhen was Varnholt founded?")
    score = domain.score(PASSAGE, queries, [" It was founded in 1612.\n", "Karakorum"])
    assert score.reward == 0.5
    assert score.details["answers"] == ["It was founded in 1612.", "Karakorum"]
    assert [v["correct"] for v in score.details["verdicts"]] == [True, False]
    json.dumps(score.details)
    assert domain.score(PASSAGE, queries[1:], ["Peldra"]).reward == 1.0
    assert domain.score(PASSAGE, queries, ["", ""]).reward == 0.0
    with pytest.raises(ValueError):
        domain.score(PASSAGE, queries, ["1612"])
