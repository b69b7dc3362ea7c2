"""`--config.domain.prompt_file`: a user's JSON replaces every prompt template; a bad file is a one-line error
before any work."""

from __future__ import annotations

import json

import pytest

from seal_jax import defaults
from seal_jax.domains.arc.domain import ArcDomain
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.domains.knowledge.grading import OpenAIJudge
from seal_jax.errors import UserInputError
from seal_jax.experiments import arc, common, knowledge

from .arc.conftest import EOS, fake_chat, generic_task

PASSAGE = data.load_demo()[0]
USER_WORDING = {
    "knowledge_self_edit": "Ref instruction.\n\nPassage:\n{title}\n{context}\n\nRef cue:",
    "knowledge_self_edit_chat": "Ref chat instruction about {title}: {context}",
    "knowledge_qa": "Ref answer line.\nQuestion: {question}\nAnswer:",
    "knowledge_qa_chat": "Ref chat answer line. {question}",
    "judge": "Ref judge. Q: {question} G: {gold} S: {prediction} yes/no?",
    "arc_system": "Ref system message.",
    "arc_instruction": 'Ref ARC instruction: reply {"data_generation": ..., "training": ...}',
}


def config_with(tmp_path, content, experiment=defaults.knowledge):
    path = tmp_path / "prompts.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    cfg = experiment()
    cfg.domain.prompt_file = str(path)
    cfg.workdir = str(tmp_path / "run")
    return cfg


def test_a_user_prompt_file_replaces_every_template(tmp_path, monkeypatch):
    wording = common.prompt_set(config_with(tmp_path, USER_WORDING))
    title, context = PASSAGE.title, PASSAGE.context
    question = f"Topic: {title}\n{PASSAGE.questions[0].question}"
    plain = KnowledgeDomain((PASSAGE,), (PASSAGE,), wording=wording)
    assert plain.self_edit_prompt(PASSAGE) == f"Ref instruction.\n\nPassage:\n{title}\n{context}\n\nRef cue:"
    assert plain.eval_queries(PASSAGE)[0].prompt == f"Ref answer line.\nQuestion: {question}\nAnswer:"
    chat = KnowledgeDomain((PASSAGE,), (PASSAGE,), format_chat=fake_chat, wording=wording)
    assert chat.self_edit_prompt(PASSAGE) == fake_chat(
        [{"role": "user", "content": f"Ref chat instruction about {title}: {context}"}]
    )
    assert chat.eval_queries(PASSAGE)[0].prompt == fake_chat(
        [{"role": "user", "content": f"Ref chat answer line. {question}"}]
    )
    task = generic_task(2)
    prompt = ArcDomain({"train": [task]}, fake_chat, EOS, wording=wording).self_edit_prompt(task)
    assert prompt.startswith(f"<|system|>\nRef system message.{EOS}")
    assert prompt.endswith(f"------\n\n{USER_WORDING['arc_instruction']}{EOS}<|assistant|>\n")
    sent = []
    monkeypatch.setattr(OpenAIJudge, "_request", lambda self, p, *rest: sent.append(p) or "yes")
    cfg = config_with(tmp_path, USER_WORDING)
    cfg.eval.grader = "judge"
    assert knowledge.grader(cfg, wording).grade("Q1", "gold", " an answer ").correct
    assert sent == ["Ref judge. Q: Q1 G: gold S: an answer yes/no?"]


def test_templates_not_in_the_file_keep_seal_jax_wording(tmp_path):
    wording = common.prompt_set(config_with(tmp_path, {"arc_system": "Only this."}))
    ours = KnowledgeDomain((PASSAGE,), (PASSAGE,))
    theirs = KnowledgeDomain((PASSAGE,), (PASSAGE,), wording=wording)
    assert theirs.self_edit_prompt(PASSAGE) == ours.self_edit_prompt(PASSAGE)
    assert theirs.eval_queries(PASSAGE) == ours.eval_queries(PASSAGE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"knowledge_qa": "Q: {question}", "judge_prompt": "x"}, r"unknown key\(s\) \['judge_prompt'\]"),
        ({"knowledge_qa": 3}, "'knowledge_qa' must be a string"),
        ({"knowledge_self_edit": "Passage: {context}"}, r"must contain the placeholder\(s\) \['\{title\}'\]"),
        ({"judge": "{question} {gold} {prediction} {answer}"}, r"unknown placeholder\(s\) \['answer'\]"),
        ({"knowledge_qa": "{question} {"}, "not a format string"),
    ],
)
def test_a_bad_prompt_file_is_a_one_line_error(tmp_path, content, message):
    with pytest.raises(UserInputError, match=message) as err:
        common.prompt_set(config_with(tmp_path, content))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("experiment", [defaults.knowledge, defaults.arc])
def test_a_bad_prompt_file_stops_a_run_before_any_work(tmp_path, experiment):
    cfg = config_with(tmp_path, {"arc_instruction": 1}, experiment)
    cfg.model = "no-such-model-anywhere"  # reached only if the file were accepted
    driver = knowledge if experiment is defaults.knowledge else arc
    with pytest.raises(UserInputError, match="'arc_instruction' must be a string"):
        driver.run(cfg)
    cfg.domain.prompt_file = str(tmp_path / "missing.json")
    with pytest.raises(UserInputError, match="cannot read it"):
        driver.run(cfg)
    assert not (tmp_path / "run").exists()
