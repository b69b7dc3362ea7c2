"""Self-edit evaluations per second on SEAL's knowledge inner loop (SmolLM2-135M, CPU), K = 15 side by side.

    .venv/bin/python -m benchmarks.inner_loop --quick      # ~6 min on the shared 2-core box under load
    .venv/bin/python -m benchmarks.inner_loop              # full: the whole 10-epoch runs (hours on CPU)

One self-edit evaluation = a fresh LoRA (r32 α64 on q,v) fine-tuned for 10 epochs at batch 1 on the self-edit's
sequences (AdamW lr 1e-3, linear decay, no warmup, grad clip 1.0), then greedy ≤64-token answers to the
passage's questions. K = 15 evaluations of one passage (5 stored self-edits × 3 seeds) are timed with:

1. seal_jax `Evaluator`, chunk_k=15 (15 adapters under one jit(vmap(scan)), then one vmapped generate);
2. seal_jax one adapter at a time (the same code, chunk_k=1);
3. the reference stack (docs/reference.md#knowledge-inner-loop): HF `Trainer` + PEFT, every sequence padded
   to 2048 with EOS and labels on the pads, then HF `generate` one question at a time. Far too slow to run
   whole on a CPU: a few of its optimizer steps and one generate are timed and scaled by its step and question counts;
4. a fair PyTorch + PEFT loop: the same LoRA/optimizer/schedule in a plain loop, each sequence padded only
   to its own 64-token bucket with the padding masked (-100), batched HF `generate` over the questions.

seal_jax's training time is built from its real layout (`inner.prepare_call`): the seconds of a shared step at
each length level, times the number of shared steps at that level (idle steps cost nothing). Torch's per-step
times are medians, scaled by the exact number of optimizer steps of the full workload. Every contender adds
its measured setup and answer time, so every ratio compares the same 15 evaluations. `--quick` keeps every
shape (K, batch 1, length levels, prompt width, 64 new tokens) but times only `--quick-steps` shared steps per
length level, and fewer self-edits for the one-at-a-time contenders; the output says which numbers are scaled.

MFU: FLOPs = 4·N·tokens (forward 2·N + input-gradient backward 2·N: the base is frozen, so no weight
gradients; N = matmul parameters incl. the tied head) + attention, against a matmul peak measured here just
before and just after each contender's phase (median 2048³ matmul in `--dtype`: the model's `weight_dot` for
seal_jax, `torch.mm` for torch), the larger of the two: a burst of load from other processes during one of the
two short measurements then lowers neither the peak nor, so, inflates the MFU. "useful" counts real tokens,
"computed" counts the padded tokens the kernels process.

`--dtype bfloat16` runs every contender with bf16 base weights, the reference's precision (`torch_dtype=bfloat16`,
`bf16=True`): seal_jax multiplies bf16 operands with f32 accumulation and keeps f32 activations; torch runs its
bf16 model (PEFT keeps the adapters in f32; the reference stack adds the Trainer's `bf16=True`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import (
    DTYPES,
    CompileWatch,
    KnowledgeItem,
    add_dtype_arg,
    load_knowledge_items,
    matmul_peak_gflops,
    median,
    peak_rss_gb,
    pick_torch_threads,
    table,
    torch_llama,
    torch_matmul_peak_gflops,
    train_flops,
)
from benchmarks.gemm_floor import jax_gemm_pass, timed_median
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine import sharding
from seal_jax.engine.evaluator import AdaptJob, EngineConfig, Evaluator
from seal_jax.engine.inner import (
    AdapterHparams,
    EncodedExample,
    InnerConfig,
    StepBatches,
    StepLayout,
    StepSchedule,
    build_step_batches,
    encode_example,
    round_up,
)
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.text import encode_prompts, pad_id, sampling_config, stop_ids
from seal_jax.models.bundle import LoadedModel, default_mesh, load_model

MODEL = "smollm2-135m-instruct"
COMPLETIONS = 5
REF_MAX_LENGTH = 2048
FAIR_BUCKET = 64
MAX_NEW = 64

# Targets of the issue.
TARGET_VS_REFERENCE = 80.0
TARGET_VS_FAIR = 2.8
TARGET_MFU = 0.65
TARGET_SEQ_RATIO = 0.6
TARGET_RSS_GB = 4.0


@dataclasses.dataclass
class Contender:
    """Per-evaluation cost of one way of running the 15 evaluations (seconds per self-edit evaluation)."""

    name: str
    train_s: float  # optimizer steps (scaled to the full step count when `scaled`)
    answer_s: float  # answering the passage's questions
    setup_s: float = 0.0  # per evaluation: adapter wrap, trainer construction, tokenization
    scaled: str = ""  # how the numbers were extrapolated, if they were
    peak: float = float("nan")  # GFLOP/s of a 2048³ matmul in this framework: max(just before, just after)
    mfu_useful: float | None = None
    mfu_computed: float | None = None
    notes: str = ""

    @property
    def per_eval_s(self) -> float:
        return self.train_s + self.answer_s + self.setup_s


# ------------------------------------------------------------------------------------------------ workload


def make_jobs(item: KnowledgeItem, domain: KnowledgeDomain, seeds: int) -> list[AdaptJob]:
    """The K = completions × seeds inner-loop runs of one passage (reference hparams: lr 1e-3, 10 epochs)."""
    queries = tuple(q.prompt for q in domain.eval_queries(item.passage))
    jobs = []
    for seed in range(seeds):
        for c, text in enumerate(item.completions[:COMPLETIONS]):
            se = domain.parse_self_edit(item.passage, text)
            if not hasattr(se, "examples"):
                raise ValueError(f"self-edit {c} of {item.passage.title!r} is invalid: {se}")
            jobs.append(AdaptJob(se.examples, se.hparams, 1000 * seed + c, queries, order_stream=seed))
    return jobs


@dataclasses.dataclass(frozen=True)
class Workload:
    """Token accounting of the K evaluations: the real sequence lengths and what each stack computes."""

    lengths: list[list[int]]  # per job: token count of each training sequence (with EOS)
    epochs: int

    @property
    def k(self) -> int:
        return len(self.lengths)

    def steps(self, j: int) -> int:
        return self.epochs * len(self.lengths[j])

    def real_tokens(self) -> int:
        return sum(self.epochs * sum(ls) for ls in self.lengths)

    def real_flops(self, cfg: Any) -> float:
        return sum(self.epochs * train_flops(cfg, n, n) for ls in self.lengths for n in ls)

    def fair_tokens(self) -> int:
        return sum(self.epochs * sum(round_up(n, FAIR_BUCKET) for n in ls) for ls in self.lengths)

    def reference_tokens(self) -> int:
        return sum(self.steps(j) for j in range(self.k)) * REF_MAX_LENGTH

    def alone_tokens(self, cfg: InnerConfig) -> int:
        """What seal_jax computes running each job alone: its steps at the lengths its own layout chooses."""
        layouts = [
            build_step_batches(
                [[EncodedExample(np.zeros(n, np.int32), np.ones(n, np.float32)) for n in ls]],
                [self.epochs],
                [j],
                cfg,
                pad_id=0,
            )
            for j, ls in enumerate(self.lengths)
        ]
        return sum(layout_tokens(ly) for ly in layouts)


def layout_tokens(layout: StepLayout) -> int:
    """Tokens a layout computes: K × B × length, summed over its non-idle shared steps."""
    k, _, b, _ = layout.batches.tokens.shape
    level = layout.schedule.level
    return int(k * b * np.asarray(layout.schedule.lengths)[level[level >= 0]].sum())


def workload_of(jobs: Sequence[AdaptJob], tokenizer: Any, cfg: InnerConfig) -> Workload:
    lengths = [
        [
            len(encode_example(tokenizer, ex, j.hparams.loss_on_all_tokens, cfg.max_length).ids)
            for ex in j.examples
        ]
        for j in jobs
    ]
    epochs = {j.hparams.epochs for j in jobs}
    if len(epochs) != 1:
        raise ValueError("all jobs must have the same number of epochs")
    return Workload(lengths, epochs.pop())


# ------------------------------------------------------------------------------------------------ seal_jax


@contextlib.contextmanager
def compile_only(rt: Runtime) -> Iterator[None]:
    """Warm-up: within this block the runtime's jitted programs (adapt, answer) are AOT-compiled for the shapes
    they are called with (which fills jit's cache) and return zeros instead of running."""
    cached = rt._program

    def program(key: tuple, build: Any) -> Any:
        fn = cached(key, build)

        def call(*args: Any) -> Any:
            fn.lower(*args).compile()
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))

        return call

    rt._program = program  # an instance attribute over the method
    try:
        yield
    finally:
        del rt._program


