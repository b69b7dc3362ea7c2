"""The runtime: one mesh, the only copy of a model's base weights (sharded), and the compiled phases SEAL runs.

- `sample`: the model (no adapter) continues a batch of prompts (self-edits, ICL answers);
- `adapt` + `answer`: K LoRAs trained in parallel over the frozen base, then K adapted models answer their own
  queries (`engine/evaluator.py` plans and scores jobs with them);
- `sft`: the M-step's one LoRA, data-parallel over its batch rows;
- `finetune`: full fine-tuning of the base weights (AdamW, moments sharded like the weights; CPT);
- `merge`: an adapter folded into the base in place (the old base is donated).

Every program is `jax.jit` with explicit in/out shardings (today's pjit); its builder is a module-level function
of static settings and shardings only, so `seal_jax.aot` compiles the very same programs for a TPU topology from
abstract arguments. Host data enters as global arrays (`distributed.global_array`) and leaves gathered
(`distributed.to_host`), so the same code runs as one process or as one of many.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seal_jax.domains.base import Grammar
from seal_jax.engine import distributed, sharding
from seal_jax.engine.constrained import TokenConstraint, compile_grammar, shortest_reply, token_texts
from seal_jax.engine.finetune import (
    FinetuneConfig,
    finetune_program,
    init_optimizer,
    optimizer_shardings,
    rows_spec,
    schedule,
)
from seal_jax.engine.inner import (
    AdapterHparams,
    AdaptStats,
    InnerConfig,
    StepBatches,
    StepLayout,
    vmapped_adapt,
)
from seal_jax.engine.sampling import SamplingConfig, generate, pad_prompts, prompt_width, vmapped_generate
from seal_jax.engine.text import decode_outputs, encode_prompts
from seal_jax.errors import UserInputError
from seal_jax.models.bundle import LoadedModel
from seal_jax.models.lora import LoraConfig, merge_lora
from seal_jax.models.transformer import init_lora_k

# How a training program lays its leading adapter axis K and batch rows B over the mesh's `data` axis:
# "adapters": K on data (the inner loop: K independent LoRAs); "rows": K replicated (one adapter) and the batch
# rows B on data when `data` divides them (the M-step: data parallelism, gradients all-reduced).
AdapterLayout = str


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def rows_sharding(mesh: Mesh, rows: int, axis: int = 0) -> NamedSharding:
    """Dimension `axis` on `data` when the data axis divides `rows`, else replicated."""
    if rows % mesh.shape["data"]:
        return replicated(mesh)
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), "data"))


def rows_batches_sharding(mesh: Mesh, rows: int) -> StepBatches:
    """Shardings of one adapter's `StepBatches`: tokens and loss mask [1, S, B, T] with B on `data` when `data`
    divides it; the step flags [1, S] replicated."""
    row = rows_sharding(mesh, rows, axis=2)
    return StepBatches(row, row, replicated(mesh))


def sample_program(
    mesh: Mesh, graphdef: nnx.GraphDef, cfg: SamplingConfig, base_sh: Any, rows: int
) -> Callable:
    """`(base, prompts [B, P], lens [B], key, constraint) -> (tokens [B, max_new], lengths [B])`, rows on
    `data`; `constraint` (a replicated `TokenConstraint`, or None) restricts the replies to a grammar."""
    row = rows_sharding(mesh, rows)
    fn = functools.partial(generate, graphdef=graphdef, cfg=cfg)
    return jax.jit(
        lambda base, prompts, lens, key, constraint: fn(
            base, None, prompts, lens, key, constraint=constraint
        ),
        in_shardings=(base_sh, row, row, replicated(mesh), replicated(mesh)),
        out_shardings=row,
    )


def adapt_program(
    mesh: Mesh, graphdef: nnx.GraphDef, cfg: InnerConfig, base_sh: Any, layout: AdapterLayout, rows: int = 1
) -> Callable:
    """`(lora0 [K, ...], base, batches [K, S, B, T], schedule, hparams [K]) -> (lora, stats)` (lora0 donated).

    `layout` "adapters": K on `data` (a multiple of it); "rows": one adapter, its `rows` batch rows on `data`."""
    if layout == "adapters":
        k_axis = sharding.adapter_sharding(mesh)
        fn = vmapped_adapt(graphdef, cfg, spmd_axis_name="data")
        shardings = (k_axis, base_sh, k_axis, replicated(mesh), k_axis)
        out = k_axis
    else:
        fn = vmapped_adapt(graphdef, cfg)
        batch = rows_batches_sharding(mesh, rows)
        shardings = (replicated(mesh), base_sh, batch, replicated(mesh), replicated(mesh))
        out = replicated(mesh)
    return jax.jit(fn, in_shardings=shardings, out_shardings=out, donate_argnums=(0,))


def answer_program(mesh: Mesh, graphdef: nnx.GraphDef, cfg: SamplingConfig, base_sh: Any) -> Callable:
    """`(base, lora_k, prompts [K, B, P], lens [K, B], keys [K]) -> (tokens, lengths)`, K on `data`."""
    k_axis = sharding.adapter_sharding(mesh)
    return jax.jit(
        vmapped_generate(graphdef, cfg, spmd_axis_name="data"),
        in_shardings=(base_sh, k_axis, k_axis, k_axis, k_axis),
        out_shardings=k_axis,
    )


def merge_program(lora: LoraConfig, base_sh: Any, mesh: Mesh) -> Callable:
    """`(base, adapter) -> base + (alpha/r) A @ B` on every target, in the base's shardings (base donated)."""
    return jax.jit(
        functools.partial(merge_lora, cfg=lora),
        in_shardings=(base_sh, replicated(mesh)),
        out_shardings=base_sh,
        donate_argnums=(0,),
    )


