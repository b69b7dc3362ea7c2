"""The inner loop: K self-edits adapted in parallel, each as its own LoRA over one shared frozen base.

Host side (numpy): training examples -> token ids + loss masks -> a `StepLayout`: `[K, S, B, T]` step batches plus
a shared schedule giving each step one of a few lengths chosen for the chunk, so an adapter's short sequence is
never padded to another adapter's long one (adapters idle at steps whose length their next batch does not fit).
Device side: `adapt` is a `lax.scan` of AdamW steps for one adapter; `adapt_k = jit(vmap(adapt))` runs K of them
with per-adapter learning rate, step count and warmup.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seal_jax.domains.base import TrainExample
from seal_jax.engine.loss import chunked_nll_sum, shift_targets
from seal_jax.errors import require_positive
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import forward, merge_model, with_layer_bits

Array = jax.Array
SCHEDULES = ("linear", "cosine")  # HF's schedules: linear decay / cosine, each after a linear warmup


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    """Static settings of the LoRA inner loop (hashable: a jit static argument).

    Defaults are the reference's knowledge-domain loop (docs/reference.md#knowledge-inner-loop): r32 α64 on q,v; batch
    1; AdamW (0.9, 0.999, 1e-8), no weight decay, linear decay without warmup, grad-norm clip 1.0.
    `pad_in_loss` puts the loss on pad tokens too, as the reference did: with `pad_to` every sequence is padded
    to that length (its knowledge loop: 2048); without, to its adapter's longest sequence (its ARC loop, which
    tokenized an adapter's data together with `padding="longest"`).
    Each compiled chunk runs its steps at up to `max_levels` lengths (multiples of `length_bucket`) chosen for
    its data (`length_levels`); each length is a `lax.switch` branch. `coupled_order` places each adapter's r-th
    longest example with a random stream shared by the adapters of the same order stream (seeded by
    `order_seed` and the stream: the evaluator's stream is a job's seed index, so one self-edit's seeds draw
    independent orders): every adapter's order stays a uniform random permutation, but adapters of one stream
    put examples of equal length rank at the same steps (`_epoch_order`).
    With `remat`, each layer is recomputed in the backward; a step whose weight-matmul outputs (all K adapters)
    fit in `saved_matmuls_gb` keeps them instead and recomputes only the cheap rest (`remat_policy`).
    """

    lora: LoraConfig = LoraConfig()
    batch_size: int = 1
    schedule: Literal["linear", "cosine"] = "linear"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 2048
    length_bucket: int = 8
    max_levels: int = 4
    step_bucket: int = 8
    loss_chunk: int = 64
    remat: bool = True  # K=15 x T=256 on CPU: peak RSS 9.2 GB -> 3.4 GB at equal or better step time
    saved_matmuls_gb: float = 1.5
    pad_to: int = 0  # > 0: every step at this length (the reference: 2048); 0: per-chunk length levels
    pad_in_loss: bool = False
    coupled_order: bool = True
    order_seed: int = 0

    def __post_init__(self) -> None:
        require_positive(
            "inner loop",
            batch_size=self.batch_size,
            max_length=self.max_length,
            length_bucket=self.length_bucket,
            max_levels=self.max_levels,
            step_bucket=self.step_bucket,
            loss_chunk=self.loss_chunk,
            max_grad_norm=self.max_grad_norm,
        )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.pad_to < 0:
            raise ValueError(f"inner loop: pad_to={self.pad_to} must be >= 0 (0: bucketed lengths)")
        if self.saved_matmuls_gb < 0:
            raise ValueError(f"saved_matmuls_gb={self.saved_matmuls_gb} must be >= 0 (0: always recompute)")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepBatches:
    """tokens: int32 [K, S, B, T]; loss_mask: f32 [K, S, B, T] (1 = this token is a target); active: [K, S]."""

    tokens: Array
    loss_mask: Array
    active: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdapterHparams:
    """Per-adapter arrays [K]: peak learning rate, real optimizer steps (schedule length), warmup steps."""

    learning_rate: Array
    num_steps: Array
    warmup_steps: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AdaptStats:
    """losses: [K, S] mean token loss per step (0 on masked steps); nonfinite: [K] the adapter hit NaN/inf
    (and was frozen at its last finite state) or ended with non-finite parameters: its results are void."""

    losses: Array
    nonfinite: Array


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """ids: int32 [n]; mask: f32 [n] (1 where the token is a training target)."""

    ids: np.ndarray
    mask: np.ndarray


def encode_example(
    tokenizer: Any, example: TrainExample, loss_on_all_tokens: bool, max_length: int
) -> EncodedExample:
    """Tokenizes `prompt + completion` (+ EOS) with the loss on the completion (or on everything).

    The split is by text, so no special-token ids are hard-coded. A BOS token is prepended only if the tokenizer
    adds one and the text does not already start with it (the reference trained ARC with a double BOS).
    """
    prompt = tokenizer.encode(example.prompt, add_special_tokens=False) if example.prompt else []
    completion = tokenizer.encode(example.completion, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    if eos is not None and (not completion or completion[-1] != eos):
        completion = [*completion, eos]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer.encode("a", add_special_tokens=True)[:1] == [bos]
    if adds_bos and (prompt or completion)[0] != bos:
        prompt = [bos, *prompt]
    ids = np.asarray(prompt + completion, np.int32)[:max_length]
    mask = np.concatenate([np.full(len(prompt), float(loss_on_all_tokens)), np.ones(len(completion))])
    return EncodedExample(ids, mask[:max_length].astype(np.float32))


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def steps_for(num_examples: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of one adapter: epochs × ceil(examples / batch) (HF Trainer, drop_last False)."""
    return epochs * math.ceil(num_examples / batch_size)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StepSchedule:
    """Shared by the K adapters. level: int32 [S], the token length of each step as an index into `lengths`
    (-1: no adapter trains at this step, which then costs nothing); lengths: ascending, static under jit."""

    level: Array
    lengths: tuple[int, ...] = dataclasses.field(metadata={"static": True})