def steps_at_level(layout: StepLayout, level: int, size: int | None) -> StepLayout:
    """The shared steps of `layout` at one length level (the first `size` of them, padded to `size` with
    idle steps when fewer), as a layout of their own: it computes what those steps compute in the full run."""
    idx = np.flatnonzero(layout.schedule.level == level)[:size]
    size = size or len(idx)
    sel, real = np.resize(idx, size), np.arange(size) < len(idx)
    b = layout.batches
    return StepLayout(
        StepBatches(b.tokens[:, sel], b.loss_mask[:, sel], b.active[:, sel] & real[None]),
        StepSchedule(np.where(real, level, -1).astype(np.int32), layout.schedule.lengths),
        layout.steps,
    )


@dataclasses.dataclass
class JaxRun:
    """What one Evaluator configuration costs on its jobs. Training is modelled per shared step: the median
    seconds of a step at each length level, times the number of shared steps at that level in the real layouts
    (idle steps cost nothing). With `per_level=None` every step is run, so the model is the measured sum."""

    train_s: float  # all jobs' training
    answer_s_per_job: float
    computed_tokens: int  # Σ over non-idle shared steps of K × B × length
    computed_flops: float
    shared_steps: int
    calls: list[int]  # adapters per compiled call, in plan order
    level_s: dict[tuple[int, int], float]  # (call, length) -> seconds per shared step
    level_steps: dict[tuple[int, int], int]  # (call, length) -> shared steps in the real layouts
    level_rows: dict[tuple[int, int], int]  # (call, length) -> tokens per shared step (adapters × B × length)
    compiles: int
    compile_s: float
    timed_compiles: int
    answers: list[list[str]]


