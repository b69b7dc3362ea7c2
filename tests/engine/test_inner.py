"""The K-adapter inner loop against single-adapter runs and an independent optax reference."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seal_jax.engine.inner import (
    AdapterHparams,
    EncodedExample,
    InnerConfig,
    adapt_k,
    build_step_batches,
    learning_rate_at,
    length_levels,
    mean_token_loss,
    remat_policy,
    schedule_steps,
)
from seal_jax.models.bundle import load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import forward, init_lora_k
from tests.helpers.model_files import find_equations

LORA = LoraConfig(rank=4, alpha=8, targets=("q", "v", "down"))
CFG = InnerConfig(lora=LORA, length_bucket=16, loss_chunk=8, step_bucket=4)


def examples(seed: int, lengths: list[int]) -> list[EncodedExample]:
    rng = np.random.default_rng(seed)
    return [EncodedExample(rng.integers(0, 256, n).astype(np.int32), np.ones(n, np.float32)) for n in lengths]


def run(model, adapters, epochs, lrs, seeds, cfg=CFG, mask_override=None):
    layout = build_step_batches(adapters, epochs, seeds, cfg, pad_id=0)
    batches = layout.batches
    if mask_override is not None:
        batches = dataclasses.replace(batches, loss_mask=mask_override(batches.loss_mask, batches.active))
    k = len(adapters)
    hp = AdapterHparams(jnp.asarray(lrs, jnp.float32), jnp.asarray(layout.steps), jnp.zeros(k, jnp.int32))
    lora0 = init_lora_k(model.config, cfg.lora, jnp.stack([jax.random.key(s) for s in seeds]))
    lora, stats = adapt_k(
        lora0,
        model.base,
        jax.tree.map(jnp.asarray, batches),
        jax.tree.map(jnp.asarray, layout.schedule),
        hp,
        graphdef=model.graphdef(cfg.lora),
        cfg=cfg,
    )
    return lora, stats, layout


# Lengths span three levels (16, 32, 64), so the adapters idle at some shared steps.
ADAPTERS = [examples(0, [10, 12]), examples(1, [7]), examples(2, [9, 5, 40])]
# Every compiled `adapt_k` costs far more than running its steps, and one program serves every call with the same
# static config and shapes: so the tests that run all of ADAPTERS take these epochs (distinct, so each adapter's
# own step count comes from its own epochs: 4, 3, 3 steps), and every K=1 run of at most 4 steps at the 16-token
# level (padded to 4 steps by CFG's step_bucket) shares one program too.
EPOCHS = [2, 3, 1]


def leaves(tree, k=None):
    return [np.asarray(x if k is None else x[k]) for x in jax.tree.leaves(tree)]


def test_k_adapters_equal_separate_runs(tiny):
    lora, stats, layout = run(tiny, ADAPTERS, EPOCHS, [1e-2, 3e-2, 5e-3], [0, 1, 2])
    assert list(layout.steps) == [4, 3, 3]  # each adapter's own epochs
    assert (
        ~layout.batches.active[:, : int(layout.steps.max())]
    ).any()  # someone idled: the schedule interleaves
    for k in range(3):
        alone, alone_stats, alone_layout = run(
            tiny, ADAPTERS[k : k + 1], [EPOCHS[k]], [[1e-2, 3e-2, 5e-3][k]], [k]
        )
        for a, b in zip(leaves(lora, k), leaves(alone, 0), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(
            layout.real_losses(stats.losses, k), alone_layout.real_losses(alone_stats.losses, 0), atol=1e-5
        )


# The base is an argument rather than weights closed over (constants baked into a new program for each call):
# one compiled gradient per token length, shared by every adapter and schedule.
@functools.partial(jax.jit, static_argnames="graphdef")
def reference_grads(lora, base, tok, msk, *, graphdef):
    """The gradient of the full-logits mean token loss (no chunks, no remat): independent of adapt()."""

    def loss_fn(lora):
        pos = jnp.broadcast_to(jnp.arange(tok.shape[1]), tok.shape)
        hidden, _, head = forward(graphdef, base, lora, tok, pos)
        logp = jax.nn.log_softmax(hidden[:, :-1] @ head, axis=-1)
        nll = -jnp.take_along_axis(logp, tok[:, 1:, None], axis=-1)[..., 0]
        return (nll * msk[:, 1:]).sum() / msk[:, 1:].sum()

    return jax.grad(loss_fn)(lora)


def reference_adapt(model, lora0, tokens, loss_mask, lr, num_steps, schedule):
    """Plain optax AdamW + clip, full-logits loss, a Python loop of steps: independent of adapt()."""
    sched = {
        "linear": optax.linear_schedule(lr, 0.0, num_steps),
        "cosine": optax.cosine_decay_schedule(lr, num_steps),
    }[schedule]
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    )
    lora, opt = lora0, tx.init(lora0)
    for s in range(num_steps):
        grads = reference_grads(
            lora, model.base, jnp.asarray(tokens[s]), jnp.asarray(loss_mask[s]), graphdef=model.graphdef(LORA)
        )
        updates, opt = tx.update(grads, opt, lora)
        lora = optax.apply_updates(lora, updates)
    return lora


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_distinct_lr_and_steps_match_independent_reference(tiny, schedule):
    cfg = dataclasses.replace(CFG, schedule=schedule)  # "linear": CFG itself, the program of ADAPTERS' runs
    lrs = [2e-2, 5e-3, 1e-2]
    lora, _, layout = run(tiny, ADAPTERS, EPOCHS, lrs, [0, 1, 2], cfg)
    lora0 = init_lora_k(tiny.config, LORA, jnp.stack([jax.random.key(s) for s in (0, 1, 2)]))
    batches = layout.batches
    for k in range(3):
        own = np.flatnonzero(batches.active[k])
        # Every step at the batches' full width, not at the length adapt() chose for it: the pads after the real
        # tokens carry no loss and (causal attention) change no earlier position, so one compiled gradient
        # serves every step, and a level that cut real tokens off would show here.
        ref = reference_adapt(
            tiny,
            jax.tree.map(lambda x, k=k: x[k], lora0),
            [batches.tokens[k, g] for g in own],
            [batches.loss_mask[k, g] for g in own],
            lrs[k],
            int(layout.steps[k]),
            schedule,
        )
        # Adam divides by sqrt(v): on near-zero gradient entries it magnifies float-order differences (full
        # log_softmax here vs chunked CE); measured on this data: at most 5.3e-6 (99th percentile 7.2e-8) while
        # each adapter moved 0.01 to 0.05 from its start.
        for a, b in zip(leaves(lora, k), leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, atol=5e-5)
    assert not np.allclose(leaves(lora, 0)[1], leaves(lora, 1)[1])


def test_cosine_warmup_schedule_values():
    hp = AdapterHparams(jnp.float32(1.0), jnp.int32(10), jnp.int32(2))
    lrs = [float(learning_rate_at(jnp.int32(s), hp, "cosine")) for s in range(10)]
    np.testing.assert_allclose(lrs[:3], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(lrs[6], 0.5 * (1 + np.cos(np.pi * 4 / 8)), atol=1e-6)


def test_masked_padding_steps_change_nothing(tiny):
    exact, _exact_stats, layout = run(
        tiny, ADAPTERS[:1], [1], [1e-2], [0], dataclasses.replace(CFG, step_bucket=1)
    )
    steps = layout.steps
    # CFG's step_bucket (4) pads the 2 real steps with 2 empty ones, after Adam has momentum that an update on
    # an empty step would apply (the program of test_k_adapters_equal_separate_runs' K=1 runs).
    padded, padded_stats, padded_layout = run(tiny, ADAPTERS[:1], [1], [1e-2], [0])
    assert padded_layout.batches.tokens.shape[1] == 4 > int(steps[0]) == 2
    assert (padded_layout.schedule.level[int(steps[0]) :] == -1).all()  # empty steps take the idle branch
    for a, b in zip(leaves(exact), leaves(padded), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (np.asarray(padded_stats.losses[0, int(steps[0]) :]) == 0).all()


def test_loss_decreases_on_memorization(tiny):
    _, stats, layout = run(
        tiny,
        [examples(7, [24])],
        [40],
        [3e-2],
        [0],
        dataclasses.replace(CFG, lora=LoraConfig(8, 16, ("q", "v", "up", "down"))),
    )
    losses = np.asarray(layout.real_losses(stats.losses, 0))
    # A random tiny model's tied head bounds its logits (|h| |e| ~ 1.3), so the floor is far above 0.
    assert losses[-5:].mean() < losses[:5].mean() - 0.7, losses
    assert (np.diff(losses[10:]) < 1e-3).all(), losses


def test_nan_in_one_adapter_leaves_others_bit_identical(tiny):
    clean, _clean_stats, _ = run(tiny, ADAPTERS, EPOCHS, [1e-2] * 3, [0, 1, 2])

    def poison(mask, active):
        mask = mask.copy()
        mask[1, np.flatnonzero(active[1])[0], 0, 1] = np.nan  # adapter 1's first own step
        return mask

    dirty, dirty_stats, _ = run(tiny, ADAPTERS, EPOCHS, [1e-2] * 3, [0, 1, 2], mask_override=poison)
    assert list(np.asarray(dirty_stats.nonfinite)) == [False, True, False]
    for k in (0, 2):
        for a, b in zip(leaves(clean, k), leaves(dirty, k), strict=True):
            np.testing.assert_array_equal(a, b)
    lora0 = init_lora_k(tiny.config, LORA, jnp.stack([jax.random.key(s) for s in (0, 1, 2)]))
    for a, b in zip(leaves(dirty, 1), leaves(lora0, 1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_non_finite_or_overflowing_learning_rate_is_flagged_even_at_the_last_step(tiny):
    """One step each: no later loss could reveal the damage, so the flag must come from the step itself (NaN,
    inf) or from the final parameters (a finite rate that overflows them)."""
    one_step = [examples(0, [10]), examples(1, [7]), examples(2, [9]), examples(3, [12])]
    lrs = [1e-2, float("nan"), float("inf"), 1e36]
    lora, stats, _ = run(tiny, one_step, [1] * 4, lrs, [0, 1, 2, 3])
    assert list(np.asarray(stats.nonfinite)) == [False, True, True, True]
    clean, _, _ = run(tiny, one_step[:1], [1], lrs[:1], [0])
    for a, b in zip(leaves(lora, 0), leaves(clean, 0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batches_bucket_lengths_and_mask_padding():
    cfg = dataclasses.replace(CFG, batch_size=2)
    layout = build_step_batches([examples(0, [5, 20, 3])], [2], [0], cfg, pad_id=0)
    batches = layout.batches
    assert batches.tokens.shape == (1, 4, 2, 32) and list(layout.steps) == [4]
    assert layout.schedule.lengths == (
        16,
        32,
    )  # batches with the 20-token example run at 32, the others at 16
    assert sorted(layout.schedule.level.tolist()) == [0, 0, 1, 1]
    assert batches.loss_mask.sum() == 2 * (5 + 20 + 3)
    parity = dataclasses.replace(cfg, pad_to=64, pad_in_loss=True)
    layout = build_step_batches([examples(0, [5, 20, 3])], [1], [0], parity, pad_id=0)
    assert layout.batches.tokens.shape[-1] == 64 and layout.schedule.lengths == (64,)
    assert layout.batches.loss_mask[0, :2].sum() == 3 * 64  # 3 real rows, pads in loss


def test_pads_in_loss_without_pad_to_pad_each_adapter_to_its_longest_sequence():
    """The reference's ARC TTT (`padding="longest"` over an adapter's data, labels on the pads): every row of
    an adapter carries loss up to that adapter's longest sequence, whatever its step's length level."""
    cfg = dataclasses.replace(CFG, pad_in_loss=True)
    layout = build_step_batches([examples(0, [5, 20, 3]), examples(1, [7, 9])], [2, 1], [0, 1], cfg, pad_id=0)
    mask = np.asarray(layout.batches.loss_mask)
    assert mask[0].sum() == 2 * 3 * 20 and mask[1].sum() == 2 * 9
    assert all((row.sum() == 20) for row in mask[0][np.asarray(layout.batches.active)[0]][:, 0])


def test_batch_rows_shrink_to_the_largest_adapter():
    few = [examples(0, [10, 12, 9]), examples(1, [7, 5])]
    wide = build_step_batches(few, [2, 3], [0, 1], dataclasses.replace(CFG, batch_size=10), pad_id=0)
    exact = build_step_batches(few, [2, 3], [0, 1], dataclasses.replace(CFG, batch_size=3), pad_id=0)
    assert wide.batches.tokens.shape[2] == 3 and list(wide.steps) == [2, 3]  # one partial batch per epoch
    for a, b in zip(jax.tree.leaves(wide.batches), jax.tree.leaves(exact.batches), strict=True):
        np.testing.assert_array_equal(a, b)  # exactly HF's batches of 3 (and 2) rows: no empty rows computed


def test_length_levels_minimize_padding():
    assert length_levels([], 3, CFG) == (16,)
    assert length_levels([5, 16], 3, CFG) == (16,)
    assert length_levels([10, 12, 40], 1, CFG) == (48,)
    assert length_levels([10, 12, 40], 2, CFG) == (16, 48)
    # 3 levels over {16 ×4, 32 ×1, 48 ×4, 200 ×1}: dropping 32 costs 16 tokens, dropping 48 would cost more
    assert length_levels([10] * 4 + [30] + [40] * 4 + [200], 3, CFG) == (16, 48, 208)
    assert length_levels([10, 300], 3, dataclasses.replace(CFG, pad_to=512)) == (512,)


def test_schedule_keeps_each_adapters_order_and_fits_every_step():
    rng = np.random.default_rng(3)
    levels = (16, 32, 64, 128)
    own = [rng.choice([10, 14, 30, 60, 120], size=int(rng.integers(1, 30))).tolist() for _ in range(9)]
    chosen, slot = schedule_steps(own, levels)
    for k, lengths in enumerate(own):
        taken = slot[k][slot[k] >= 0]
        assert taken.tolist() == list(range(len(lengths)))  # every own step once, in order
        for g in np.flatnonzero(slot[k] >= 0):
            assert lengths[slot[k, g]] <= levels[chosen[g]]
    assert (slot >= 0).any(axis=0).all()  # no shared step is empty


def test_short_adapters_are_not_padded_to_a_long_one():
    """One adapter with a long example among short ones: short steps run at the short level."""
    own = [[10] * 8, [10] * 8, [10, 10, 10, 120, 10, 10, 10, 10]]
    chosen, slot = schedule_steps(own, (16, 32, 64, 128))
    padded = sum((16, 32, 64, 128)[lv] for lv in chosen)
    assert padded <= 8 * 16 + 128 + 16, chosen  # lock-step at the longest would be 8 * 128
    assert slot.shape[1] <= 10


def test_coupled_epoch_order_is_a_uniform_permutation():
    """Random insertion with a shared stream: each adapter's epoch order is still uniform over all n! orders."""
    from collections import Counter
    from math import factorial

    from seal_jax.engine.inner import _epoch_order

    lengths, trials = [64, 64, 128, 256], 12_000
    rng = np.random.default_rng(0)
    counts = Counter(tuple(_epoch_order(rng, lengths, epoch, (7, 0), 1)) for epoch in range(trials))
    assert len(counts) == factorial(4)
    expected = trials / factorial(4)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 49.7, chi2  # 23 degrees of freedom, p = 0.001


