from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal_jax.domains.arc.augment import AugmentGroups
from seal_jax.domains.arc.self_edit import (
    EPOCHS_MAX,
    EPOCHS_MIN,
    LEARNING_RATE_MAX,
    MAX_TTT_STEPS,
    ORACLE_PLAN,
    SelfEditPlan,
    check_step_cap,
    parse_self_edit_json,
    self_edit_messages,
)
from seal_jax.domains.base import Invalid

from .conftest import generic_task

VALID = {
    "data_generation": {
        "use_basic_augmentations": True,
        "use_size_augmentations": False,
        "use_chain_augmentations": True,
        "use_repeat_augmentations": False,
    },
    "training": {"strategy": "train_using_output_tokens", "learning_rate": 0.0001, "num_train_epochs": 3},
}


def _with(section: str, key: str, value) -> dict:
    plan = json.loads(json.dumps(VALID))
    plan[section][key] = value
    return plan


def test_valid_plan():
    plan = parse_self_edit_json(json.dumps(VALID))
    assert plan == SelfEditPlan(AugmentGroups(basic=True, chain=True), False, 1e-4, 3)


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps(VALID, indent=2) + "\n```",
        "Sure! Here is my {choice}:\n" + json.dumps(VALID) + "\nGood luck.",
        json.dumps(VALID)
        + "\n"
        + json.dumps(_with("training", "num_train_epochs", 99)),  # the first one counts
    ],
)
def test_fences_and_prose_are_tolerated(text):
    assert parse_self_edit_json(text) == parse_self_edit_json(json.dumps(VALID))


def test_all_tokens_strategy_and_round_trip():
    plan = parse_self_edit_json(json.dumps(_with("training", "strategy", "train_using_all_tokens")))
    assert isinstance(plan, SelfEditPlan) and plan.loss_on_all_tokens
    assert parse_self_edit_json(ORACLE_PLAN.to_json()) == ORACLE_PLAN
    assert parse_self_edit_json(plan.to_json()) == plan


def _without(section: str, key: str) -> dict:
    plan = json.loads(json.dumps(VALID))
    del plan[section][key]
    return plan


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (_without("training", "learning_rate"), "missing key(s) in 'training': learning_rate"),
        (_without("data_generation", "use_size_augmentations"), "missing key(s) in 'data_generation'"),
        ({"training": VALID["training"]}, "'data_generation' must be a JSON object"),
        (_with("training", "momentum", 0.9), "unknown key(s) in 'training': momentum"),
        ({**VALID, "notes": "x"}, "unknown top-level key(s): notes"),
        (_with("training", "strategy", "train_using_some_tokens"), "unknown strategy"),
        (_with("training", "strategy", 1), "'training.strategy' has the wrong type"),
        (_with("training", "learning_rate", 0), "outside (0, 0.01]"),
        (_with("training", "learning_rate", -1e-4), "outside (0, 0.01]"),
        (_with("training", "learning_rate", 0.5), "outside (0, 0.01]"),
        (_with("training", "learning_rate", "1e-4"), "wrong type (str)"),
        (_with("training", "learning_rate", True), "wrong type (bool)"),
        (_with("training", "num_train_epochs", 0), "num_train_epochs 0 outside [1, 20]"),
        (_with("training", "num_train_epochs", 21), "outside [1, 20]"),
        (_with("training", "num_train_epochs", 2.0), "wrong type (float)"),
        (_with("data_generation", "use_basic_augmentations", "true"), "wrong type (str)"),
        (_with("data_generation", "use_basic_augmentations", 1), "wrong type (int)"),
    ],
)
def test_invalid_plans(obj, reason):
    result = parse_self_edit_json(json.dumps(obj))
    assert isinstance(result, Invalid) and reason in result.reason, result


@pytest.mark.parametrize(
    "text",
    ["", "no json here", "{not json}", "[1, 2]", '{"data_generation": NaN}', "{" * 100_000, "[" * 100_000],
)
def test_no_usable_json(text):
    assert isinstance(parse_self_edit_json(text), Invalid)


def test_non_finite_learning_rates():
    for lr in ("NaN", "Infinity", "-Infinity", "1e999"):
        text = json.dumps(VALID).replace("0.0001", lr)
        assert isinstance(parse_self_edit_json(text), Invalid), lr


def test_step_cap():
    plan = SelfEditPlan(AugmentGroups(), False, 1e-4, 3)
    assert check_step_cap(plan, 250) is None  # 3 * 250 // 2 == 375
    over = check_step_cap(plan, 251)
    assert isinstance(over, Invalid) and str(MAX_TTT_STEPS) in over.reason
    assert check_step_cap(SelfEditPlan(AugmentGroups(), False, 1e-4, 20), 37) is None  # 370 steps


