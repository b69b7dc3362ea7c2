"""The KV-cache sampler against a full-forward reference: greedy, per-row EOS, K adapters, temperature, top-p."""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.sampling import (
    SamplingConfig,
    _nucleus_threshold,
    _order_keys,
    generate_jit,
    generate_k,
    pad_prompts,
    prompt_width,
    sample_token,
)
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import KVCache, init_lora_k, merge_model

LORA = LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "down"))
# Right-padded prompts of different lengths in one batch.
PROMPTS = [[5, 6, 7], [100, 101, 102, 103, 104, 105, 106], [42], [200, 13, 77, 9, 31]]
GREEDY = SamplingConfig(max_new=8, pad_id=0, prompt_bucket=16)


def random_loras(model, k: int, seed: int = 0, scale: float = 0.5):
    """K adapters with B != 0 (a fresh adapter is the identity), strong enough that greedy stops echoing."""
    return _random_loras(model.config, k, seed, scale)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _random_loras(config, k: int, seed: int, scale: float):
    lora = init_lora_k(config, LORA, jnp.stack([jax.random.key(seed + i) for i in range(k)]))
    leaves, treedef = jax.tree.flatten(lora)
    keys = jax.random.split(jax.random.key(seed + 1000), len(leaves))
    noisy = [x + scale * jax.random.normal(kk, x.shape) for x, kk in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


def one(lora_k, i: int):
    return jax.tree.map(lambda x: x[i], lora_k)


def run(model, lora, cfg: SamplingConfig, key=0, prompts=PROMPTS):
    toks, lens = pad_prompts(prompts, cfg)
    graphdef = model.graphdef(LORA if lora is not None else None)
    out, n = generate_jit(
        model.base,
        lora,
        jnp.asarray(toks),
        jnp.asarray(lens),
        jax.random.key(key),
        graphdef=graphdef,
        cfg=cfg,
    )
    return np.asarray(out), np.asarray(n)


@functools.partial(jax.jit, static_argnums=0)
def _full_logits(graphdef, base, lora, tokens):
    return merge_model(graphdef, base, lora).forward_logits(tokens)


def reference_greedy(model, lora, prompts, max_new: int) -> np.ndarray:
    """No cache: re-run the whole (right-padded, causal) sequence each step and take the argmax."""
    graphdef = model.graphdef(LORA if lora is not None else None)
    seqs = [list(p) for p in prompts]
    width = max(len(p) for p in prompts) + max_new
    for _ in range(max_new):
        buf = np.zeros((len(seqs), width), np.int32)
        for i, s in enumerate(seqs):
            buf[i, : len(s)] = s
        logits = np.asarray(_full_logits(graphdef, model.base, lora, jnp.asarray(buf)))
        for i, s in enumerate(seqs):
            s.append(int(np.argmax(logits[i, len(s) - 1])))
    return np.array([s[len(p) :] for s, p in zip(seqs, prompts, strict=True)], np.int32)


@pytest.fixture(scope="module")
def lora(tiny):
    return one(random_loras(tiny, 1), 0)


@pytest.fixture(scope="module")
def greedy_out(tiny, lora):
    return run(tiny, lora, GREEDY)


def test_greedy_equals_full_forward_argmax(tiny, lora, greedy_out):
    out, n = greedy_out
    ref = reference_greedy(tiny, lora, PROMPTS, GREEDY.max_new)
    assert len(set(ref.ravel().tolist())) > 4, ref  # not a degenerate echo of the last prompt token
    np.testing.assert_array_equal(out, ref)
    assert n.tolist() == [GREEDY.max_new] * len(PROMPTS)


def test_per_row_eos_stops_only_that_row(tiny, lora, greedy_out):
    out, _ = greedy_out
    # A row whose step-2 token appears nowhere else before it: make it the EOS id.
    row, eos = next(
        (r, int(out[r, 2]))
        for r in range(len(PROMPTS))
        if int(out[r, 2]) not in out[r, :2]
        and all(int(out[r, 2]) not in out[o] for o in range(len(PROMPTS)) if o != r)
    )
    pad = next(t for t in range(1, 259) if t not in out)
    cfg = dataclasses.replace(GREEDY, eos_ids=(eos,), pad_id=pad)
    stopped, n = run(tiny, lora, cfg)
    assert int(n[row]) == 3
    np.testing.assert_array_equal(stopped[row, :3], out[row, :3])
    assert (stopped[row, 3:] == pad).all()
    others = [r for r in range(len(PROMPTS)) if r != row]
    np.testing.assert_array_equal(stopped[others], out[others])
    assert n[others].tolist() == [GREEDY.max_new] * len(others)


def generate_k_and_alone(tiny, cfg: SamplingConfig, k: int = 3):
    """(generate_k outputs, [each adapter run alone]) for K random adapters with their own prompts."""
    loras = random_loras(tiny, k, seed=10)
    rng = np.random.default_rng(0)
    prompts_k = [[rng.integers(0, 256, n).tolist() for n in (2, 6, 4, 9)] for _ in range(k)]
    padded = [pad_prompts(p, cfg) for p in prompts_k]
    keys = jnp.stack([jax.random.key(i) for i in range(k)])
    out_k, n_k = generate_k(
        tiny.base,
        loras,
        jnp.asarray(np.stack([p[0] for p in padded])),
        jnp.asarray(np.stack([p[1] for p in padded])),
        keys,
        graphdef=tiny.graphdef(LORA),
        cfg=cfg,
    )
    alone = [run(tiny, one(loras, i), cfg, key=i, prompts=prompts_k[i]) for i in range(k)]
    return (np.asarray(out_k), np.asarray(n_k)), alone


def test_generate_k_equals_each_adapter_alone(tiny):
    (out_k, n_k), alone = generate_k_and_alone(tiny, GREEDY)
    for i, (out, n) in enumerate(alone):
        np.testing.assert_array_equal(out_k[i], out)
        np.testing.assert_array_equal(n_k[i], n)
    assert not np.array_equal(alone[0][0], alone[1][0])  # the adapters really differ


def test_generate_k_rows_and_adapters_stop_independently(tiny):
    """With an EOS, rows of different adapters stop at different steps; the shared loop runs on until the
    last row is done, and every adapter's output still equals its own run (which may stop earlier)."""
    (first, _), _ = generate_k_and_alone(tiny, GREEDY)
    eos = int(np.bincount(first[:, :, 1:4].ravel()).argmax())  # a token that ends some rows early
    pad = next(t for t in range(1, 259) if t not in first)
    cfg = dataclasses.replace(GREEDY, eos_ids=(eos,), pad_id=pad)
    (out_k, n_k), alone = generate_k_and_alone(tiny, cfg)
    for i, (out, n) in enumerate(alone):
        np.testing.assert_array_equal(out_k[i], out)
        np.testing.assert_array_equal(n_k[i], n)
    assert n_k.min() < GREEDY.max_new and n_k.max() > n_k.min()  # some rows stopped, at different steps
    rows_stopped = n_k < GREEDY.max_new
    assert (out_k[rows_stopped][:, -1] == pad).all()


def test_temperature_sampling_is_deterministic_per_key(tiny):
    cfg = dataclasses.replace(GREEDY, temperature=1.0)
    a, _ = run(tiny, None, cfg, key=1)
    b, _ = run(tiny, None, cfg, key=1)
    c, _ = run(tiny, None, cfg, key=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_tiny_top_p_equals_greedy(tiny, lora, greedy_out):
    cfg = dataclasses.replace(GREEDY, temperature=1.0, top_p=1e-6)
    for key in (0, 1):
        out, _ = run(tiny, lora, cfg, key=key)
        np.testing.assert_array_equal(out, greedy_out[0])


def test_top_p_samples_only_from_the_nucleus():
    probs = np.array([0.5, 0.3, 0.1, 0.05, 0.05])
    logits = jnp.log(jnp.asarray(np.tile(probs, (4000, 1)), jnp.float32))
    cfg = SamplingConfig(temperature=1.0, top_p=0.7)
    drawn = np.asarray(sample_token(logits, jax.random.key(0), cfg))
    assert set(drawn.tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.7; tokens 2..4 are cut
    assert abs((drawn == 0).mean() - 0.5 / 0.8) < 0.03


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95])
def test_nucleus_is_the_smallest_top_set_holding_top_p(top_p):
    """The bisection threshold keeps exactly the tokens a sort would: the most likely ones until their mass
    reaches top_p, ties at the edge included (numpy float64 reference; rows whose edge is within float32
    rounding of top_p are skipped)."""
    rng = np.random.default_rng(int(top_p * 100))
    logits = rng.normal(size=(64, 1000)) * rng.choice([0.3, 1.0, 4.0], size=(64, 1))
    logits[::8, :20] = logits[::8].max(axis=1, keepdims=True)  # ties among the top tokens
    logits = logits.astype(np.float32)
    keys = _order_keys(jnp.asarray(logits))
    kept = np.asarray(keys >= _nucleus_threshold(keys, jax.nn.softmax(jnp.asarray(logits)), top_p))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True), dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    checked = 0
    for row, p in enumerate(probs):
        order = np.argsort(-p, kind="stable")
        mass_before = np.cumsum(p[order]) - p[order]
        edge = p[order][mass_before < top_p].min()
        if np.abs(np.cumsum(p[order]) - top_p).min() < 2e-5:
            continue
        np.testing.assert_array_equal(kept[row], p >= edge)
        checked += 1
    assert checked > 40