def test_coupled_orders_put_equal_length_ranks_at_equal_steps():
    """Adapters with equally many examples take their r-th longest example at the same step of every epoch
    (so a shared step's adapters have similar lengths); independent orders do not."""
    from seal_jax.engine.inner import _epoch_order

    lengths = [[5, 60, 7, 6, 20], [30, 2, 9, 40, 3], [8, 11, 50, 1, 4]]

    def rank_sequences(shared: tuple[int, ...] | None, epoch: int) -> list[list[int]]:
        orders = [
            _epoch_order(np.random.default_rng(k), ls, epoch, shared, 1) for k, ls in enumerate(lengths)
        ]
        return [
            [sorted(ls, reverse=True).index(ls[j]) for j in o] for ls, o in zip(lengths, orders, strict=True)
        ]

    for epoch in range(4):
        coupled = rank_sequences((7, 0), epoch)
        assert coupled[1] == coupled[0] and coupled[2] == coupled[0], coupled
    assert any(len({tuple(r) for r in rank_sequences(None, epoch)}) > 1 for epoch in range(4))


def test_coupled_orders_line_up_long_examples():
    """Adapters with equal example counts put their long example at the same shared step in every epoch."""
    cfg = dataclasses.replace(CFG, step_bucket=1)
    adapters = [examples(seed, [5, 6, 7, 60]) for seed in range(4)]
    coupled = build_step_batches(adapters, [3] * 4, [0, 1, 2, 3], cfg, pad_id=0)
    top = len(coupled.schedule.lengths) - 1
    assert coupled.schedule.lengths[top] == 64
    assert int((coupled.schedule.level == top).sum()) == 3  # one 64-token step per epoch, shared by all
    independent = build_step_batches(
        adapters, [3] * 4, [0, 1, 2, 3], dataclasses.replace(cfg, coupled_order=False), pad_id=0
    )
    top = len(independent.schedule.lengths) - 1
    assert int((independent.schedule.level == top).sum()) > 3


