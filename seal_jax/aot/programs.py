"""The runtime's programs (`engine/runtime.py` builders) compiled from abstract, sharded arguments.

Each `compile_*` lowers and compiles one program for the mesh's devices (a deviceless TPU topology works) and
returns XLA's per-device memory figures. Nothing is allocated: arguments are `jax.ShapeDtypeStruct`s carrying
the shardings the runtime would place them with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from seal_jax.aot.shapes import RoundShapes
from seal_jax.engine import finetune, runtime, sharding
from seal_jax.engine.finetune import FinetuneConfig
from seal_jax.engine.inner import AdapterHparams, InnerConfig, StepBatches, StepSchedule
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.models.bundle import abstract_base
from seal_jax.models.config import ModelConfig
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import graphdef_for, init_lora, init_lora_k

KERNELS = "plain"  # the TPU/GPU kernel set ("xla_cpu" holds CPU workarounds)


@dataclasses.dataclass(frozen=True)
class Compiled:
    """Per-device bytes of one compiled program (`compiled.memory_analysis()`) and XLA's FLOP count
    (`cost_analysis()`, which counts a loop body once, not per trip)."""

    name: str
    argument: int
    output: int
    temp: int
    code: int
    alias: int
    xla_flops: float

    @property
    def peak(self) -> int:
        """Bytes live at once: arguments + outputs + temporaries + code, less outputs aliasing donated inputs."""
        return self.argument + self.output + self.temp + self.code - self.alias


@dataclasses.dataclass(frozen=True)
class Setting:
    """Everything static a round's programs depend on."""

    model: ModelConfig
    dtype: Any
    mesh: Mesh
    inner: InnerConfig
    sft: InnerConfig
    sample: SamplingConfig
    answer: SamplingConfig
    shapes: RoundShapes
    sft_steps: int  # the M-step's optimizer steps (epochs × batches; no step bucketing)


def _abstract(tree: Any, placement: Any) -> Any:
    """ShapeDtypeStruct leaves carrying `placement` (one sharding for all leaves, or a matching tree)."""
    if isinstance(placement, jax.sharding.Sharding):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placement), tree)
    return jax.tree.map(lambda x, p: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=p), tree, placement)


# The TPU compiler refuses a program whose temporaries exceed the chip's HBM, naming the bytes it needed.
_OUT_OF_HBM = re.compile(r"HLO temporaries \(([\d.]+)([KMGT])\)")


def _compile(name: str, program: Any, *args: Any) -> Compiled:
    """Compiles; a program too large for HBM comes back marked, with only the temporary bytes the
    compiler reported (its peak is then at least that)."""
    try:
        compiled = program.lower(*args).compile()
    except jax.errors.JaxRuntimeError as err:
        found = _OUT_OF_HBM.search(str(err))
        if found is None:
            raise
        temp = float(found[1]) * 1024 ** ("KMGT".index(found[2]) + 1)
        return Compiled(f"{name} (OUT OF HBM)", 0, 0, int(temp), 0, 0, 0.0)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return Compiled(
        name,
        int(mem.argument_size_in_bytes),
        int(mem.output_size_in_bytes),
        int(mem.temp_size_in_bytes),
        int(mem.generated_code_size_in_bytes),
        int(mem.alias_size_in_bytes),
        float((cost or {}).get("flops", 0.0)),
    )


def base_args(s: Setting) -> tuple[Any, Any]:
    """(abstract sharded base, its shardings)."""
    base = abstract_base(s.model, s.dtype)
    shardings = sharding.base_shardings(s.mesh, base)
    return _abstract(base, shardings), shardings


def base_bytes_per_device(s: Setting) -> int:
    """The base weights' bytes on one device under `sharding.BASE_RULES` (the floor of every argument size)."""
    base, _ = base_args(s)
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(base))


def _lora_k(s: Setting, lora: LoraConfig, k: int, placement: NamedSharding) -> Any:
    state = jax.eval_shape(lambda: init_lora_k(s.model, lora, jax.random.split(jax.random.key(0), k)))
    return _abstract(state, placement)


def _key(shape: tuple[int, ...], placement: NamedSharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jax.random.key(0).dtype, sharding=placement)


def _int(shape: tuple[int, ...], placement: NamedSharding, dtype: Any = jnp.int32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=placement)


def compile_sample(s: Setting) -> Compiled:
    """Self-edit sampling: `sample_rows` prompts of width `sample_prompt`, `max_new` = the config's."""
    base, base_sh = base_args(s)
    rows, width = s.shapes.sample_rows, s.shapes.sample_prompt
    row = runtime.rows_sharding(s.mesh, rows)
    program = runtime.sample_program(s.mesh, graphdef_for(s.model, None, KERNELS), s.sample, base_sh, rows)
    rep = runtime.replicated(s.mesh)
    return _compile(
        "sample", program, base, _int((rows, width), row), _int((rows,), row), _key((), rep), None
    )