def run_seal_jax(
    model: LoadedModel, cfg: EngineConfig, jobs: Sequence[AdaptJob], per_level: int | None
) -> JaxRun:
    """Lays out `jobs` as the Evaluator does, times up to `per_level` shared steps of each length level (after
    a compile-only warm-up and, with `per_level`, one untimed pass), and answers every chunk's queries
    (fresh adapters: the decode cost is the same)."""
    watch = CompileWatch.get()
    rt = Runtime(model, default_mesh())
    ev = Evaluator(rt, cfg)
    chunks = [[jobs[i] for i in idx] for idx in ev.plan(jobs)]

    def prepare(c: list[AdaptJob]) -> tuple[StepLayout, AdapterHparams, Any]:
        """What `Evaluator.run_chunk` feeds the runtime for chunk `c` (one device: no padding to the mesh)."""
        layout, hparams = ev.prepare(c)
        return layout, hparams, rt.fresh_adapters(cfg.inner.lora, [j.seed for j in c])

    layouts = [prepare(c)[0] for c in chunks]
    probes: dict[tuple[int, int], StepLayout] = {}  # (chunk, length) -> the chunk's steps at that length
    for ci, layout in enumerate(layouts):
        for lv in np.unique(layout.schedule.level[layout.schedule.level >= 0]):
            probes[ci, layout.schedule.lengths[lv]] = steps_at_level(layout, int(lv), per_level)

    def train(ci: int, sub: StepLayout) -> float:
        _, hparams, lora0 = prepare(chunks[ci])
        t0 = time.perf_counter()
        jax.block_until_ready(rt.adapt(sub, hparams, lora0, cfg.inner))
        return time.perf_counter() - t0

    def answer(c: list[AdaptJob]) -> list[list[str]]:
        lora = rt.put(prepare(c)[2], sharding.adapter_sharding(rt.mesh))
        t0 = time.perf_counter()
        out = rt.answer(lora, cfg.inner.lora, [list(j.queries) for j in c], [j.seed for j in c], cfg.sampling)
        ev.timings["generate_s"] += time.perf_counter() - t0
        return out

    def answer_all() -> list[list[str]]:
        return [a for c in chunks for a in answer(c)]

    c0, s0 = watch.snapshot()
    with compile_only(rt):
        for (ci, _), sub in probes.items():
            train(ci, sub)
        answer_all()
    c1, s1 = watch.snapshot()
    if per_level is not None:
        # One untimed pass of the short probes: the first runs in a process pay one-time costs (a K=9 × 48
        # step: 2.2 s, then 1.35 s) that the torch contenders' median step times leave out as well.
        for (ci, _), sub in probes.items():
            train(ci, sub)
        answer_all()
    level_s = {key: train(key[0], sub) / int(sub.batches.active.any(0).sum()) for key, sub in probes.items()}
    ev.timings["generate_s"] = 0.0
    answers = answer_all()
    c2, _ = watch.snapshot()
    level_steps = collections.Counter(
        (ci, ly.schedule.lengths[lv]) for ci, ly in enumerate(layouts) for lv in ly.schedule.level if lv >= 0
    )
    level_rows = {  # adapters × B × length
        (ci, n): layouts[ci].batches.tokens.shape[0] * layouts[ci].batches.tokens.shape[2] * n
        for ci, n in level_steps
    }
    return JaxRun(
        train_s=sum(level_s[key] * count for key, count in level_steps.items()),
        answer_s_per_job=ev.timings["generate_s"] / len(jobs),
        computed_tokens=sum(layout_tokens(ly) for ly in layouts),
        computed_flops=sum(
            train_flops(model.config, level_rows[ci, n] * count, n) for (ci, n), count in level_steps.items()
        ),
        shared_steps=sum(level_steps.values()),
        calls=[len(c) for c in chunks],
        level_s=level_s,
        level_steps=dict(level_steps),
        level_rows=level_rows,
        compiles=c1 - c0,
        compile_s=s1 - s0,
        timed_compiles=c2 - c1,
        answers=answers,
    )


