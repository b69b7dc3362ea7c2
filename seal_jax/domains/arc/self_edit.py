"""The ARC self-edit: a prompt asking for a JSON training plan (augmentation groups + inner-loop settings) and
a strict, never-raising parser for the reply (docs/reference.md#arc-self-edit-format)."""

from __future__ import annotations

import dataclasses
import json
import re

from seal_jax.domains.arc.augment import AugmentGroups
from seal_jax.domains.arc.grids import ArcTask, Grid, Messages
from seal_jax.domains.base import Grammar, Invalid

LEARNING_RATE_MAX = 1e-2  # learning_rate must lie in (0, LEARNING_RATE_MAX]
EPOCHS_MIN, EPOCHS_MAX = 1, 20
TTT_BATCH_SIZE = 2
MAX_TTT_STEPS = 375  # the reference's compute cap: epochs * n_examples // batch must not exceed it
MAX_JSON_CANDIDATES = 64  # '{' positions tried when looking for the JSON object in a reply

STRATEGIES = {"train_using_all_tokens": True, "train_using_output_tokens": False}  # -> loss_on_all_tokens
AUGMENTATION_KEYS = {f"use_{name}_augmentations": name for name in ("basic", "size", "chain", "repeat")}
# The reply's schema: every key required, no others allowed; leaves are the accepted Python types after json.
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "data_generation": dict.fromkeys(AUGMENTATION_KEYS, bool),
    "training": {"strategy": str, "learning_rate": (int, float), "num_train_epochs": int},
}


def _plan_grammar() -> Grammar:
    """The replies constrained decoding allows: one JSON object of `SCHEMA` on one line, keys in order, every
    value in range (learning rates from a grid of 1 to 2 significant digits over [1e-6, 1e-2]; epochs
    EPOCHS_MIN..EPOCHS_MAX). Each of its strings parses to a plan (`parse_self_edit_json`)."""
    rates = [f"{m}e-{e}" for m in range(1, 10) for e in range(3, 7)] + ["1e-2", "0.01"]
    rates += [f"0.{'0' * z}{d}" for z in range(2, 6) for d in range(1, 10)]
    rates += [f"{m}.5e-{e}" for m in range(1, 10) for e in range(3, 7)]
    bools = ("true", "false")
    segments: list[tuple[str, ...]] = [('{"data_generation": {',)]
    for n, key in enumerate(AUGMENTATION_KEYS):
        segments += [(f'{", " if n else ""}"{key}": ',), bools]
    segments += [
        ('}, "training": {"strategy": "',),
        tuple(STRATEGIES),
        ('", "learning_rate": ',),
        tuple(rates),
    ]
    segments += [
        (', "num_train_epochs": ',),
        tuple(str(e) for e in range(EPOCHS_MIN, EPOCHS_MAX + 1)),
        ("}}",),
    ]
    return tuple(segments)


PLAN_GRAMMAR = _plan_grammar()

SYSTEM_MESSAGE = (
    "You are a helpful assistant. Give the requested output directly, with nothing before or after it."
)
INSTRUCTION = """You are setting up a short training run that should teach a model the transformation shown \
above. Build it only from the predefined tools listed here.

Make two choices:

1. Data generation tools: set each of these to true or false.
    - use_basic_augmentations
    - use_size_augmentations
    - use_chain_augmentations
    - use_repeat_augmentations

2. Training setup: pick one strategy,
    - "train_using_all_tokens"
    - "train_using_output_tokens"
   and give
    - learning_rate (a float)
    - num_train_epochs (an integer)

Answer with a single JSON object and nothing else: no explanation, no markdown. Write booleans as lowercase \
true/false and keep the JSON valid.

The object must have this shape:

{
  "data_generation": {
    "use_basic_augmentations": ...,
    "use_size_augmentations": ...,
    "use_chain_augmentations": ...,
    "use_repeat_augmentations": ...
  },
  "training": {
    "strategy": ...,
    "learning_rate": ...,
    "num_train_epochs": ...
  }
}
"""


@dataclasses.dataclass(frozen=True)
class SelfEditPlan:
    """A validated self-edit: which augmentation groups build the TTT data, and the inner-loop settings."""

    groups: AugmentGroups
    loss_on_all_tokens: bool
    learning_rate: float
    epochs: int

    def to_json(self) -> str:
        """The plan as the reply the policy should write (parses back to an equal plan)."""
        strategy = next(
            name for name, all_tokens in STRATEGIES.items() if all_tokens == self.loss_on_all_tokens
        )
        return json.dumps(
            {
                "data_generation": {
                    key: getattr(self.groups, name) for key, name in AUGMENTATION_KEYS.items()
                },
                "training": {
                    "strategy": strategy,
                    "learning_rate": self.learning_rate,
                    "num_train_epochs": self.epochs,
                },
            },
            indent=2,
        )


# The reference's fixed "Oracle TTT" configuration (`ttt.py`): every augmentation group, output-only loss.
ORACLE_PLAN = SelfEditPlan(
    AugmentGroups(basic=True, size=True, chain=True, repeat=True),
    loss_on_all_tokens=False,
    learning_rate=1e-4,
    epochs=2,
)


