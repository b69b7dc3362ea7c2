"""The K-adapter inner loop against single-adapter runs and an independent optax reference."""

from __future__ import annotations

import dataclasses

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
)
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import forward, init_lora_k

LORA = LoraConfig(rank=4, alpha=8, targets=("q", "v", "down"))
CFG = InnerConfig(lora=LORA, length_bucket=16, loss_chunk=8, step_bucket=4)


def examples(seed: int, lengths: list[int]) -> list[EncodedExample]:
    rng = np.random.default_rng(seed)
    return [EncodedExample(rng.integers(0, 256, n).astype(np.int32), np.ones(n, np.float32)) for n in lengths]


def run(model, adapters, epochs, lrs, seeds, cfg=CFG, mask_override=None):
    batches, steps = build_step_batches(adapters, epochs, seeds, cfg, pad_id=0)
    if mask_override is not None:
        batches = dataclasses.replace(batches, loss_mask=mask_override(batches.loss_mask))
    k = len(adapters)
    hp = AdapterHparams(jnp.asarray(lrs, jnp.float32), jnp.asarray(steps), jnp.zeros(k, jnp.int32))
    lora0 = init_lora_k(model.config, cfg.lora, jnp.stack([jax.random.key(s) for s in seeds]))
    lora, stats = adapt_k(
        lora0, model.base, jax.tree.map(jnp.asarray, batches), hp, graphdef=model.graphdef(cfg.lora), cfg=cfg
    )
    return lora, stats, batches, steps


ADAPTERS = [examples(0, [10, 12]), examples(1, [7]), examples(2, [9, 5, 14])]


def leaves(tree, k=None):
    return [np.asarray(x if k is None else x[k]) for x in jax.tree.leaves(tree)]


