"""Helpers shared by the benchmark scripts: timing, matmul peak, compile counting, memory, the PyTorch twin of
our SmolLM2 weights, the knowledge workload, and a plain-text table printer.

Nothing here is imported by the library; torch is imported lazily, only by the functions that need it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seal_jax.experiments.common import DTYPES
from seal_jax.models.bundle import LoadedModel
from seal_jax.models.config import ModelConfig
from seal_jax.models.transformer import weight_dot

REPO = Path(__file__).resolve().parents[1]
# The reference's real data (a directory with knowledge/ and arc/), optional: see reference_path.
REFERENCE_ENV = "SEAL_REFERENCE_DATA"
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def reference_path(*parts: str) -> Path | None:
    """`$SEAL_REFERENCE_DATA/<parts>`, or None when the variable is unset."""
    root = os.environ.get(REFERENCE_ENV)
    return Path(root, *parts) if root else None


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds); JAX outputs are blocked on before the clock stops."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def add_dtype_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="float32",
        help="base weights and matmul operands of every contender (bfloat16: the reference's precision; "
        "seal_jax accumulates in f32, torch runs its bf16 model); peaks are measured in the same dtype",
    )


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> tuple[float, list[float]]:
    """Median GFLOP/s of the model's jitted `weight_dot` on two n×n `dtype` matrices (2·n³ FLOPs; bf16 operands
    accumulate in f32), after one warm-up call."""
    a = jax.random.normal(jax.random.key(0), (n, n), DTYPES[dtype])
    b = jax.random.normal(jax.random.key(1), (n, n), DTYPES[dtype])
    dot = jax.jit(weight_dot)
    dot(a, b).block_until_ready()
    rates = []
    for _ in range(repeats):
        _, dt = timed(lambda: dot(a, b))
        rates.append(2 * n**3 / dt / 1e9)
    return median(rates), rates


def torch_matmul_peak_gflops(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """The same measurement with `torch.mm` (its own thread pool suffers differently from load on the machine)."""
    import torch

    a, b = (torch.randn(n, n).to(getattr(torch, dtype)) for _ in range(2))
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return median(rates)


def peak_rss_gb() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class CompileWatch:
    """Counts XLA backend compilations and their wall time through `jax.monitoring` (one listener per process).

    Read `count` / `seconds` before and after a phase and subtract (see `snapshot`).
    """

    _instance: CompileWatch | None = None

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    @classmethod
    def get(cls) -> CompileWatch:
        if cls._instance is None:
            cls._instance = cls()
            jax.monitoring.register_event_duration_secs_listener(cls._instance._listen)
        return cls._instance

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event == COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def snapshot(self) -> tuple[int, float]:
        return self.count, self.seconds


# ------------------------------------------------------------------------------------------- FLOP accounting


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: all decoder projections plus the output head (the
    embedding lookup is free; with tied embeddings the head is the same matrix, counted once)."""
    d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    per_layer = d * cfg.q_dim + 2 * d * cfg.kv_dim + cfg.q_dim * d + 3 * d * f
    return layers * per_layer + d * cfg.vocab_size


def train_flops(cfg: ModelConfig, tokens: float, seq_len: float) -> float:
    """FLOPs of LoRA training on `tokens` tokens of sequences `seq_len` long (forward + backward).

    Forward = 2·N per token; with a frozen base the backward needs only the input gradients (another 2·N), not
    the weight gradients, so 4·N per token (the LoRA matrices' own FLOPs are <1% and left out). Attention
    scores and values: 4·T·q_dim per token per layer forward (the full T×T block the kernels compute), ×3 with
    its backward.
    """
    attention = 3 * 4 * seq_len * cfg.q_dim * cfg.num_layers
    return tokens * (4 * matmul_params(cfg) + attention)


# -------------------------------------------------------------------------------------------------- PyTorch