@dataclasses.dataclass(frozen=True)
class StepLayout:
    """batches: the K adapters' data [K, S, B, T]; schedule: each step's length [S]; steps: real steps [K]."""

    batches: StepBatches
    schedule: StepSchedule
    steps: np.ndarray

    def real_losses(self, losses: np.ndarray, k: int) -> list[float]:
        """Adapter k's loss per real step, in order, from `AdaptStats.losses` [K, S]."""
        return np.asarray(losses)[k][np.asarray(self.batches.active)[k]].tolist()


def length_levels(step_lengths: Sequence[int], num_levels: int, cfg: InnerConfig) -> tuple[int, ...]:
    """At most `num_levels` step lengths (multiples of `length_bucket`, the longest step's rounded length on
    top) that minimize the padded tokens of these steps (exact dynamic program over the distinct lengths)."""
    if cfg.pad_to:
        return (cfg.pad_to,)
    values, counts = np.unique([round_up(n, cfg.length_bucket) for n in step_lengths], return_counts=True)
    if not len(values):
        return (cfg.length_bucket,)
    n, inf = len(values), float("inf")
    prefix = np.concatenate([[0], np.cumsum(counts)])
    # cost[m][j]: least padded tokens of the steps up to values[j] with m levels, the highest at values[j].
    cost = np.full((num_levels + 1, n), inf)
    back = np.zeros((num_levels + 1, n), np.int64)
    cost[1] = values * prefix[1:]
    for m in range(2, num_levels + 1):
        for j in range(n):
            for i in range(j):
                c = cost[m - 1][i] + values[j] * (prefix[j + 1] - prefix[i + 1])
                if c < cost[m][j]:
                    cost[m][j], back[m][j] = c, i
    m = int(np.argmin(cost[1:, n - 1])) + 1
    levels, j = [], n - 1
    while m >= 1:
        levels.append(int(values[j]))
        j, m = int(back[m][j]), m - 1
    return tuple(sorted(set(levels)))


