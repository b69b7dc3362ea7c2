from __future__ import annotations

import json

import numpy as np
import pytest

from seal_jax.domains.arc.augment import DIHEDRAL
from seal_jax.domains.arc.domain import ORACLE_PLAN, ArcDomain, max_answer_tokens
from seal_jax.domains.arc.grids import ArcTask, Example, answer_text
from seal_jax.domains.arc.self_edit import SelfEditPlan
from seal_jax.domains.arc.views import IDENTITY, VIEWS
from seal_jax.domains.base import Domain, Invalid, SelfEdit

from .conftest import EOS, fake_chat, generic_task


@pytest.fixture
def domain() -> ArcDomain:
    train = [generic_task(n, seed=n) for n in (2, 3, 4)]
    return ArcDomain({"train": train, "eval": [generic_task(3, seed=9, n_tests=2)]}, fake_chat, EOS, seed=0)


def _answers(queries, gold, wrong_views=()):
    """A perfect model's answer to each query (in the query's frame), or a wrong grid for `wrong_views`."""
    out = []
    for q in queries:
        grid = gold[q.meta.test_index]
        if q.meta.view in wrong_views:
            grid = (np.asarray(grid) + 1) % 10
        elif q.meta.view != IDENTITY:
            grid = DIHEDRAL[q.meta.view].fn(grid)
        out.append(answer_text(grid) + EOS)
    return out


def test_is_a_domain(domain):
    members = {n for n in vars(Domain) if not n.startswith("_")} | set(Domain.__annotations__)
    assert {"contexts", "score", "eval_max_new_tokens"} <= members
    assert all(hasattr(domain, n) for n in members)
    assert domain.name == "arc"
    assert domain.eval_max_new_tokens == max_answer_tokens() == 30 * 61 + 29 * 2 + 2 + 1 + 1


def test_contexts_are_a_seeded_permutation(domain):
    ids = [t.id for t in domain.contexts("train")]
    assert sorted(ids) == sorted(t.id for t in domain.tasks["train"]) and ids == [
        t.id for t in domain.contexts("train")
    ]
    with pytest.raises(ValueError, match="unknown split"):
        domain.contexts("test")


def test_parse_self_edit_builds_ttt_data_and_hparams(domain):
    task = domain.contexts("train")[0]
    plan = SelfEditPlan(ORACLE_PLAN.groups, True, 3e-4, 1)
    edit = domain.parse_self_edit(task, "```json\n" + plan.to_json() + "\n```")
    assert isinstance(edit, SelfEdit)
    assert (edit.hparams.learning_rate, edit.hparams.epochs, edit.hparams.loss_on_all_tokens) == (
        3e-4,
        1,
        True,
    )
    assert 0 < len(edit.examples) <= 250 and all(e.completion.endswith("]]#" + EOS) for e in edit.examples)
    assert domain.parse_self_edit(task, plan.to_json()).examples is edit.examples  # cached


def test_oracle_plan(domain):
    task = domain.tasks["train"][2]
    oracle = domain.apply_plan(task, ORACLE_PLAN)
    assert isinstance(oracle, SelfEdit) and len(oracle.examples) == 250
    assert (
        not oracle.hparams.loss_on_all_tokens
        and oracle.hparams == domain.parse_self_edit(task, ORACLE_PLAN.to_json()).hparams
    )


def test_invalid_self_edits(domain):
    task = domain.tasks["train"][2]
    assert isinstance(domain.parse_self_edit(task, "I think rotations help."), Invalid)
    over = json.loads(ORACLE_PLAN.to_json())
    over["training"]["num_train_epochs"] = 4  # 4 * 250 // 2 = 500 steps > 375
    result = domain.parse_self_edit(task, json.dumps(over))
    assert isinstance(result, Invalid) and "375" in result.reason


def test_self_edit_prompt_is_templated(domain):
    prompt = domain.self_edit_prompt(domain.tasks["train"][0])
    assert prompt.startswith("<|system|>") and prompt.endswith("<|assistant|>\n") and "------" in prompt


def test_score_pass_at_2(domain):
    task = domain.tasks["eval"][0]
    queries = domain.eval_queries(task)
    gold = [ex.output for ex in task.test]
    perfect = domain.score(task, queries, _answers(queries, gold))
    assert perfect.reward == 1.0 and perfect.details["solved"]
    assert set(perfect.details["sub_tasks"]) == {f"{task.id}-0", f"{task.id}-1"}
    json.dumps(perfect.details)
    # only the 5 geometric views are right (once mapped back), or only the un-augmented queries: still solved
    for wrong_views in ((IDENTITY,), VIEWS):
        mixed = domain.score(task, queries, _answers(queries, gold, wrong_views))
        assert mixed.reward == 1.0, wrong_views
    wrong = domain.score(task, queries, _answers(queries, [(np.asarray(g) + 1) % 10 for g in gold]))
    assert wrong.reward == 0.0 and not any(s["correct"] for s in wrong.details["sub_tasks"].values())
    assert domain.score(task, queries, [""] * len(queries)).reward == 0.0


def test_one_wrong_test_input_fails_the_task(domain):
    task = domain.tasks["eval"][0]
    queries = domain.eval_queries(task)
    gold = [task.test[0].output, (np.asarray(task.test[1].output) + 1) % 10]
    score = domain.score(task, queries, _answers(queries, gold))
    assert score.reward == 0.0 and [s["correct"] for s in score.details["sub_tasks"].values()] == [
        True,
        False,
    ]


def test_per_test_input_scoring_credits_each_solved_test_input():
    """The reference's sub-task scoring: a task with 2 test inputs, one solved, rewards 0.5 (whole task: 0)."""
    task = generic_task(3, seed=9, n_tests=2)
    domain = ArcDomain({"eval": [task]}, fake_chat, EOS, seed=0, per_test_input=True)
    queries = domain.eval_queries(task)
    half = [task.test[0].output, (np.asarray(task.test[1].output) + 1) % 10]
    assert domain.score(task, queries, _answers(queries, half)).reward == 0.5
    assert domain.score(task, queries, _answers(queries, [ex.output for ex in task.test])).reward == 1.0


def test_unknown_gold_cannot_be_scored(domain):
    task = ArcTask("u", (Example([[1]], [[2]]),), (Example([[3]]),))
    with pytest.raises(ValueError, match="without a gold output"):
        domain.score(task, domain.eval_queries(task), ["[[4]]#"] * len(domain.eval_queries(task)))


def test_token_budget_filters_text():
    task = generic_task(3)
    budget = ArcDomain({"train": [task]}, fake_chat, EOS, count_tokens=len, max_tokens=700)
    free = ArcDomain({"train": [task]}, fake_chat, EOS)
    small, full = budget.apply_plan(task, ORACLE_PLAN), free.apply_plan(task, ORACLE_PLAN)
    assert all(len(e.prompt + e.completion) < 700 for e in small.examples) and small.examples != full.examples
    assert all(len(q.prompt) < 700 for q in budget.eval_queries(task))