# --------------------------------------------------------------------------------------------------- torch


def _lora_config() -> Any:
    """The reference's LoRA: r32, α64, dropout 0, PEFT's default targets for Llama (q_proj, v_proj)."""
    from peft import LoraConfig

    return LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, task_type="CAUSAL_LM")


def _generation_kwargs(tokenizer: Any) -> dict[str, Any]:
    return dict(
        max_new_tokens=MAX_NEW,
        do_sample=False,
        eos_token_id=list(stop_ids(tokenizer)),
        pad_token_id=pad_id(tokenizer),
        use_cache=True,
    )


def reference_stack(torch_model: Any, tokenizer: Any, job: AdaptJob, steps: int) -> dict[str, Any]:
    """The reference inner loop as shipped, cut short: HF Trainer + PEFT on sequences padded to 2048 (labels on
    the pads), stopped after `steps` optimizer steps; then one greedy `generate` for the first question.

    Returns setup seconds (tokenize + get_peft_model + Trainer until its first step), per-step seconds and
    the generate seconds. The base model is restored (adapter unloaded) afterwards.
    """
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.begin: list[float] = []
            self.times: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.begin.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            self.times.append(time.perf_counter() - self.begin[-1])
            if len(self.times) >= steps:
                control.should_training_stop = True
            return control

    t0 = time.perf_counter()
    rows = []
    for ex in job.examples:
        enc = tokenizer(ex.completion, truncation=True, max_length=REF_MAX_LENGTH, padding="max_length")
        rows.append(
            {
                "input_ids": torch.tensor(enc["input_ids"]),
                "attention_mask": torch.tensor(enc["attention_mask"]),
                "labels": torch.tensor(enc["input_ids"]),
            }
        )  # labels = input_ids: pads are in the loss
    model = get_peft_model(torch_model, _lora_config())
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=1,
            num_train_epochs=10,
            learning_rate=1e-3,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            gradient_accumulation_steps=1,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            seed=job.seed,
            bf16=next(torch_model.parameters()).dtype == torch.bfloat16,  # the reference's `bf16=True`
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer])
        trainer.train()
    setup = timer.begin[0] - t0
    model.eval()
    ids = torch.tensor([encode_prompts(tokenizer, job.queries[:1])[0]])
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **_generation_kwargs(tokenizer))
    gen = time.perf_counter() - t0
    model.unload()
    return {"setup_s": setup, "step_s": timer.times, "generate_s": gen}


def fair_torch(torch_model: Any, tokenizer: Any, job: AdaptJob, epochs: int, answer: bool) -> dict[str, Any]:
    """A plain torch loop with the reference's optimization (PEFT LoRA r32 α64 q,v; AdamW lr 1e-3, linear decay
    to 0 over all steps, no warmup; clip 1.0; batch 1), each sequence padded to its 64-token bucket with the
    padding masked out; then one batched greedy `generate` over the passage's questions (left padding).

    Returns the setup seconds, (bucket, seconds) per optimizer step, and the generate seconds (or None).
    """
    import torch
    from peft import get_peft_model

    t0 = time.perf_counter()
    pad = pad_id(tokenizer)
    seqs = [encode_example(tokenizer, ex, True, REF_MAX_LENGTH).ids for ex in job.examples]
    model = get_peft_model(torch_model, _lora_config())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    total = epochs * len(seqs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    rng = np.random.default_rng(job.seed)
    setup = time.perf_counter() - t0
    steps = []
    model.train()
    for _ in range(epochs):
        for i in rng.permutation(len(seqs)):
            t = time.perf_counter()
            n = len(seqs[i])
            width = round_up(n, FAIR_BUCKET)
            ids = torch.full((1, width), pad, dtype=torch.long)
            ids[0, :n] = torch.from_numpy(seqs[i].astype(np.int64))
            mask = torch.zeros_like(ids)
            mask[0, :n] = 1
            labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps.append((width, time.perf_counter() - t))
    gen = None
    if answer:
        model.eval()
        prompts = encode_prompts(tokenizer, job.queries)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):  # left padding for batched decoder-only generation
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, **_generation_kwargs(tokenizer))
        gen = time.perf_counter() - t
    model.unload()
    return {"setup_s": setup, "steps": steps, "generate_s": gen}


@dataclasses.dataclass(frozen=True)
class GemmFloor:
    """The K=15 layout's base-weight GEMMs alone: training seconds per evaluation, and the MFU (useful tokens)
    of an evaluation that spent only that."""

    train_s: float
    mfu_useful: float