def schedule_steps(
    step_lengths: Sequence[Sequence[int]], levels: Sequence[int]
) -> tuple[list[int], np.ndarray]:
    """Interleaves K adapters' own step sequences into shared steps of a few lengths.

    Each adapter keeps its own order; at every shared step it either takes its next step (if that fits the step's
    length) or idles. The step's length is the next-step level of the critical adapter (the most padded work
    left), so the longest chain never waits and the others move whenever their next batch fits (the benchmark's
    15 self-edits: 1.18× the real tokens with coupled orders, 4.3× for lock-step at the longest length).
    Returns the level index per shared step and `slot` [K, G]: the adapter's own step index at each shared step,
    -1 when idle.
    """
    level_of = [[int(np.searchsorted(levels, n)) for n in seq] for seq in step_lengths]
    remaining = [sum(levels[lv] for lv in seq) for seq in level_of]
    pos = [0] * len(step_lengths)
    chosen: list[int] = []
    slots: list[list[int]] = []
    while any(remaining):
        critical = max(range(len(pos)), key=lambda k: remaining[k])
        lv = level_of[critical][pos[critical]]
        slot = [-1] * len(pos)
        for k, p in enumerate(pos):
            if p < len(level_of[k]) and level_of[k][p] <= lv:
                slot[k] = p
                remaining[k] -= levels[level_of[k][p]]
                pos[k] += 1
        chosen.append(lv)
        slots.append(slot)
    return chosen, np.array(slots, np.int32).reshape(-1, len(pos)).T


def build_step_batches(
    adapters: Sequence[Sequence[EncodedExample]],
    epochs: Sequence[int],
    seeds: Sequence[int],
    cfg: InnerConfig,
    pad_id: int,
    streams: Sequence[int] | None = None,
) -> StepLayout:
    """Lays out K adapters' examples as shared steps; examples are reshuffled every epoch (seeded per adapter;
    with `coupled_order`, adapters of one of `streams` [K] (default: all 0) share the placement stream).

    Each adapter sees exactly the batches, in exactly the order, it would see alone; `schedule_steps` only
    decides at which shared step it takes each one, so a short sequence never pays for another adapter's long
    one. S (shared steps) is rounded up to `step_bucket` with empty steps; T is the longest length level. B is
    `batch_size`, or fewer when no adapter has that many examples (HF's last partial batch: 3 SFT pairs at batch
    10 run 3 rows, not 10 of which 7 are empty).
    """
    b = max(1, min(cfg.batch_size, max((len(x) for x in adapters), default=1)))
    own: list[list[list[EncodedExample | None]]] = []  # [K][own step][row]
    streams = [0] * len(adapters) if streams is None else streams
    for examples, n_epochs, seed, stream in zip(adapters, epochs, seeds, streams, strict=True):
        rng = np.random.default_rng(seed)
        lengths = [len(x.ids) for x in examples]
        shared = (cfg.order_seed, stream) if cfg.coupled_order else None
        order = [
            j
            for epoch in range(n_epochs if examples else 0)
            for j in _epoch_order(rng, lengths, epoch, shared, b)
        ]
        rows = [None if j is None else examples[j] for j in order]
        own.append([rows[i : i + b] for i in range(0, len(rows), b)])
    padded_to = [max((len(x.ids) for x in examples), default=0) for examples in adapters]
    step_lengths = [
        [padded_to[k] if cfg.pad_in_loss else max(len(x.ids) for x in step if x is not None) for step in seq]
        for k, seq in enumerate(own)
    ]
    levels, chosen, slot = _cheapest_schedule(step_lengths, cfg)
    s = round_up(len(chosen), cfg.step_bucket)
    k, t = len(adapters), levels[-1]
    tokens = np.full((k, s, b, t), pad_id, np.int32)
    mask = np.zeros((k, s, b, t), np.float32)
    for i, g in zip(*np.nonzero(slot >= 0), strict=True):
        for row, ex in enumerate(own[i][slot[i, g]]):
            if ex is None:
                continue
            tokens[i, g, row, : len(ex.ids)] = ex.ids
            mask[i, g, row, : len(ex.ids)] = ex.mask
            if cfg.pad_in_loss:  # to `pad_to` (the step's length) or to the adapter's longest sequence
                mask[i, g, row, len(ex.ids) : cfg.pad_to or padded_to[i]] = 1.0
    active = np.zeros((k, s), bool)
    active[:, : slot.shape[1]] = slot >= 0
    level = np.full(s, -1, np.int32)
    level[: len(chosen)] = chosen
    return StepLayout(
        StepBatches(tokens, mask, active),
        StepSchedule(level, levels),
        np.array([len(seq) for seq in own], np.int32),
    )