class Runtime:
    """Owns `mesh` and the model's base weights; compiles each phase once per static setting."""

    def __init__(self, model: LoadedModel, mesh: Mesh):
        self.model = model
        self.mesh = mesh
        self.base_shardings = sharding.base_shardings(mesh, model.base)
        self._programs: dict[tuple, Callable] = {}
        # (grammar, EOS ids) -> (its token automaton on the mesh, the fewest tokens of a complete reply)
        self._constraints: dict[tuple[Grammar, tuple[int, ...]], tuple[TokenConstraint, int]] = {}

    @property
    def base(self) -> nnx.State:
        return self.model.base

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def _program(self, key: tuple, build: Callable[[], Callable]) -> Callable:
        if key not in self._programs:
            self._programs[key] = build()
        return self._programs[key]

    def put(self, tree: Any, placement: Any) -> Any:
        """Host (numpy) leaves -> global arrays with `placement` (one sharding, or a tree of them for `tree`)."""
        if isinstance(placement, jax.sharding.Sharding):
            return jax.tree.map(lambda x: distributed.global_array(np.asarray(x), placement), tree)
        return jax.tree.map(lambda x, p: distributed.global_array(np.asarray(x), p), tree, placement)

    # ------------------------------------------------------------------------------------------------ phases

    def constraint(self, grammar: Grammar, eos_ids: tuple[int, ...]) -> tuple[TokenConstraint, int]:
        """`grammar` compiled for this model's vocabulary (once), replicated over the mesh, and the fewest
        tokens a complete reply takes."""
        if (grammar, eos_ids) not in self._constraints:
            vocab = self.model.config.vocab_size  # a tokenizer may list added ids the embedding does not have
            texts = {i: t for i, t in token_texts(self.tokenizer).items() if i < vocab}
            compiled = compile_grammar(grammar, texts, eos_ids)
            placed = self.put(compiled, replicated(self.mesh))
            self._constraints[grammar, eos_ids] = placed, shortest_reply(compiled)
        return self._constraints[grammar, eos_ids]

    def sample(
        self, prompts: Sequence[str], cfg: SamplingConfig, seed: int, grammar: Grammar | None = None
    ) -> list[str]:
        """The model's continuations of `prompts` (one batch; a row's randomness depends on the batch); with
        `grammar`, each is a string of its language (or its prefix, if `cfg.max_new` cuts it)."""
        constraint, shortest = (None, 0) if grammar is None else self.constraint(grammar, cfg.eos_ids)
        if shortest > cfg.max_new:
            raise UserInputError(
                f"a constrained reply takes at least {shortest} tokens: max_new={cfg.max_new} (for self-edits "
                "restem.max_self_edit_tokens) would cut every one"
            )
        tokens, lens = pad_prompts(encode_prompts(self.tokenizer, prompts), cfg)
        rows = len(prompts)
        program = self._program(
            ("sample", cfg, rows % self.mesh.shape["data"] == 0),
            lambda: sample_program(self.mesh, self.model.graphdef(), cfg, self.base_shardings, rows),
        )
        row = rows_sharding(self.mesh, rows)
        key = jax.random.key_data(jax.random.key(seed))
        out, n = program(
            self.base,
            self.put(tokens, row),
            self.put(lens, row),
            jax.random.wrap_key_data(self.put(np.asarray(key), replicated(self.mesh))),
            constraint,
        )
        return decode_outputs(self.tokenizer, distributed.to_host(out), distributed.to_host(n), cfg.eos_ids)

    def adapt(
        self,
        layout: StepLayout,
        hparams: AdapterHparams,
        lora0: nnx.State,
        inner: InnerConfig,
        adapter_layout: AdapterLayout = "adapters",
    ) -> tuple[nnx.State, AdaptStats]:
        """The compiled inner loop on a prepared call (`inner.prepare_adapters`); stats come back on the host.

        `adapter_layout` "adapters" for K parallel LoRAs (K a multiple of the data axis), "rows" for one."""
        rows = layout.batches.tokens.shape[2]
        program = self._program(
            ("adapt", inner, adapter_layout, rows % self.mesh.shape["data"] == 0),
            lambda: adapt_program(
                self.mesh, self.model.graphdef(inner.lora), inner, self.base_shardings, adapter_layout, rows
            ),
        )
        if adapter_layout == "adapters":
            k_axis = sharding.adapter_sharding(self.mesh)
            args = (self.put(lora0, k_axis), self.put(layout.batches, k_axis), self.put(hparams, k_axis))
        else:
            args = (
                self.put(lora0, replicated(self.mesh)),
                self.put(layout.batches, rows_batches_sharding(self.mesh, rows)),
                self.put(hparams, replicated(self.mesh)),
            )
        schedule = self.put(layout.schedule, replicated(self.mesh))
        lora, stats = program(args[0], self.base, args[1], schedule, args[2])
        return lora, jax.tree.map(distributed.to_host, stats)

    def answer(
        self,
        lora_k: nnx.State,
        lora: LoraConfig,
        queries_k: list[list[str]],
        seeds: list[int],
        cfg: SamplingConfig,
    ) -> list[list[str]]:
        """K adapted models (leading K axis, on `data`) answer their own queries in one call."""
        tok = self.tokenizer
        rows = max(1, max(len(q) for q in queries_k))
        encoded = [
            encode_prompts(tok, (q or [""]) + [(q or [""])[0]] * (rows - len(q or [""]))) for q in queries_k
        ]
        width = prompt_width(max(len(ids) for e in encoded for ids in e), cfg)
        padded = [pad_prompts(e, cfg, width) for e in encoded]
        keys = np.stack([np.asarray(jax.random.key_data(jax.random.key(s))) for s in seeds])
        program = self._program(
            ("answer", lora, cfg),
            lambda: answer_program(self.mesh, self.model.graphdef(lora), cfg, self.base_shardings),
        )
        k_axis = sharding.adapter_sharding(self.mesh)
        out, n = program(
            self.base,
            lora_k,
            self.put(np.stack([p[0] for p in padded]), k_axis),
            self.put(np.stack([p[1] for p in padded]), k_axis),
            jax.random.wrap_key_data(self.put(keys, k_axis)),
        )
        out, n = distributed.to_host(out), distributed.to_host(n)
        return [
            decode_outputs(tok, out[i], n[i], cfg.eos_ids)[: len(queries_k[i])] for i in range(len(queries_k))
        ]

    def fresh_adapters(self, lora: LoraConfig, seeds: Sequence[int]) -> nnx.State:
        """K fresh LoRAs (A from each seed, B zero) as host arrays [K, ...]."""
        keys = jax.numpy.stack([jax.random.key(s) for s in seeds])
        return jax.tree.map(np.asarray, init_lora_k(self.model.config, lora, keys))

    def finetune(
        self, steps: Sequence[tuple[np.ndarray, np.ndarray]], cfg: FinetuneConfig
    ) -> tuple[list[float], int]:
        """Full fine-tuning of the base weights, in place, over `steps` (`finetune.step_batches`): AdamW with
        its moments sharded like the weights; returns the loss per step and the number of non-finite steps
        (skipped: weights unchanged)."""
        rows = steps[0][0].shape[1]
        graphdef = self.model.graphdef()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.base)
        opt_sh = optimizer_shardings(self.base_shardings, abstract, cfg, self.mesh)
        init = jax.jit(functools.partial(init_optimizer, cfg=cfg), out_shardings=opt_sh)
        program = self._program(
            ("finetune", cfg, rows),
            lambda: finetune_program(self.mesh, graphdef, cfg, self.base_shardings, opt_sh, rows),
        )
        row, rep = rows_spec(self.mesh, rows), replicated(self.mesh)
        hparams = self.put(schedule(len(steps), cfg), rep)
        base, opt_state, losses, skipped = self.base, init(self.base), [], 0
        for i, (tokens, mask) in enumerate(steps):
            base, opt_state, loss, finite = program(
                base,
                opt_state,
                self.put(tokens, row),
                self.put(mask, row),
                self.put(np.int32(i), rep),
                hparams,
            )
            losses.append(float(distributed.to_host(loss)))
            skipped += not bool(distributed.to_host(finite))
        self.model = self.model.with_base(base)
        return losses, skipped

    def merge(self, adapter: nnx.State, lora: LoraConfig) -> None:
        """Folds one adapter (no K axis) into the base weights, in place: the old base is donated."""
        program = self._program(("merge", lora), lambda: merge_program(lora, self.base_shardings, self.mesh))
        merged = program(self.model.base, self.put(adapter, replicated(self.mesh)))
        self.model = self.model.with_base(merged)