def torch_llama(model: LoadedModel, threads: int | None = None) -> Any:
    """A `transformers.LlamaForCausalLM` (eval mode, in the dtype of `model`'s weights) holding exactly
    `model`'s weights (tied head).

    The weights come from the device copy, so a benchmark holds no second host copy of them."""
    import torch
    import transformers

    from seal_jax.models.loading import params_to_hf

    if threads:
        torch.set_num_threads(threads)
    config = transformers.LlamaConfig(**model.config.to_hf_dict())
    nested = model.base.to_pure_dict()
    flat = {
        jax.tree_util.keystr(path, simple=True, separator="/"): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(nested)
    }
    with torch.device("meta"):
        torch_model = transformers.LlamaForCausalLM(config)
    state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in params_to_hf(flat).items()}
    missing, unexpected = torch_model.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weight conversion failed: missing {missing}, unexpected {unexpected}")
    torch_model.tie_weights()
    rotary = torch_model.model.rotary_emb
    torch_model.model.rotary_emb = type(rotary)(config=config)  # buffers were created on meta
    dtype = getattr(torch, str(model.base["embed"].dtype))
    return torch_model.to(dtype).eval()


def pick_torch_threads(model: Any, candidates: Sequence[int] = (1, 2), repeats: int = 5) -> tuple[int, dict]:
    """Sets torch's intra-op threads to whichever of `candidates` runs a small forward ([4, 32] tokens, the
    regime of decoding and short training steps) fastest right now, and returns (threads, {threads: seconds}).

    On a machine shared with other busy processes, torch's OpenMP regions stall whenever one of their threads
    is descheduled (we saw HF generate 20× slower with 2 threads than it ran minutes earlier); letting torch
    run with the faster setting keeps the comparison conservative for seal_jax.
    """
    import torch

    ids = torch.randint(3, 1000, (4, 32))
    seconds = {}
    for n in candidates:
        torch.set_num_threads(n)
        with torch.no_grad():
            model(input_ids=ids)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(input_ids=ids)
                times.append(time.perf_counter() - t0)
        seconds[n] = median(times)
    best = min(seconds, key=seconds.get)
    torch.set_num_threads(best)
    return best, seconds


# -------------------------------------------------------------------------------------------------- workload


@dataclasses.dataclass(frozen=True)
class KnowledgeItem:
    """One SQuAD passage with its questions and stored self-edit completions."""

    passage: Any  # seal_jax.domains.knowledge.data.Passage
    completions: tuple[str, ...]


def load_knowledge_items(n: int, offset: int = 0) -> tuple[list[KnowledgeItem], str]:
    """`n` real passages with the reference's base-model self-edits (`$SEAL_REFERENCE_DATA/knowledge/
    self_edits/base_val.json`), or the bundled demo passages with self-edits made from their own sentences when
    that file is absent. Returns (items, source)."""
    from seal_jax.domains.knowledge.data import QA, load_demo, make_passage

    base_val = reference_path("knowledge", "self_edits", "base_val.json")
    if base_val is not None and base_val.is_file():
        rows = json.loads(base_val.read_text())[offset : offset + n]
        items = [
            KnowledgeItem(
                make_passage(
                    r["title"], r["context"], [QA(q["question"], q["answer"]) for q in r["questions"]]
                ),
                tuple(r["completions"]),
            )
            for r in rows
        ]
        return (
            items,
            f"{base_val.name} (reference base-model self-edits), passages {offset}..{offset + n - 1}",
        )
    items = []
    for p in load_demo()[offset : offset + n]:
        sentences = [s.strip() + "." for s in p.context.split(". ") if s.strip()]
        completions = tuple(
            "\n".join(f"{i + 1}. {s}" for i, s in enumerate(sentences[j:] + sentences[:j])) for j in range(5)
        )
        items.append(KnowledgeItem(p, completions))
    return items, "bundled demo set; self-edits = the passage's own sentences as numbered lines (rotated ×5)"


# ---------------------------------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep, *(fmt(r) for r in cells[1:])])