def prepare_call(
    encoded: Sequence[Sequence[EncodedExample]],
    epochs: Sequence[int],
    seeds: Sequence[int],
    learning_rates: Sequence[float],
    warmup_steps: Sequence[int],
    cfg: InnerConfig,
    pad_id: int,
    streams: Sequence[int] | None = None,
) -> tuple[StepLayout, AdapterHparams]:
    """One compiled call's host inputs for K adapters: the step layout and the per-adapter hparams [K]."""
    layout = build_step_batches(encoded, epochs, seeds, cfg, pad_id=pad_id, streams=streams)
    hparams = AdapterHparams(
        np.asarray(learning_rates, np.float32), np.asarray(layout.steps), np.asarray(warmup_steps, np.int32)
    )
    return layout, hparams


def _cheapest_schedule(
    step_lengths: Sequence[Sequence[int]], cfg: InnerConfig
) -> tuple[tuple[int, ...], list[int], np.ndarray]:
    """The level set (at most `max_levels` lengths) whose schedule computes the fewest tokens (K × length per
    step); fewer levels win ties (fewer compiled branches). Candidates: subsets of a small pool made of the
    padding-optimal levels for 1 to 2 × `max_levels` levels."""
    flat = [n for seq in step_lengths for n in seq]
    optimal = [length_levels(flat, m, cfg) for m in range(1, 2 * cfg.max_levels + 1)]
    top = optimal[0][-1]
    pool = sorted({n for levels in optimal for n in levels} - {top})
    best: tuple | None = None
    for m in range(cfg.max_levels):
        for lower in itertools.combinations(pool, m):
            levels = (*lower, top)
            chosen, slot = schedule_steps(step_lengths, levels)
            tokens = sum(levels[lv] for lv in chosen)
            if best is None or tokens < best[0]:
                best = (tokens, levels, chosen, slot)
    assert best is not None
    return best[1], best[2], best[3]


def _epoch_order(
    rng: np.random.Generator, lengths: Sequence[int], epoch: int, shared: tuple[int, ...] | None, batch: int
) -> list[int | None]:
    """One epoch's example order, a uniform random permutation (padded with None to whole batches; padding rows
    carry no loss).

    Built by random insertion: the examples are ranked by length (ties in random order) and inserted shortest
    first, longest last, each at a uniformly random place of the order so far, which keeps the permutation
    uniform. With `shared` (seed parts), the places come from a stream shared by the adapters given the same
    parts (seeded by them and the epoch; the r-th longest example of every such adapter draws the same number)
    as fractions of the current length: every adapter's order is still uniform, but those adapters put their
    r-th longest examples at the same relative places (at the same steps when they have equally many), so a
    shared step's adapters have similar lengths and `schedule_steps` pads little. Adapters of different streams
    draw independent orders.
    """
    n = len(lengths)
    if shared is None:
        order = [int(j) for j in rng.permutation(n)]
    else:
        by_rank = np.lexsort((rng.permutation(n), -np.asarray(lengths)))  # longest first, ties at random
        fractions = np.random.default_rng([*shared, epoch]).random(n)  # fractions[r]: the r-th longest
        order = []
        for r in range(n - 1, -1, -1):
            order.insert(int(fractions[r] * (len(order) + 1)), int(by_rank[r]))
    return order + [None] * (-len(order) % batch)


