"""Greedy decode throughput: seal_jax `generate_k` (K LoRA adapters × B prompts each, KV cache, one jitted
while_loop) against HF `generate` (PyTorch, the same SmolLM2-135M weights, use_cache=True) at equal total batch.

    .venv/bin/python -m benchmarks.decode --quick       # ~6 min on the shared 2-core box under load
    .venv/bin/python -m benchmarks.decode --batches 16 64 --repeats 5

Both sides decode exactly `--new` tokens per row (EOS disabled, so the work is equal), from the knowledge
domain's closed-book QA prompts. tokens/s = total batch × new tokens / wall time of the whole call (prefill
included), median of `--repeats` timed calls after a warm-up (AOT compile and one untimed call for JAX, a
short generate for torch); the contenders' calls alternate, so load from other processes falls on both alike.
The torch side runs the base model without LoRA, which can only favour it; `--peft` adds HF generate through
PEFT with K adapters in one mixed batch (`adapter_names`), the like-for-like setting. `--dtype bfloat16` gives
both sides bf16 weights (seal_jax: bf16 operands, f32 accumulation and activations; torch: its bf16 model).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import (
    DTYPES,
    CompileWatch,
    add_dtype_arg,
    load_knowledge_items,
    median,
    pick_torch_threads,
    table,
    torch_llama,
)
from benchmarks.gemm_floor import jax_gemm_pass, torch_gemm_pass
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine.sampling import SamplingConfig, generate_k, pad_prompts
from seal_jax.engine.text import encode_prompts
from seal_jax.models.bundle import load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.models.transformer import graphdef_for, init_lora_k

MODEL = "smollm2-135m-instruct"
TARGET_SPEEDUP = 3.0


def qa_prompts(tokenizer: Any, n: int) -> list[list[int]]:
    """`n` closed-book QA prompts (token ids) from the first passages of the workload, cycled if needed."""
    items, _ = load_knowledge_items(20)
    domain = KnowledgeDomain((), ())
    texts = [q.prompt for it in items for q in domain.eval_queries(it.passage)]
    return encode_prompts(tokenizer, [texts[i % len(texts)] for i in range(n)])


def split_batch(total: int, adapters: int | None) -> tuple[int, int]:
    """(K adapters, B prompts per adapter) for a total batch: K = `adapters` or the largest divisor ≤ 16."""
    k = adapters or max(d for d in range(1, min(total, 16) + 1) if total % d == 0)
    if total % k:
        raise ValueError(f"total batch {total} is not a multiple of {k} adapters")
    return k, total // k


def jax_decoder(
    cfg: Any, base: Any, prompts: list[list[int]], k: int, new: int, prompt_bucket: int
) -> tuple[Any, dict[str, Any]]:
    """`generate_k` for K adapters × B prompts (random nonzero LoRAs, r32 q,v), AOT-compiled and warmed up.

    Returns a function that decodes once and returns its seconds, and the compile facts."""
    lora_cfg = LoraConfig()
    graphdef = graphdef_for(cfg, lora_cfg)
    # No EOS: every row decodes `new` tokens.
    sampling = SamplingConfig(max_new=new, eos_ids=(), pad_id=0, prompt_bucket=prompt_bucket)
    lora = init_lora_k(cfg, lora_cfg, jax.random.split(jax.random.key(0), k))
    lora = jax.tree.map(lambda x: x + 0.01, lora)  # B = 0 at init; make the adapters do something
    toks, lens = pad_prompts(prompts, sampling)
    b = len(prompts) // k
    args = (
        base,
        lora,
        jnp.asarray(toks.reshape(k, b, -1)),
        jnp.asarray(lens.reshape(k, b)),
        jax.random.split(jax.random.key(1), k),
    )
    watch = CompileWatch.get()
    c0, s0 = watch.snapshot()
    generate_k.lower(*args, graphdef=graphdef, cfg=sampling).compile()
    c1, s1 = watch.snapshot()

    def run() -> float:
        t0 = time.perf_counter()
        out, n = generate_k(*args, graphdef=graphdef, cfg=sampling)
        jax.block_until_ready(out)
        dt = time.perf_counter() - t0
        if int(np.asarray(n).min()) != new:
            raise RuntimeError("a row stopped early: the comparison needs equal work")
        return dt

    run()  # warm-up, as torch's: a program's first run in a process pays one-time costs
    return run, {"compiles": c1 - c0, "compile_s": s1 - s0, "prompt_width": toks.shape[1]}


def torch_decoder(
    model: Any, prompts: list[list[int]], new: int, adapter_names: list[str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """HF `generate` (greedy, KV cache) on the left-padded batch, exactly `new` tokens per row, warmed up.

    Returns a function that decodes once and returns its seconds, and the prompt width."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    extra = {"adapter_names": adapter_names} if adapter_names else {}

    def generate(n: int) -> Any:
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
                **extra,
            )

    def run() -> float:
        t0 = time.perf_counter()
        out = generate(new)
        dt = time.perf_counter() - t0
        if out.shape[1] != width + new:
            raise RuntimeError(f"torch generated {out.shape[1] - width} tokens, expected {new}")
        return dt

    generate(8)  # warm-up
    return run, {"prompt_width": width}


