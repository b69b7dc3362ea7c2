"""Grammar-constrained decoding: a reply restricted to a concatenation of choices, compiled to a token automaton.

A `Grammar` (`domains/base.py`) is a tuple of segments, each a tuple of alternative strings (a literal is a
one-string segment): the language is every concatenation of one alternative per segment. `compile_grammar`
turns it into a `TokenConstraint` for one vocabulary: the tokens that can occur at all (`token_ids`) and, per
automaton state, the state each of them leads to (-1: not allowed). The decode loop (`sampling.generate`) keeps
one state per row and samples only among allowed tokens; an EOS id is allowed once the reply is complete, and
only then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.domains.base import Grammar

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenConstraint:
    """token_ids: int32 [V'] (the vocabulary ids the grammar can use, EOS ids included); table: int32 [S, V']
    (next state after token j in state s, -1 if not allowed). State 0 is the start."""

    token_ids: Array
    table: Array

    def step(self, logits: Array, state: Array) -> Array:
        """logits f32 [B, V], state int32 [B] -> f32 [B, V'] over `token_ids`, disallowed ones at -inf."""
        allowed = self.table[state] >= 0
        return jnp.where(allowed, jnp.take(logits, self.token_ids, axis=-1), -jnp.inf)

    def advance(self, choice: Array, state: Array) -> tuple[Array, Array]:
        """choice int32 [B] (an index into `token_ids`) -> (vocabulary ids [B], next states [B])."""
        return self.token_ids[choice], self.table[state, choice]


Node = tuple[int, int]  # (segment index, trie node within it); segment == len(grammar): the reply is complete


def _tries(grammar: Grammar) -> list[tuple[list[dict[str, int]], set[int]]]:
    """Per segment: a trie of its alternatives (children per node) and its terminal nodes."""
    out = []
    for alternatives in grammar:
        children: list[dict[str, int]] = [{}]
        ends: set[int] = set()
        for text in alternatives:
            node = 0
            for ch in text:
                if ch not in children[node]:
                    children[node][ch] = len(children)
                    children.append({})
                node = children[node][ch]
            ends.add(node)
        out.append((children, ends))
    return out


def _char_automaton(grammar: Grammar) -> tuple[list[dict[str, int]], list[bool]]:
    """The deterministic character automaton of `grammar` (subset construction over the segments' tries):
    per state its transitions and whether the reply may end there. State 0 is the start."""
    tries = _tries(grammar)
    done = len(grammar)

    def closure(nodes: set[Node]) -> frozenset[Node]:
        stack, seen = list(nodes), set(nodes)
        while stack:
            seg, node = stack.pop()
            if seg < done and node in tries[seg][1] and (seg + 1, 0) not in seen:
                seen.add((seg + 1, 0))
                stack.append((seg + 1, 0))
        return frozenset(seen)

    start = closure({(0, 0)})
    index = {start: 0}
    states, moves, final = [start], [], []
    while len(moves) < len(states):
        current = states[len(moves)]
        targets: dict[str, set[Node]] = {}
        for seg, node in current:
            if seg < done:
                for ch, child in tries[seg][0][node].items():
                    targets.setdefault(ch, set()).add((seg, child))
        row = {}
        for ch, nodes in targets.items():
            target = closure(nodes)
            if target not in index:
                index[target] = len(states)
                states.append(target)
            row[ch] = index[target]
        moves.append(row)
        final.append((done, 0) in current)
    return moves, final


def token_texts(tokenizer: object) -> dict[int, str]:
    """Each ordinary (non-special) token id -> the text it adds after another token (so a SentencePiece
    tokenizer's leading space is kept): `decode([t0, i])` less `decode([t0])`."""
    special = set(getattr(tokenizer, "all_special_ids", ()))
    ids = [i for i in range(len(tokenizer)) if i not in special]
    anchor = next(i for i in ids if tokenizer.decode([i]))
    prefix = tokenizer.decode([anchor], clean_up_tokenization_spaces=False)
    texts = tokenizer.batch_decode([[anchor, i] for i in ids], clean_up_tokenization_spaces=False)
    return {i: t[len(prefix) :] for i, t in zip(ids, texts, strict=True) if t.startswith(prefix)}


def compile_grammar(grammar: Grammar, texts: Mapping[int, str], eos_ids: Sequence[int]) -> TokenConstraint:
    """The token automaton of `grammar` over a vocabulary (`texts`: id -> text, e.g. `token_texts`). Every
    path through it spells a string of the language, then an EOS id. Raises ValueError if some reachable state
    has no token (the vocabulary cannot spell the grammar) or `eos_ids` is empty."""
    if not eos_ids:
        raise ValueError("constrained decoding needs an EOS id to end a complete reply")
    moves, final = _char_automaton(grammar)
    alphabet = {ch for row in moves for ch in row}
    by_first: dict[str, list[tuple[int, str]]] = {}
    for i, text in texts.items():
        if text and set(text) <= alphabet:
            by_first.setdefault(text[0], []).append((i, text))
    edges: list[dict[int, int]] = []
    for state, row in enumerate(moves):
        out = {}
        for ch in row:
            for i, text in by_first.get(ch, ()):
                s = state
                for c in text:
                    s = moves[s].get(c, -1)
                    if s < 0:
                        break
                if s >= 0:
                    out[i] = s
        edges.append(out)
    ended = len(moves)  # after EOS: only EOS again (the row is done; its later tokens are dropped)
    for state, is_final in enumerate(final):
        if is_final:
            edges[state].update(dict.fromkeys(eos_ids, ended))
    edges.append(dict.fromkeys(eos_ids, ended))
    reachable, stack = {0}, [0]
    while stack:
        for nxt in edges[stack.pop()].values():
            if nxt not in reachable:
                reachable.add(nxt)
                stack.append(nxt)
    if stuck := sorted(s for s in reachable if not edges[s]):
        raise ValueError(f"the vocabulary cannot continue the grammar from {len(stuck)} state(s)")
    used = sorted({i for row in edges for i in row})
    column = {i: j for j, i in enumerate(used)}
    table = np.full((len(edges), len(used)), -1, np.int32)
    for state, row in enumerate(edges):
        for i, nxt in row.items():
            table[state, column[i]] = nxt
    return TokenConstraint(np.asarray(used, np.int32), table)


def shortest_reply(constraint: TokenConstraint) -> int:
    """The fewest tokens any complete reply takes, EOS included (a breadth-first search over the table)."""
    table = np.asarray(constraint.table)
    eos_state = table.shape[0] - 1  # `compile_grammar`'s state after EOS
    depth, frontier = 0, {0}
    seen = set(frontier)
    while eos_state not in frontier:
        frontier = {int(n) for s in frontier for n in table[s] if n >= 0} - seen
        seen |= frontier
        depth += 1
    return depth