def _grid_rows(grid: Grid) -> str:
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in grid)


def self_edit_messages(
    task: ArcTask, system: str = SYSTEM_MESSAGE, instruction: str = INSTRUCTION
) -> Messages:
    """The policy's chat messages: each demo as `Input:`/`Output:` rows, `------`, the instruction.

    The test input is deliberately not shown. `system` and `instruction` default to seal_jax's wording.
    """
    demos = "".join(
        f"Input:\n{_grid_rows(ex.input)}\nOutput:\n{_grid_rows(ex.output)}\n" for ex in task.train
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": demos + "------\n\n" + instruction},
    ]


def _first_json_object(text: str) -> dict | Invalid:
    """The first `{...}` in `text` that decodes as a JSON object (fences and prose around it are ignored)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(MAX_JSON_CANDIDATES):
        if start < 0:
            break
        try:
            value, _end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return Invalid("no JSON object found in the self-edit")


def _check_schema(obj: dict) -> Invalid | None:
    for section, fields in SCHEMA.items():
        if not isinstance(obj.get(section), dict):
            return Invalid(f"'{section}' must be a JSON object")
        given = obj[section]
        if missing := sorted(fields.keys() - given.keys()):
            return Invalid(f"missing key(s) in '{section}': {', '.join(missing)}")
        if unknown := sorted(given.keys() - fields.keys()):
            return Invalid(f"unknown key(s) in '{section}': {', '.join(unknown)}")
        for key, kind in fields.items():
            value = given[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                return Invalid(f"'{section}.{key}' has the wrong type ({type(value).__name__})")
    if unknown := sorted(obj.keys() - SCHEMA.keys()):
        return Invalid(f"unknown top-level key(s): {', '.join(unknown)}")
    return None


def _coerce_strings(obj: dict) -> dict:
    """Lenient mode: quoted scalars of the schema's fields become their types ("true" -> true, "1e-4" -> 1e-4,
    "3" -> 3); anything that does not convert cleanly is left for the schema check to reject."""
    out = dict(obj)
    for section, fields in SCHEMA.items():
        given = obj.get(section)
        if not isinstance(given, dict):
            continue
        fixed = dict(given)
        for key, kind in fields.items():
            kinds, value = kind if isinstance(kind, tuple) else (kind,), given.get(key)
            if not isinstance(value, str) or str in kinds:
                continue
            word = value.strip().lower()
            if bool in kinds and word in ("true", "false"):
                fixed[key] = word == "true"
            elif float in kinds and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", word):
                fixed[key] = float(word)
            elif int in kinds and re.fullmatch(r"[+-]?\d{1,6}", word):
                fixed[key] = int(word)
        out[section] = fixed
    return out


def parse_self_edit_json(text: str, lenient: bool = False) -> SelfEditPlan | Invalid:
    """Validates a policy reply against `SCHEMA` and the ranges above. Never raises.

    Tolerated: markdown code fences and prose around the object (the first JSON object is used). Rejected with
    a reason: no/invalid JSON, missing or unknown keys, wrong types, an unknown strategy, learning_rate not in
    (0, LEARNING_RATE_MAX], num_train_epochs outside [EPOCHS_MIN, EPOCHS_MAX]. `lenient` first converts quoted
    booleans and numbers (`"true"`, `"1e-4"`), which small models write; the default is the strict schema.
    """
    if not isinstance(text, str):
        return Invalid(f"self-edit must be text, got {type(text).__name__}")
    obj = _first_json_object(text)
    if isinstance(obj, Invalid):
        return obj
    if lenient:
        obj = _coerce_strings(obj)
    if (bad := _check_schema(obj)) is not None:
        return bad
    training = obj["training"]
    strategy, lr, epochs = training["strategy"], training["learning_rate"], training["num_train_epochs"]
    if strategy not in STRATEGIES:
        return Invalid(f"unknown strategy {strategy[:40]!r}; expected one of {sorted(STRATEGIES)}")
    if not 0 < lr <= LEARNING_RATE_MAX:  # also rejects NaN and infinities
        return Invalid(f"learning_rate {lr!r:.24} outside (0, {LEARNING_RATE_MAX}]")
    if not EPOCHS_MIN <= epochs <= EPOCHS_MAX:
        return Invalid(f"num_train_epochs {epochs!r:.24} outside [{EPOCHS_MIN}, {EPOCHS_MAX}]")
    groups = AugmentGroups(**{name: obj["data_generation"][key] for key, name in AUGMENTATION_KEYS.items()})
    return SelfEditPlan(groups, STRATEGIES[strategy], float(lr), epochs)


def check_step_cap(plan: SelfEditPlan, n_examples: int) -> Invalid | None:
    """The reference's compute cap: Invalid if epochs * n_examples // TTT_BATCH_SIZE > MAX_TTT_STEPS.

    The reference silently trained such self-edits for 0 epochs (and still evaluated them); here they are
    rejected with a reason instead.
    """
    steps = plan.epochs * n_examples // TTT_BATCH_SIZE
    if steps > MAX_TTT_STEPS:
        return Invalid(f"{plan.epochs} epochs x {n_examples} examples = {steps} steps > cap {MAX_TTT_STEPS}")
    return None