def learning_rate_at(step: Array, hp: AdapterHparams, schedule: str) -> Array:
    """HF's linear / cosine-with-warmup schedules for one adapter at optimizer step `step` (0-based)."""
    step = step.astype(jnp.float32)
    total = hp.num_steps.astype(jnp.float32)
    warm = hp.warmup_steps.astype(jnp.float32)
    warmup_factor = step / jnp.maximum(warm, 1.0)
    progress = (step - warm) / jnp.maximum(total - warm, 1.0)
    if schedule == "linear":
        decay = jnp.maximum(0.0, 1.0 - progress)
    else:
        decay = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
    return hp.learning_rate * jnp.where(step < warm, warmup_factor, decay)


def _optimizer(cfg: InnerConfig) -> optax.GradientTransformation:
    """AdamW without the learning rate (applied per adapter by `learning_rate_at`)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm),
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay),
    )


# Weight matmuls whose outputs the backward reuses (it never needs the down projection's output).
_REUSED_PROJECTIONS = ("wq", "wk", "wv", "wo", "w_gate", "w_up")
_SAVED_OUTPUT_BYTES = np.dtype(np.float32).itemsize  # `weight_dot` returns f32 whatever the weights' dtype


def remat_policy(base: nnx.State, step_tokens: int, cfg: InnerConfig) -> str | None:
    """The `REMAT_POLICIES` entry for a training step over `step_tokens` tokens (all adapters together):
    "save_matmuls" when the outputs it keeps (f32, whatever the weights' dtype: `weight_dot`) fit in
    `cfg.saved_matmuls_gb` (≈14% faster steps than "full" on this CPU, benchmarks.md), else "full"; None without
    `cfg.remat`."""
    if not cfg.remat:
        return None
    layers = base["layers"]
    per_token = sum(
        layers[n].shape[0] * layers[n].shape[-1] * _SAVED_OUTPUT_BYTES for n in _REUSED_PROJECTIONS
    )
    return "save_matmuls" if per_token * step_tokens <= cfg.saved_matmuls_gb * 2**30 else "full"


def mean_token_loss(
    lora: nnx.State,
    base: nnx.State,
    graphdef: nnx.GraphDef,
    tokens: Array,
    loss_mask: Array,
    remat: str | None,
    loss_chunk: int,
) -> Array:
    """Mean next-token NLL over the masked targets of one batch. tokens, loss_mask: [B, T]."""
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    hidden, _, head = forward(graphdef, base, lora, tokens, positions, remat=remat)
    targets, mask = shift_targets(tokens, loss_mask)
    return chunked_nll_sum(hidden, head, targets, mask, loss_chunk) / jnp.maximum(mask.sum(), 1.0)


def _where_tree(pred: Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def adapt(
    lora0: nnx.State,
    base: nnx.State,
    batches: StepBatches,
    schedule: StepSchedule,
    hparams: AdapterHparams,
    *,
    graphdef: nnx.GraphDef,
    cfg: InnerConfig,
    adapters_per_step: int = 1,
) -> tuple[nnx.State, AdaptStats]:
    """LoRA SFT of one adapter: a scan over S steps ([S, B, T] batches). A non-finite loss, gradient or
    learning rate freezes it at its last finite state; non-finite final parameters flag it too.

    Step g runs at length `schedule.lengths[schedule.level[g]]` via `lax.switch`; the level is shared by all
    adapters (unbatched under vmap), so only that branch runs. The learning-rate schedule counts this adapter's
    real steps, not the shared ones. `adapters_per_step` (the vmapped K) sizes each branch's `remat_policy`.
    """
    base = with_layer_bits(base, merge_model(graphdef, base, lora0).kernels)  # once per call, not per step
    tx = _optimizer(cfg)
    grad_fn = jax.value_and_grad(mean_token_loss)

    def loss_and_grads(lora: nnx.State, tokens: Array, loss_mask: Array, level: Array) -> tuple[Array, Any]:
        def at_length(n: int):
            remat = remat_policy(base, adapters_per_step * tokens.shape[0] * n, cfg)
            return lambda: grad_fn(
                lora, base, graphdef, tokens[:, :n], loss_mask[:, :n], remat, cfg.loss_chunk
            )

        def idle():
            return jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, lora)

        return jax.lax.switch(level + 1, [idle, *(at_length(n) for n in schedule.lengths)])

    def step(carry: tuple, xs: tuple) -> tuple[tuple, Array]:
        lora, opt_state, frozen, done = carry
        tokens, loss_mask, active, level = xs
        loss, grads = loss_and_grads(lora, tokens, loss_mask, level)
        # A NaN/inf gradient makes the global norm (which the clip computes anyway) non-finite: one pass over
        # the gradients fewer than testing every element. A NaN/inf learning rate would poison the update.
        lr = learning_rate_at(done, hparams, cfg.schedule)
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads)) & jnp.isfinite(lr)
        updates, new_opt_state = tx.update(grads, opt_state, lora)
        new_lora = jax.tree.map(lambda p, u: p - lr * u, lora, updates)
        apply = active & finite & ~frozen
        carry = (
            _where_tree(apply, new_lora, lora),
            _where_tree(apply, new_opt_state, opt_state),
            frozen | (active & ~finite),
            done + active.astype(jnp.int32),
        )
        return carry, jnp.where(active, loss, 0.0)

    init = (lora0, tx.init(lora0), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    (lora, _, frozen, _), losses = jax.lax.scan(
        step, init, (batches.tokens, batches.loss_mask, batches.active, schedule.level)
    )
    # A finite but huge learning rate can still overflow the parameters at the last step, which no later loss
    # would reveal: flag them too (one pass over the adapter per call).
    return lora, AdaptStats(losses, frozen | ~jnp.isfinite(optax.global_norm(lora)))


def vmapped_adapt(graphdef: nnx.GraphDef, cfg: InnerConfig, spmd_axis_name: str | None = None) -> Callable:
    """`adapt` vmapped over a leading K axis of `lora0`, `batches` and `hparams`; `base`, `schedule` shared."""

    def run(
        lora0: nnx.State, base: nnx.State, batches: StepBatches, schedule: StepSchedule, hparams: Any
    ) -> tuple[nnx.State, AdaptStats]:
        fn = functools.partial(adapt, graphdef=graphdef, cfg=cfg, adapters_per_step=batches.tokens.shape[0])
        vmapped = jax.vmap(fn, in_axes=(0, None, 0, None, 0), spmd_axis_name=spmd_axis_name)
        return vmapped(lora0, base, batches, schedule, hparams)

    return run


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"), donate_argnums=(0,))
def adapt_k(
    lora0: nnx.State,
    base: nnx.State,
    batches: StepBatches,
    schedule: StepSchedule,
    hparams: AdapterHparams,
    *,
    graphdef: nnx.GraphDef,
    cfg: InnerConfig,
) -> tuple[nnx.State, AdaptStats]:
    """jit(vmap(adapt)) on the default device placement (see `sharding.sharded_adapt_k` for a mesh)."""
    return vmapped_adapt(graphdef, cfg)(lora0, base, batches, schedule, hparams)