def test_k_adapters_equal_separate_runs(tiny):
    lora, stats, _, _ = run(tiny, ADAPTERS, [3, 5, 2], [1e-2, 3e-2, 5e-3], [0, 1, 2])
    for k in range(3):
        alone, alone_stats, _, _ = run(
            tiny, ADAPTERS[k : k + 1], [[3, 5, 2][k]], [[1e-2, 3e-2, 5e-3][k]], [k]
        )
        for a, b in zip(leaves(lora, k), leaves(alone, 0), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        n = int(np.count_nonzero(np.asarray(alone_stats.losses[0])))
        np.testing.assert_allclose(stats.losses[k, :n], alone_stats.losses[0, :n], atol=1e-5)


def reference_adapt(model, lora0, tokens, loss_mask, lr, num_steps, schedule):
    """Plain optax AdamW + clip, full-logits loss, a Python loop of steps: independent of adapt()."""
    sched = {
        "linear": optax.linear_schedule(lr, 0.0, num_steps),
        "cosine": optax.cosine_decay_schedule(lr, num_steps),
    }[schedule]
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(sched, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    )
    graphdef = model.graphdef(LORA)

    @jax.jit
    def loss_fn(lora, tok, msk):
        pos = jnp.broadcast_to(jnp.arange(tok.shape[1]), tok.shape)
        hidden, _, head = forward(graphdef, model.base, lora, tok, pos)
        logp = jax.nn.log_softmax(hidden[:, :-1] @ head, axis=-1)
        nll = -jnp.take_along_axis(logp, tok[:, 1:, None], axis=-1)[..., 0]
        return (nll * msk[:, 1:]).sum() / msk[:, 1:].sum()

    lora, opt = lora0, tx.init(lora0)
    for s in range(num_steps):
        grads = jax.grad(loss_fn)(lora, jnp.asarray(tokens[s]), jnp.asarray(loss_mask[s]))
        updates, opt = tx.update(grads, opt, lora)
        lora = optax.apply_updates(lora, updates)
    return lora


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_distinct_lr_and_steps_match_independent_reference(tiny, schedule):
    cfg = dataclasses.replace(CFG, schedule=schedule)
    lrs, epochs = [2e-2, 5e-3], [4, 2]
    lora, _, batches, steps = run(tiny, ADAPTERS[:2], epochs, lrs, [0, 1], cfg)
    lora0 = init_lora_k(tiny.config, LORA, jnp.stack([jax.random.key(s) for s in (0, 1)]))
    for k in range(2):
        ref = reference_adapt(
            tiny,
            jax.tree.map(lambda x, k=k: x[k], lora0),
            batches.tokens[k],
            batches.loss_mask[k],
            lrs[k],
            int(steps[k]),
            schedule,
        )
        for a, b in zip(leaves(lora, k), leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(leaves(lora, 0)[1], leaves(lora, 1)[1])


def test_cosine_warmup_schedule_values():
    hp = AdapterHparams(jnp.float32(1.0), jnp.int32(10), jnp.int32(2))
    lrs = [float(learning_rate_at(jnp.int32(s), hp, "cosine")) for s in range(10)]
    np.testing.assert_allclose(lrs[:3], [0.0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(lrs[6], 0.5 * (1 + np.cos(np.pi * 4 / 8)), atol=1e-6)


def test_masked_padding_steps_change_nothing(tiny):
    exact, _exact_stats, _, steps = run(
        tiny, ADAPTERS[:1], [3], [1e-2], [0], dataclasses.replace(CFG, step_bucket=1)
    )
    padded, padded_stats, batches, _ = run(
        tiny, ADAPTERS[:1], [3], [1e-2], [0], dataclasses.replace(CFG, step_bucket=16)
    )
    assert batches.tokens.shape[1] == 16 > int(steps[0])
    for a, b in zip(leaves(exact), leaves(padded), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (np.asarray(padded_stats.losses[0, int(steps[0]) :]) == 0).all()


def test_loss_decreases_on_memorization(tiny):
    _, stats, _, steps = run(
        tiny,
        [examples(7, [24])],
        [40],
        [3e-2],
        [0],
        dataclasses.replace(CFG, lora=LoraConfig(8, 16, ("q", "v", "up", "down"))),
    )
    losses = np.asarray(stats.losses[0, : int(steps[0])])
    # A random tiny model's tied head bounds its logits (|h| |e| ~ 1.3), so the floor is far above 0.
    assert losses[-5:].mean() < losses[:5].mean() - 0.7, losses
    assert (np.diff(losses[10:]) < 1e-3).all(), losses


def test_nan_in_one_adapter_leaves_others_bit_identical(tiny):
    clean, _clean_stats, _, _ = run(tiny, ADAPTERS, [2, 2, 2], [1e-2] * 3, [0, 1, 2])

    def poison(mask):
        mask = mask.copy()
        mask[1, 0, 0, 1] = np.nan
        return mask

    dirty, dirty_stats, _, _ = run(tiny, ADAPTERS, [2, 2, 2], [1e-2] * 3, [0, 1, 2], mask_override=poison)
    assert list(np.asarray(dirty_stats.nonfinite)) == [False, True, False]
    for k in (0, 2):
        for a, b in zip(leaves(clean, k), leaves(dirty, k), strict=True):
            np.testing.assert_array_equal(a, b)
    lora0 = init_lora_k(tiny.config, LORA, jnp.stack([jax.random.key(s) for s in (0, 1, 2)]))
    for a, b in zip(leaves(dirty, 1), leaves(lora0, 1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_batches_bucket_lengths_and_mask_padding():
    cfg = dataclasses.replace(CFG, batch_size=2)
    batches, steps = build_step_batches([examples(0, [5, 20, 3])], [2], [0], cfg, pad_id=0)
    assert batches.tokens.shape == (1, 4, 2, 32) and list(steps) == [4]
    assert batches.loss_mask.sum() == 2 * (5 + 20 + 3)
    parity = dataclasses.replace(cfg, pad_to=64, pad_in_loss=True)
    batches, _ = build_step_batches([examples(0, [5, 20, 3])], [1], [0], parity, pad_id=0)
    assert batches.tokens.shape[-1] == 64
    assert (
        batches.loss_mask[0, 0].sum() + batches.loss_mask[0, 1].sum() == 3 * 64
    )  # 3 real rows, pads in loss