def _batches(k: int, steps: int, rows: int, length: int, placement: Any) -> StepBatches:
    tree = StepBatches(
        jax.ShapeDtypeStruct((k, steps, rows, length), jnp.int32),
        jax.ShapeDtypeStruct((k, steps, rows, length), jnp.float32),
        jax.ShapeDtypeStruct((k, steps), jnp.bool_),
    )
    return _abstract(tree, placement)


def _hparams(k: int, placement: NamedSharding) -> AdapterHparams:
    f32, i32 = jnp.float32, jnp.int32
    tree = AdapterHparams(*(jax.ShapeDtypeStruct((k,), d) for d in (f32, i32, i32)))
    return _abstract(tree, placement)


def compile_adapt(s: Setting, k: int) -> Compiled:
    """The inner loop: K LoRAs on `data`, [K, S, B, T] step batches at the shapes' length levels."""
    base, base_sh = base_args(s)
    k_axis = sharding.adapter_sharding(s.mesh)
    sh = s.shapes
    schedule = StepSchedule(
        _int((sh.adapt_steps,), runtime.replicated(s.mesh)), tuple(sorted(sh.adapt_lengths))
    )
    program = runtime.adapt_program(
        s.mesh, graphdef_for(s.model, s.inner.lora, KERNELS), s.inner, base_sh, "adapters"
    )
    batches = _batches(k, sh.adapt_steps, sh.adapt_batch, max(sh.adapt_lengths), k_axis)
    lora = _lora_k(s, s.inner.lora, k, k_axis)
    return _compile(f"adapt K={k}", program, lora, base, batches, schedule, _hparams(k, k_axis))


def compile_answer(s: Setting, k: int) -> Compiled:
    """K adapted models answer `answer_rows` queries each (K on `data`)."""
    base, base_sh = base_args(s)
    k_axis = sharding.adapter_sharding(s.mesh)
    sh = s.shapes
    program = runtime.answer_program(s.mesh, graphdef_for(s.model, s.inner.lora, KERNELS), s.answer, base_sh)
    lora = _lora_k(s, s.inner.lora, k, k_axis)
    prompts = _int((k, sh.answer_rows, sh.answer_prompt), k_axis)
    return _compile(
        f"answer K={k}", program, base, lora, prompts, _int((k, sh.answer_rows), k_axis), _key((k,), k_axis)
    )


def compile_sft(s: Setting) -> Compiled:
    """The M-step: one LoRA, `batch_size` rows on `data`, at the M-step's sequence length."""
    base, base_sh = base_args(s)
    rows = min(s.sft.batch_size, s.shapes.sft_pairs)
    steps = s.sft_steps
    rep = runtime.replicated(s.mesh)
    program = runtime.adapt_program(
        s.mesh, graphdef_for(s.model, s.sft.lora, KERNELS), s.sft, base_sh, "rows", rows
    )
    batches = _abstract(
        StepBatches(
            jax.ShapeDtypeStruct((1, steps, rows, s.shapes.sft_length), jnp.int32),
            jax.ShapeDtypeStruct((1, steps, rows, s.shapes.sft_length), jnp.float32),
            jax.ShapeDtypeStruct((1, steps), jnp.bool_),
        ),
        runtime.rows_batches_sharding(s.mesh, rows),
    )
    schedule = StepSchedule(_int((steps,), rep), (s.shapes.sft_length,))
    lora = _lora_k(s, s.sft.lora, 1, rep)
    return _compile("M-step", program, lora, base, batches, schedule, _hparams(1, rep))


def compile_finetune(s: Setting, ft: FinetuneConfig, length: int) -> Compiled:
    """CPT's full fine-tuning step: the weights and AdamW moments in their fsdp shardings (both donated),
    `grad_accum` micro-batches of `batch_size` rows of `length` tokens."""
    base, base_sh = base_args(s)
    abstract = abstract_base(s.model, s.dtype)
    opt_sh = finetune.optimizer_shardings(base_sh, abstract, ft, s.mesh)
    opt = _abstract(jax.eval_shape(functools.partial(finetune.init_optimizer, cfg=ft), abstract), opt_sh)
    program = finetune.finetune_program(
        s.mesh, graphdef_for(s.model, None, KERNELS), ft, base_sh, opt_sh, ft.batch_size
    )
    row, rep = finetune.rows_spec(s.mesh, ft.batch_size), runtime.replicated(s.mesh)
    shape = (ft.grad_accum, ft.batch_size, length)
    mask = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=row)
    hparams = _abstract(finetune.schedule(1, ft), rep)  # the runtime's scalars: their shapes and dtypes
    return _compile("full FT step", program, base, opt, _int(shape, row), mask, _int((), rep), hparams)


def compile_merge(s: Setting) -> Compiled:
    """The M-step's adapter folded into the base (base donated)."""
    base, base_sh = base_args(s)
    program = runtime.merge_program(s.sft.lora, base_sh, s.mesh)
    adapter = _abstract(
        jax.eval_shape(lambda: init_lora(s.model, s.sft.lora, jax.random.key(0))), runtime.replicated(s.mesh)
    )
    return _compile("merge", program, base, adapter)
