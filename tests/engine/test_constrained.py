"""Grammar-constrained decoding: the character automaton, its token table, and sampling that only writes plans."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from seal_jax.domains.arc.self_edit import PLAN_GRAMMAR, SelfEditPlan, parse_self_edit_json
from seal_jax.engine.constrained import _char_automaton, compile_grammar, shortest_reply, token_texts
from seal_jax.engine.text import sampling_config
from seal_jax.errors import UserInputError

# "1" is both an alternative and a prefix of "10", and the next segment starts with "0": a reply's split into
# segments is ambiguous until later characters, which a deterministic automaton must still accept.
TOY = (("a",), ("1", "10", "2"), ("0b", "c"))
LANGUAGE = {"".join(parts) for parts in itertools.product(*TOY)}


def accepts(grammar, text: str) -> bool:
    moves, final = _char_automaton(grammar)
    state = 0
    for ch in text:
        if ch not in moves[state]:
            return False
        state = moves[state][ch]
    return final[state]


def test_char_automaton_accepts_exactly_the_language():
    assert all(accepts(TOY, s) for s in LANGUAGE)
    alphabet = sorted({c for s in LANGUAGE for c in s})
    others = {"".join(p) for n in range(1, 7) for p in itertools.product(alphabet, repeat=n)} - LANGUAGE
    assert not any(accepts(TOY, s) for s in others)


def walk(constraint, rng: random.Random, texts: dict[int, str], eos: int) -> str:
    """A random path through the token table: the text it spells up to EOS."""
    table, ids = np.asarray(constraint.table), np.asarray(constraint.token_ids)
    state, out = 0, []
    for _ in range(1000):
        choices = np.flatnonzero(table[state] >= 0)
        j = rng.choice(list(choices))
        if ids[j] == eos:
            return "".join(out)
        out.append(texts[int(ids[j])])
        state = table[state, j]
    raise AssertionError("no EOS")


def test_token_paths_spell_the_language_with_multi_character_tokens():
    texts = {0: "a", 1: "1", 2: "0", 3: "b", 4: "2", 5: "c", 6: "a1", 7: "10b", 8: "0b", 9: "zz", 10: "1c"}
    c = compile_grammar(TOY, texts, eos_ids=(99,))
    assert 9 not in set(np.asarray(c.token_ids).tolist())  # a token no state can use is left out
    rng = random.Random(0)
    seen = {walk(c, rng, texts, 99) for _ in range(300)}
    assert seen == LANGUAGE  # every path is in the language, and every string is reachable
    assert shortest_reply(c) == 3  # "a1" + "c" (or "a" + "1c"), then EOS


def test_a_vocabulary_that_cannot_spell_the_grammar_is_rejected():
    with pytest.raises(ValueError, match="cannot continue"):
        compile_grammar(TOY, {0: "a", 1: "1"}, eos_ids=(99,))
    with pytest.raises(ValueError, match="EOS"):
        compile_grammar(TOY, {0: "a"}, eos_ids=())


def test_every_plan_grammar_string_is_a_valid_plan():
    rng = random.Random(1)
    for _ in range(200):
        text = "".join(rng.choice(alternatives) for alternatives in PLAN_GRAMMAR)
        assert isinstance(parse_self_edit_json(text), SelfEditPlan), text


def test_token_texts_round_trip(tiny_runtime):
    tok = tiny_runtime.tokenizer
    texts = token_texts(tok)
    assert all(tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in list(texts.values())[:300])


def test_constrained_sampling_writes_only_valid_plans(tiny_runtime):
    """A random model writes no plan as free text; constrained, every reply is a distinct valid plan."""
    cfg = sampling_config(tiny_runtime.tokenizer, max_new=320, temperature=1.0)
    prompts = ["Write a training plan:"] * 4
    free = tiny_runtime.sample(prompts, cfg, seed=0)
    plans = tiny_runtime.sample(prompts, cfg, seed=0, grammar=PLAN_GRAMMAR)
    assert not any(isinstance(parse_self_edit_json(t), SelfEditPlan) for t in free)
    parsed = [parse_self_edit_json(t) for t in plans]
    assert all(isinstance(p, SelfEditPlan) for p in parsed), plans
    assert len(set(plans)) > 1  # still sampled, not forced to one reply
    greedy = sampling_config(tiny_runtime.tokenizer, max_new=320)
    first, again = (tiny_runtime.sample(prompts[:1], greedy, seed, PLAN_GRAMMAR) for seed in (3, 4))
    assert first == again and isinstance(parse_self_edit_json(first[0]), SelfEditPlan)  # greedy: seed-free


def test_a_budget_that_cuts_every_constrained_reply_is_refused(tiny_runtime):
    cfg = sampling_config(tiny_runtime.tokenizer, max_new=16)
    with pytest.raises(UserInputError, match=r"restem\.max_self_edit_tokens"):
        tiny_runtime.sample(["Write a training plan:"], cfg, seed=0, grammar=PLAN_GRAMMAR)