def test_remat_policy_follows_the_saved_matmul_budget(tiny):
    layers = tiny.base["layers"]
    per_token = sum(
        layers[n].shape[0] * layers[n].shape[-1] * 4 for n in ("wq", "wk", "wv", "wo", "w_gate", "w_up")
    )
    cfg = dataclasses.replace(CFG, saved_matmuls_gb=100 * per_token / 2**30)  # room for exactly 100 tokens
    assert remat_policy(tiny.base, 100, cfg) == "save_matmuls"
    assert remat_policy(tiny.base, 101, cfg) == "full"
    assert remat_policy(tiny.base, 1, dataclasses.replace(cfg, saved_matmuls_gb=0.0)) == "full"
    assert remat_policy(tiny.base, 1, dataclasses.replace(cfg, remat=False)) is None
    bf16 = jax.tree.map(lambda w: w.astype(jnp.bfloat16), tiny.base)  # the saved outputs stay f32
    assert remat_policy(bf16, 101, cfg) == "full"
    with pytest.raises(ValueError, match="saved_matmuls_gb"):
        InnerConfig(saved_matmuls_gb=-1.0)


def test_save_matmuls_recomputes_only_the_attention_dots(tiny):
    tokens = jnp.zeros((1, 16), jnp.int32)
    lora0 = jax.tree.map(lambda x: x[0], init_lora_k(tiny.config, LORA, jax.random.key(0)[None]))
    graphdef = tiny.graphdef(LORA)

    def dots(remat):
        loss = lambda lora: mean_token_loss(lora, tiny.base, graphdef, tokens, tokens * 1.0, remat, 8)
        return len(find_equations(jax.make_jaxpr(jax.grad(loss))(lora0).jaxpr))

    none, save, full = dots(None), dots("save_matmuls"), dots("full")
    assert save == none + 1  # only the attention scores are recomputed; every weight and LoRA matmul is kept
    assert full >= save + 6  # full remat recomputes q, k, v, o, gate, up and the LoRA matmuls too