def test_pad_prompts_rejects_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        pad_prompts([[1, 2], []], GREEDY)
    toks, lens = pad_prompts([[1, 2], [3]], GREEDY)
    assert toks.shape == (2, 16) and lens.tolist() == [2, 1]


def decode_k_args(tiny, k: int, rows: int, width: int) -> tuple:
    """`generate_k`'s array arguments for K random adapters × `rows` prompts of `width` tokens (3 of them real)."""
    return (
        tiny.base,
        random_loras(tiny, k),
        jnp.ones((k, rows, width), jnp.int32),
        jnp.full((k, rows), 3, jnp.int32),
        jnp.stack([jax.random.key(i) for i in range(k)]),
    )


def test_decode_loop_reads_no_weight_stack_and_has_a_scalar_predicate(tiny):
    """The two decode-speed properties, read off the program: the while body takes per-layer weights cut before
    the loop (no slicing of the [L, ...] stacks per token), and under vmap its predicate stays a scalar (a batched
    one makes XLA select between the old and new loop state, KV cache included, at every token)."""
    jaxpr = jax.make_jaxpr(functools.partial(generate_k, graphdef=tiny.graphdef(LORA), cfg=GREEDY))(
        *decode_k_args(tiny, k=2, rows=3, width=16)
    )
    cfg = tiny.config
    stacked = {
        tuple(x.shape) for x in jax.tree.leaves(tiny.base) if x.ndim > 1 and x.shape[0] == cfg.num_layers
    }

    def eqns(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from eqns(sub)

    loops = [e for e in eqns(jaxpr.jaxpr) if e.primitive.name == "while"]
    decode = max(loops, key=lambda e: len(list(eqns(e.params["body_jaxpr"].jaxpr))))
    assert decode.params["cond_jaxpr"].out_avals[0].shape == ()
    body_eqns = list(eqns(decode.params["body_jaxpr"].jaxpr))
    assert any(e.primitive.name == "dot_general" for e in body_eqns)  # the decode step itself
    for e in body_eqns:
        shapes = [tuple(v.aval.shape) for v in e.invars if hasattr(v, "aval")]
        assert not stacked & set(shapes), f"a stacked [L, ...] weight is read inside the loop: {e.primitive}"


@pytest.mark.parametrize("rows", [1, 3])
def test_decode_loop_writes_the_kv_cache_in_place(tiny, rows):
    """No layer's cache is copied inside the compiled decode loop: each step writes one slot in place and its
    attention reads the cache as stored. (With one row per adapter, a cache laid out [B, Hkv, S, hd] was
    reshaped between the write and the read, and XLA copied every cache array at every token.)"""
    k, p = 2, 16
    args = decode_k_args(tiny, k, rows, p)
    hlo = generate_k.lower(*args, graphdef=tiny.graphdef(LORA), cfg=GREEDY).compile().as_text()
    cache = KVCache.zeros(tiny.config, rows, p + GREEDY.max_new)
    cache_dims = {",".join(map(str, (k, *x.shape))) for x in (cache.k[0], cache.v[0])}
    bodies = set(re.findall(r"\bbody=%?([\w.\-]+)", hlo))
    assert bodies, "no while loop in the decode program"
    computations = re.split(r"\n(?=\S)", hlo)  # one block per computation, named on its first line
    copies = [
        line.strip()
        for block in computations
        if block.split(" ", 1)[0].lstrip("%") in bodies
        for line in block.splitlines()
        if (copy := re.search(r"f32\[([\d,]+)\]\{[\d,]*\} copy\(", line)) and copy.group(1) in cache_dims
    ]
    assert not copies, copies[:2]


def test_prompt_widths_are_few_per_doubling_and_pad_under_a_quarter():
    cfg = SamplingConfig(prompt_bucket=16)
    widths = {n: prompt_width(n, cfg) for n in range(1, 1025)}
    assert all(w >= n and w % 16 == 0 for n, w in widths.items())
    assert all(w < 1.25 * n for n, w in widths.items() if n > 64)  # long prompts pad by under 25%
    for low in (64, 128, 256, 512):  # each doubling of the longest prompt compiles at most 4 programs
        assert len({widths[n] for n in range(low + 1, 2 * low + 1)}) <= 4
    assert len(set(widths.values())) <= 4 + 4 * 4  # 16..64, then 4 per doubling up to 1024
    assert pad_prompts([[1] * 100], cfg)[0].shape == (1, 112)