def test_prompt_shows_demos_not_the_test_input():
    task = generic_task(2)
    system, user = self_edit_messages(task)
    assert system["role"] == "system" and user["role"] == "user"
    rows = lambda g: "\n".join(" ".join(map(str, row)) for row in g.tolist())
    for ex in task.train:
        assert f"Input:\n{rows(ex.input)}\n" in user["content"]
        assert f"Output:\n{rows(ex.output)}\n" in user["content"]
    assert rows(task.test[0].input) not in user["content"]
    assert "\n------\n" in user["content"] and '"num_train_epochs"' in user["content"]
    assert user["content"].index("------") > user["content"].rindex("Output:")


# ---- fuzzing: the parser never raises, and accepts exactly the plans the schema allows ----

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["train_using_all_tokens", "train_using_output_tokens"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _expected_valid(obj) -> bool:
    """An independent statement of the schema."""
    if not isinstance(obj, dict) or set(obj) != {"data_generation", "training"}:
        return False
    gen, train = obj["data_generation"], obj["training"]
    if not isinstance(gen, dict) or not isinstance(train, dict) or set(gen) != set(VALID["data_generation"]):
        return False
    if set(train) != set(VALID["training"]) or not all(type(v) is bool for v in gen.values()):
        return False
    lr, epochs = train["learning_rate"], train["num_train_epochs"]
    return (
        train["strategy"] in ("train_using_all_tokens", "train_using_output_tokens")
        and type(lr) in (int, float)
        and 0 < lr <= LEARNING_RATE_MAX
        and type(epochs) is int
        and EPOCHS_MIN <= epochs <= EPOCHS_MAX
    )


# Plausible values per key (mostly of the right type, around the valid ranges) and arbitrary JSON values.
plausible = {
    "strategy": st.sampled_from(
        ["train_using_all_tokens", "train_using_output_tokens", "train_using_outputs"]
    ),
    "learning_rate": st.one_of(st.floats(-0.005, 0.02), st.integers(-1, 1), st.sampled_from([1e-4, 1e-2])),
    "num_train_epochs": st.one_of(st.integers(-2, 25), st.floats(0, 25)),
}


@st.composite
def mutated_plans(draw):
    plan = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(["data_generation"] * 3 + ["training"] * 4 + [None]))
        target = plan if section is None else plan.get(section)
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from([*target.keys(), "extra"]))
        action = draw(st.sampled_from(["plausible", "plausible", "plausible", "delete", "arbitrary"]))
        if action == "delete":
            target.pop(key, None)
        elif action == "plausible":
            target[key] = draw(plausible.get(key, st.one_of(st.booleans(), st.integers(0, 1))))
        else:
            target[key] = draw(json_value)
    return plan


@settings(max_examples=500, deadline=None)
@given(mutated_plans(), st.sampled_from(["{}", "```json\n{}\n```", "My plan: {} -- done", "{}}}"]))
def test_fuzz_mutated_plans(plan, wrapper):
    text = wrapper.replace("{}", json.dumps(plan), 1)
    result = parse_self_edit_json(text)
    assert isinstance(result, SelfEditPlan | Invalid)
    assert isinstance(result, SelfEditPlan) == _expected_valid(plan), (plan, result)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text):
    assert isinstance(parse_self_edit_json(text), SelfEditPlan | Invalid)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_corrupted_valid_text(data):
    chars = list(json.dumps(VALID, indent=2))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(chars) - 1))
        op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        if op == "delete":
            del chars[i]
        else:
            c = data.draw(st.sampled_from(list('{}[]",:0123456789.eE-+ tfnul\\')) | st.characters())
            chars[i : i + (op == "replace")] = [c]
    result = parse_self_edit_json("".join(chars))
    assert isinstance(result, SelfEditPlan | Invalid)


def test_lenient_mode_accepts_quoted_scalars_only():
    quoted = json.loads(json.dumps(VALID))
    quoted["data_generation"] = {k: str(v).lower() for k, v in VALID["data_generation"].items()}
    quoted["training"].update(learning_rate=f"{VALID['training']['learning_rate']}", num_train_epochs=" 3 ")
    text = json.dumps(quoted)
    assert isinstance(parse_self_edit_json(text), Invalid)  # strict by default
    lenient = parse_self_edit_json(text, lenient=True)
    assert isinstance(lenient, SelfEditPlan) and lenient.epochs == 3
    assert lenient == dataclasses.replace(parse_self_edit_json(json.dumps(VALID)), epochs=3)
    for bad in ("yes", "1", ""):
        quoted["data_generation"]["use_basic_augmentations"] = bad
        assert isinstance(parse_self_edit_json(json.dumps(quoted), lenient=True), Invalid), bad


@settings(max_examples=300, deadline=None)
@given(mutated_plans(), st.booleans())
def test_fuzz_lenient_never_raises_and_keeps_strict_verdicts(plan, quote):
    if quote:  # quote every scalar leaf, as small models do
        plan = {
            s: {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in f.items()}
            if isinstance(f, dict)
            else f
            for s, f in plan.items()
        }
    text = json.dumps(plan)
    lenient = parse_self_edit_json(text, lenient=True)
    assert isinstance(lenient, SelfEditPlan | Invalid)
    if isinstance(parse_self_edit_json(text), SelfEditPlan):
        assert lenient == parse_self_edit_json(text)