def test_bf16_weights_become_bits_once_per_call_not_per_step():
    """The layer scan slices its bf16 weights as uint16 bits; `adapt` converts them once, before the step scan.
    Inside it, the conversion sat in each step's `lax.switch` branch, out of XLA's reach, and copied every
    weight at every step (SmolLM2-135M, K=1 × 48 tokens, interleaved medians: 1.45 → 1.38-1.40 s per 8 steps)."""
    model = load_model("tiny-random-llama", jnp.bfloat16)
    layout = build_step_batches(ADAPTERS, [2, 3, 1], [0, 1, 2], CFG, pad_id=0)
    hp = AdapterHparams(jnp.full(3, 1e-2), jnp.asarray(layout.steps), jnp.zeros(3, jnp.int32))
    lora0 = init_lora_k(model.config, LORA, jnp.stack([jax.random.key(s) for s in range(3)]))
    jaxpr = jax.make_jaxpr(functools.partial(adapt_k, graphdef=model.graphdef(LORA), cfg=CFG))(
        lora0, model.base, *jax.tree.map(jnp.asarray, (layout.batches, layout.schedule)), hp
    ).jaxpr
    stacked = {tuple(w.shape) for w in jax.tree.leaves(model.base["layers"])}

    def to_bits(jaxpr):
        return [
            e
            for e in find_equations(jaxpr, "bitcast_convert_type")
            if tuple(e.outvars[0].aval.shape) in stacked
        ]

    # The step scan holds all the others (layers, loss chunks): it has the most matmuls in its body.
    step_scan = max(find_equations(jaxpr, "scan"), key=lambda e: len(find_equations(e.params["jaxpr"].jaxpr)))
    assert step_scan.params["length"] == layout.batches.active.shape[1]
    assert len(to_bits(jaxpr)) >= len(stacked)  # the conversion is there, once per stacked weight...
    assert not to_bits(step_scan.params["jaxpr"].jaxpr)  # ...and none of it inside the step loop