def gemm_floor_train_s(model: LoadedModel, run: JaxRun, repeats: int) -> float:
    """Seconds the base-weight GEMMs alone (`gemm_floor`: forward + input gradients, loops of 2 passes) take
    for all of `run`'s shared steps: each step shape (tokens per step) timed, × its number of steps."""
    per_rows = {
        rows: timed_median(jax_gemm_pass(model, rows, backward=True, passes=2), repeats)
        for rows in sorted(set(run.level_rows.values()))
    }
    return sum(per_rows[run.level_rows[key]] * count for key, count in run.level_steps.items())


def step_time_model(steps: Sequence[tuple[int, float]]) -> Any:
    """Median step time per padded width; widths never measured are interpolated linearly (least squares)."""
    by_width: dict[int, list[float]] = {}
    for w, dt in steps:
        by_width.setdefault(w, []).append(dt)
    med = {w: median(v) for w, v in by_width.items()}
    if len(med) > 1:
        slope, icpt = np.polyfit(list(med), list(med.values()), 1)
    else:
        ((w0, t0),) = med.items()
        slope, icpt = t0 / w0, 0.0
    return lambda w: med.get(w, float(icpt + slope * w))


# ---------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="same shapes, a few timed steps per adapter, scaled")
    p.add_argument("--passage", type=int, default=0, help="index of the base_val passage (K=15 of its SEs)")
    p.add_argument("--seeds", type=int, default=3, help="inner-loop seeds per self-edit (K = 5 × seeds)")
    p.add_argument("--quick-steps", type=int, default=2, help="--quick: shared steps timed per length level")
    p.add_argument(
        "--sequential",
        type=int,
        default=None,
        help="jobs run one at a time by seal_jax (default: all; --quick: 1)",
    )
    p.add_argument(
        "--fair-ses",
        type=int,
        default=None,
        help="self-edits run by the fair torch loop (default: all; --quick: 1, one epoch)",
    )
    p.add_argument(
        "--ref-steps",
        type=int,
        default=None,
        help="optimizer steps of the reference stack timed (default 3; --quick: 2)",
    )
    p.add_argument(
        "--remat",
        choices=("on", "off"),
        default=None,
        help="override InnerConfig.remat (engine experiment; default: the engine's default)",
    )
    p.add_argument("--loss-chunk", type=int, default=None, help="InnerConfig.loss_chunk (engine experiment)")
    p.add_argument(
        "--saved-matmuls-gb",
        type=float,
        default=None,
        help="InnerConfig.saved_matmuls_gb (0: always recompute)",
    )
    p.add_argument("--skip-torch", action="store_true", help="seal_jax only (engine experiments)")
    p.add_argument(
        "--skip-floor", action="store_true", help="do not time the GEMM floor (benchmarks/gemm_floor)"
    )
    add_dtype_arg(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the faster of 1 and all cores, probed before each "
        "torch phase)",
    )
    args = p.parse_args(argv)
    if args.sequential is None:
        args.sequential = 1 if args.quick else args.seeds * COMPLETIONS
    if args.ref_steps is None:
        args.ref_steps = 2 if args.quick else 3
    if args.fair_ses is None:
        args.fair_ses = 1 if args.quick else args.seeds * COMPLETIONS
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    watch = CompileWatch.get()
    # No host copy of the weights is kept: the torch twin is built from the device copy.
    model = load_model(MODEL, DTYPES[args.dtype])
    cfg, tok = model.config, model.tokenizer
    items, source = load_knowledge_items(1, args.passage)
    item = items[0]
    domain = KnowledgeDomain((), (), eval_max_new_tokens=MAX_NEW)
    jobs = make_jobs(item, domain, args.seeds)
    k = len(jobs)
    overrides = (
        ({"remat": args.remat == "on"} if args.remat else {})
        | ({"loss_chunk": args.loss_chunk} if args.loss_chunk else {})
        | ({"saved_matmuls_gb": args.saved_matmuls_gb} if args.saved_matmuls_gb is not None else {})
    )
    inner = InnerConfig(**overrides)
    full = workload_of(jobs, tok, inner)
    print(
        f"dtype {args.dtype}; InnerConfig: remat={inner.remat}, saved_matmuls_gb={inner.saved_matmuls_gb}, "
        f"loss_chunk={inner.loss_chunk}, length_bucket={inner.length_bucket}, "
        f"step_bucket={inner.step_bucket}"
    )
    print(
        f"workload: {source}; passage {item.passage.title!r}: {len(item.passage.questions)} questions, "
        f"K={k} jobs, sequences per job {[len(ls) for ls in full.lengths]}, "
        f"sequence lengths {min(min(ls) for ls in full.lengths)}–{max(max(ls) for ls in full.lengths)} tokens",
        flush=True,
    )

    peak0, _ = matmul_peak_gflops(dtype=args.dtype)
    print(f"matmul peak ({args.dtype} 2048³ weight_dot, median of 5): {peak0:.0f} GFLOP/s", flush=True)
    per_level = args.quick_steps if args.quick else None
    sampling = sampling_config(tok, max_new=MAX_NEW)

    # 1. K in parallel.
    run_k = run_seal_jax(model, EngineConfig(inner, sampling, chunk_k=k), jobs, per_level)
    rss_k = peak_rss_gb()
    print(
        f"seal_jax chunk_k={k}: calls of {run_k.calls} adapters, {run_k.shared_steps} shared steps; s/step by "
        f"(call, length) { {key: round(t, 2) for key, t in run_k.level_s.items()} }; "
        f"answers {run_k.answer_s_per_job * k:.1f} s for all jobs; {run_k.compiles} compiles in "
        f"{run_k.compile_s:.0f} s; peak RSS {rss_k:.2f} GB",
        flush=True,
    )

    # 2. One adapter at a time. Each phase's peak is the larger of the ones measured just before and after it.
    peak_between, _ = matmul_peak_gflops(dtype=args.dtype)
    seq_jobs = jobs[: args.sequential]
    run_1 = run_seal_jax(model, EngineConfig(inner, sampling, chunk_k=1), seq_jobs, per_level)
    peak_k = max(peak0, peak_between)
    peak_seq = max(peak_between, matmul_peak_gflops(dtype=args.dtype)[0])
    print(
        f"seal_jax K=1: {run_1.shared_steps} steps over {len(seq_jobs)} job(s); s/step by (call, length) "
        f"{ {key: round(t, 2) for key, t in run_1.level_s.items()} }; answers {run_1.answer_s_per_job:.1f} s/job; "
        f"{run_1.compiles} compiles in {run_1.compile_s:.0f} s",
        flush=True,
    )

    scaled = f"{args.quick_steps} step(s) per length timed, × the layout's step counts" if args.quick else ""
    useful = full.real_flops(cfg)
    seq_useful = Workload(full.lengths[: len(seq_jobs)], full.epochs).real_flops(cfg)
    contenders = {
        "k": Contender(
            f"seal_jax Evaluator chunk_k={k}",
            run_k.train_s / k,
            run_k.answer_s_per_job,
            scaled=scaled,
            mfu_useful=useful / run_k.train_s / (peak_k * 1e9),
            mfu_computed=run_k.computed_flops / run_k.train_s / (peak_k * 1e9),
            peak=peak_k,
        ),
        "seq": Contender(
            "seal_jax one adapter at a time (chunk_k=1)",
            run_1.train_s / len(seq_jobs),
            run_1.answer_s_per_job,
            scaled=", ".join(
                x for x in (scaled, f"{len(seq_jobs)}/{k} jobs timed" if len(seq_jobs) < k else "") if x
            ),
            mfu_useful=seq_useful / run_1.train_s / (peak_seq * 1e9),
            mfu_computed=run_1.computed_flops / run_1.train_s / (peak_seq * 1e9),
            peak=peak_seq,
        ),
    }

    if not args.skip_torch:
        torch_model = torch_llama(model, threads=args.threads)

        def threads() -> str:
            if args.threads:
                return f"{args.threads} threads"
            n, secs = pick_torch_threads(torch_model, (1, os.cpu_count() or 1))
            print(
                f"torch threads: {n} ({', '.join(f'{t}: {1e3 * s:.0f} ms' for t, s in secs.items())} "
                "per small forward)",
                flush=True,
            )
            return f"{n} thread(s)"

        # 3. The reference stack, a few steps.
        ref_threads = threads()
        torch_before_ref = torch_matmul_peak_gflops(dtype=args.dtype)
        ref = reference_stack(torch_model, tok, jobs[0], args.ref_steps)
        torch_between = torch_matmul_peak_gflops(dtype=args.dtype)
        peak_ref = max(torch_before_ref, torch_between)
        ref_step = median(ref["step_s"])
        ref_steps_per_job = np.mean([full.steps(j) for j in range(k)])
        n_q = len(jobs[0].queries)
        contenders["ref"] = Contender(
            "reference stack: HF Trainer + PEFT, pad 2048",
            ref_step * ref_steps_per_job,
            n_q * ref["generate_s"],
            setup_s=ref["setup_s"],
            scaled=f"median of {len(ref['step_s'])} steps × {ref_steps_per_job:.0f} steps; "
            f"1 generate × {n_q} questions; torch {ref_threads}",
            mfu_computed=train_flops(cfg, REF_MAX_LENGTH, REF_MAX_LENGTH) / ref_step / (peak_ref * 1e9),
            peak=peak_ref,
        )
        print(
            f"reference: steps {[round(s, 2) for s in ref['step_s']]} s, setup {ref['setup_s']:.1f} s, "
            f"1 generate {ref['generate_s']:.1f} s",
            flush=True,
        )

        # 4. The fair torch loop.
        fair_threads = threads()
        fair_runs = []
        fair_epochs = 1 if args.quick else full.epochs
        for j, job in enumerate(jobs[: args.fair_ses]):
            fair_runs.append(fair_torch(torch_model, tok, job, fair_epochs, answer=True))
            print(
                f"fair torch job {j}: {len(fair_runs[-1]['steps'])} steps, "
                f"generate {fair_runs[-1]['generate_s']:.1f} s",
                flush=True,
            )
        peak_fair = max(torch_between, torch_matmul_peak_gflops(dtype=args.dtype))
        # The first step of the first run also warms torch up: leave it out of the step-time medians.
        steps = [s for r in fair_runs for s in r["steps"]][1:]
        t_of = step_time_model(steps)
        fair_train = np.mean(
            [full.epochs * sum(t_of(round_up(n, FAIR_BUCKET)) for n in ls) for ls in full.lengths]
        )
        fair_flops = sum(
            full.epochs * train_flops(cfg, round_up(n, FAIR_BUCKET), round_up(n, FAIR_BUCKET))
            for ls in full.lengths
            for n in ls
        )
        contenders["fair"] = Contender(
            "fair torch + PEFT loop, pad to 64-bucket",
            fair_train,
            median([r["generate_s"] for r in fair_runs]),
            setup_s=median([r["setup_s"] for r in fair_runs]),
            scaled=(
                f"median step time per width from {len(steps)} steps of {len(fair_runs)} job(s) × "
                f"every job's steps; torch {fair_threads}"
            )
            if len(fair_runs) < k or fair_epochs < full.epochs
            else f"torch {fair_threads}",
            mfu_useful=useful / (fair_train * k) / (peak_fair * 1e9),
            mfu_computed=fair_flops / (fair_train * k) / (peak_fair * 1e9),
            peak=peak_fair,
        )

    # 5. The base-weight GEMMs alone at the K=15 run's step shapes: a bound on what any engine with these
    # kernels could do with this layout.
    # MFU against the larger of the peaks measured around the floor, as the contenders' around their phases.
    peak_before_floor = None if args.skip_floor else matmul_peak_gflops(dtype=args.dtype)[0]
    floor_s = None if args.skip_floor else gemm_floor_train_s(model, run_k, repeats=2 if args.quick else 3)
    peak1, _ = matmul_peak_gflops(dtype=args.dtype)
    floor = None
    if floor_s is not None and peak_before_floor is not None:
        floor = GemmFloor(floor_s / k, useful / floor_s / (max(peak_before_floor, peak1) * 1e9))
    report(args, inner, contenders, full, run_k, run_1, peak0, peak1, rss_k, watch, t_start, k, floor)