def interleaved(runs: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Calls each runner `repeats` times, alternating between them, so that load from other processes on a
    shared machine falls on every contender alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    return times


def peft_mixed(model: Any, k: int) -> tuple[Any, list[str]]:
    """The torch model wrapped by PEFT with K LoRA adapters (r32 α64 q,v; random nonzero B)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = PeftLoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, k):
        peft_model.add_adapter(f"a{i}", cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    return peft_model.eval(), [f"a{i}" for i in range(k)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="total batches 16 and 64, 2 timed repeats")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="total batches (K × B)")
    p.add_argument("--adapters", type=int, default=None, help="K (default: largest divisor ≤ 16)")
    p.add_argument("--new", type=int, default=64, help="new tokens per row")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median)")
    p.add_argument(
        "--prompt-bucket",
        type=int,
        default=SamplingConfig.prompt_bucket,
        help=f"SamplingConfig.prompt_bucket for the JAX prompts (engine default {SamplingConfig.prompt_bucket})",
    )
    p.add_argument("--peft", action="store_true", help="also time HF generate with PEFT mixed adapters")
    add_dtype_arg(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the faster of 1 and all cores, probed per batch)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    model = load_model(MODEL, DTYPES[args.dtype])
    cfg, tok, base = model.config, model.tokenizer, model.base
    torch_model = torch_llama(model, threads=args.threads)
    rows, results = [], []
    for total in args.batches:
        k, b = split_batch(total, args.adapters)
        prompts = qa_prompts(tok, total)
        jax_run, j = jax_decoder(cfg, base, prompts, k, args.new, args.prompt_bucket)
        runs = {"jax": jax_run}
        threads = args.threads
        if threads is None:
            threads, secs = pick_torch_threads(torch_model, (1, os.cpu_count() or 1))
            print(
                f"torch threads: {threads} ({', '.join(f'{n}: {1e3 * s:.0f} ms' for n, s in secs.items())} "
                "per small forward)",
                flush=True,
            )
        runs["torch"], t = torch_decoder(torch_model, prompts, args.new)
        if args.peft:
            # A separate twin: PEFT injects its layers in place, and the base contender must stay LoRA-free.
            peft_model, names = peft_mixed(torch_llama(model, threads=threads), k)
            runs["peft"], _ = torch_decoder(
                peft_model, prompts, args.new, [n for n in names for _ in range(b)]
            )
        # The GEMM floor: one pass = one decode step's weight matmuls alone (benchmarks/gemm_floor.py).
        runs["floor_jax"] = jax_gemm_pass(model, total)
        runs["floor_torch"] = torch_gemm_pass(torch_model, total)
        times = interleaved(runs, args.repeats)
        if args.peft:
            del peft_model
        floor = {name: total / median(times.pop(f"floor_{name}")) for name in ("jax", "torch")}
        tps = {name: total * args.new / median(ts) for name, ts in times.items()}
        results.append((total, tps["jax"], tps["torch"], floor["jax"]))
        secs = {name: " ".join(f"{x:.1f}" for x in ts) for name, ts in times.items()}
        rows.append(
            [
                total,
                f"{k}×{b}",
                f"{tps['jax']:.0f}",
                f"{tps['torch']:.0f}",
                f"{tps['jax'] / tps['torch']:.2f}×",
                f"{floor['jax']:.0f} / {floor['torch']:.0f}",
                f"{floor['jax'] / tps['torch']:.2f}× / {floor['torch'] / tps['torch']:.2f}×",
                f"{j['compile_s']:.0f} s ({j['compiles']})",
                f"{j['prompt_width']} / {t['prompt_width']}",
                threads,
                secs["jax"],
                secs["torch"],
            ]
        )
        if args.peft:
            rows.append(
                [
                    total,
                    f"{k}×{b} PEFT mixed",
                    "",
                    f"{tps['peft']:.0f}",
                    f"{tps['jax'] / tps['peft']:.2f}×",
                    "",
                    "",
                    "",
                    "",
                    threads,
                    "",
                    secs["peft"],
                ]
            )
        print(f"total batch {total}: jax {tps['jax']:.0f} tok/s, torch {tps['torch']:.0f} tok/s", flush=True)
    print()
    print(
        table(
            [
                "total batch",
                "K×B",
                "jax tok/s",
                "torch tok/s",
                "speedup",
                "GEMM floor tok/s jax / torch",
                "floor ÷ torch tok/s",
                "jax compile",
                "prompt width j/t",
                "torch threads",
                "jax s",
                "torch s",
            ],
            rows,
        )
    )
    print(
        f"\n{args.new} new tokens per row, greedy, EOS disabled; medians of {args.repeats} timed calls; "
        "torch threads probed per batch, base model without LoRA unless marked PEFT; "
        f"wall time {time.perf_counter() - t_start:.0f} s"
    )
    print(
        "GEMM floor: tokens/s of a decode step that were nothing but its weight matmuls (every layer's q, k, v, "
        "o, gate, up, down and the head, real weights, in a loop of passes), with XLA's kernels (jax) and "
        "torch's (F.linear); no decoder using those kernels can go faster."
    )
    total, tps_j, tps_t, _ = results[-1]
    met = all(tj / tt >= TARGET_SPEEDUP for _, tj, tt, _ in results)
    print(
        f"target ≥ {TARGET_SPEEDUP:g}× HF generate at every total batch: {'met' if met else 'NOT met'} "
        f"({', '.join(f'{n}: {tj / tt:.2f}×' for n, tj, tt, _ in results)}); the GEMM floor allows at most "
        f"{', '.join(f'{n}: {fj / tt:.2f}×' for n, _, tt, fj in results)} with XLA's kernels"
    )
    print(
        f"RESULT decode tokens_per_s_jax={tps_j:.0f} tokens_per_s_torch={tps_t:.0f} speedup={tps_j / tps_t:.2f}"
    )


if __name__ == "__main__":
    main()