def test_remat_policies_give_the_same_adapters(tiny):
    # No remat, "full" (nothing fits in 0 GB) and CFG's own "save_matmuls" (every step fits in its 1.5 GB; CFG
    # itself rather than another budget: the program the other tests compile for ADAPTERS).
    assert remat_policy(tiny.base, len(ADAPTERS) * 64, CFG) == "save_matmuls"
    results = [
        run(tiny, ADAPTERS, EPOCHS, [1e-2, 3e-2, 5e-3], [0, 1, 2], dataclasses.replace(CFG, **c))[0]
        for c in ({"remat": False}, {"saved_matmuls_gb": 0.0}, {})
    ]
    for other in results[1:]:
        for a, b in zip(leaves(results[0]), leaves(other), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def own_orders(layout, lengths: list[int]) -> list[list[int]]:
    """Each adapter's example order (indices into `lengths`, all distinct) from its real steps at batch 1."""
    tokens, active = np.asarray(layout.batches.tokens), np.asarray(layout.batches.active)
    real = [(tokens[k, active[k], 0] != 0).sum(-1) for k in range(tokens.shape[0])]
    return [[lengths.index(int(n)) for n in seq] for seq in real]


def test_the_seeds_of_one_self_edit_draw_independent_orders():
    """Three seeds of one self-edit (same sequences, unequal lengths) on their own streams: each pair of seeds
    agrees on an epoch's order about 1/n! of the time (independent, uniform), not always (one shared stream)."""
    lengths = [5, 9, 13]
    cfg = dataclasses.replace(CFG, step_bucket=1)
    adapters = [[EncodedExample(np.full(n, 1, np.int32), np.ones(n, np.float32)) for n in lengths]] * 3
    epochs = 400
    layout = build_step_batches(adapters, [epochs] * 3, [0, 1, 2], cfg, pad_id=0, streams=[0, 1, 2])
    orders = [np.reshape(o, (epochs, 3)) for o in own_orders(layout, lengths)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        agree = np.mean((orders[a] == orders[b]).all(-1))
        assert 0.08 < agree < 0.27, (a, b, agree)  # 1/6 expected; a shared stream gives 1.0
    shared = build_step_batches(adapters, [epochs] * 3, [0, 1, 2], cfg, pad_id=0, streams=[4, 4, 4])
    assert len({tuple(o) for o in own_orders(shared, lengths)}) == 1  # what one stream does to them