def report(
    args: argparse.Namespace,
    inner: InnerConfig,
    contenders: dict[str, Contender],
    full: Workload,
    run_k: JaxRun,
    run_1: JaxRun,
    peak0: float,
    peak1: float,
    rss_k: float,
    watch: CompileWatch,
    t_start: float,
    k: int,
    floor: GemmFloor | None,
) -> None:
    """Prints the comparison table, the token accounting, the GEMM floor, the targets, and the RESULT line."""
    fmt = lambda x: "-" if x is None else f"{100 * x:.1f}%"
    jk, seq = contenders["k"], contenders["seq"]
    ref, fair = contenders.get("ref"), contenders.get("fair")
    rows = [
        [
            c.name,
            f"{c.per_eval_s:.2f}",
            f"{1 / c.per_eval_s:.4f}",
            f"{c.per_eval_s / jk.per_eval_s:.2f}×",
            f"{c.train_s:.2f}",
            f"{c.answer_s:.2f}",
            f"{c.setup_s:.2f}",
            fmt(c.mfu_useful),
            fmt(c.mfu_computed),
            f"{c.peak:.0f}",
            c.scaled or "measured",
        ]
        for c in contenders.values()
    ]
    print()
    print(
        table(
            [
                "contender",
                "s/eval",
                "evals/s",
                "vs K=15",
                "train s",
                "answer s",
                "setup s",
                "MFU useful",
                "MFU computed",
                "peak GFLOP/s",
                "scaling",
            ],
            rows,
        )
    )
    real = full.real_tokens()
    print()
    print(
        table(
            ["training tokens for the 15 evaluations", "tokens", "× real"],
            [
                ["real (sequence lengths)", real, "1.00"],
                [
                    f"seal_jax chunk_k={k} (K × shared steps at their lengths)",
                    run_k.computed_tokens,
                    f"{run_k.computed_tokens / real:.2f}",
                ],
                [
                    "seal_jax chunk_k=1 (each step at its length level)",
                    full.alone_tokens(inner),
                    f"{full.alone_tokens(inner) / real:.2f}",
                ],
                [
                    "fair torch (each sequence to its 64-bucket)",
                    full.fair_tokens(),
                    f"{full.fair_tokens() / real:.2f}",
                ],
                [
                    "reference (each sequence to 2048)",
                    full.reference_tokens(),
                    f"{full.reference_tokens() / real:.2f}",
                ],
            ],
        )
    )
    sp = lambda c: float("nan") if c is None else c.per_eval_s / jk.per_eval_s
    print(
        f"\nMFU is against the matmul peak of the contender's framework, the larger of those measured just before "
        f"and just after its phase (column 'peak'; jnp.dot for seal_jax, torch.mm for torch); jnp.dot peak at "
        f"the start: {peak0:.0f}, at the end: {peak1:.0f} GFLOP/s. Other processes on the machine move these "
        "peaks: compare the peak column before the times."
    )
    print(
        f"compiles: K={k}: {run_k.compiles} ({run_k.compile_s:.0f} s), K=1: {run_1.compiles} "
        f"({run_1.compile_s:.0f} s), during timed runs: {run_k.timed_compiles + run_1.timed_compiles}; "
        f"process total {watch.count} in {watch.seconds:.0f} s"
    )
    print(
        f"peak RSS after the K={k} run: {rss_k:.2f} GB; process peak {peak_rss_gb():.2f} GB; "
        f"wall time {time.perf_counter() - t_start:.0f} s"
    )
    if args.quick:
        print(
            f"--quick: seal_jax timed {args.quick_steps} shared step(s) at each length level of the real layout "
            f"and scaled by the layout's step count per level ({run_k.shared_steps} for K={k}); the reference stack "
            f"ran {args.ref_steps} step(s) of its ~{np.mean([full.steps(j) for j in range(k)]):.0f} per "
            "evaluation and 1 generate; the fair loop ran one epoch of "
            f"{args.fair_ses} self-edit(s). All ratios come from this one run."
        )
    nan = float("nan")
    bound = dict.fromkeys(("ref", "fair", "mfu"), nan)
    if floor is not None:
        # An evaluation made of nothing but the GEMMs, plus seal_jax's measured answer time.
        floor_eval = floor.train_s + jk.answer_s + jk.setup_s
        bound = {
            "ref": nan if ref is None else ref.per_eval_s / floor_eval,
            "fair": nan if fair is None else fair.per_eval_s / floor_eval,
            "mfu": floor.mfu_useful,
        }
        print(
            f"\nGEMM floor (benchmarks/gemm_floor.py): the base-weight matmuls alone, forward + input gradients, "
            f"at the K={k} layout's step shapes ({', '.join(str(r) for r in sorted(set(run_k.level_rows.values())))} "
            f"tokens per step), take {floor.train_s:.2f} s of training per evaluation: "
            f"{100 * floor.train_s / jk.train_s:.0f}% "
            f"of seal_jax's {jk.train_s:.2f} s. An engine doing nothing else, with these kernels and this layout, "
            f"would reach at most {bound['ref']:.1f}× the reference stack, {bound['fair']:.2f}× the fair torch "
            f"loop and {100 * bound['mfu']:.1f}% MFU (useful tokens)."
        )
    checks = [
        ("speedup vs reference stack", sp(ref), TARGET_VS_REFERENCE, "≥", bound["ref"]),
        ("speedup vs fair torch loop", sp(fair), TARGET_VS_FAIR, "≥", bound["fair"]),
        (f"per-eval time K={k} / K=1", jk.per_eval_s / seq.per_eval_s, TARGET_SEQ_RATIO, "≤", nan),
        (f"MFU (useful tokens) at K={k}", jk.mfu_useful, TARGET_MFU, "≥", bound["mfu"]),
        (f"peak RSS at K={k} (GB)", rss_k, TARGET_RSS_GB, "≤", nan),
    ]
    print()
    print(
        table(
            ["target", "measured", "goal", "met", "GEMM-floor bound"],
            [
                [
                    name,
                    f"{v:.3g}",
                    f"{op} {goal:g}",
                    "n/a" if math.isnan(v) else ("yes" if (v >= goal if op == "≥" else v <= goal) else "NO"),
                    "-" if math.isnan(b) else f"{b:.3g}",
                ]
                for name, v, goal, op, b in checks
            ],
        )
    )
    print(
        f"\nRESULT k={k} speedup_vs_reference={sp(ref):.1f} speedup_vs_fair_torch={sp(fair):.2f} "
        f"speedup_vs_sequential={seq.per_eval_s / jk.per_eval_s:.2f} mfu={jk.mfu_useful:.3f} "
        f"peak_rss_gb={rss_k:.2f}"
    )


if __name__ == "__main__":
    main()
