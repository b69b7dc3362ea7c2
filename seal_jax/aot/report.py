"""One round's programs: build the static setting from a config, compile them for a topology, search `chunk_k`,
estimate times, and print the table (last line machine-readable)."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
from jax.sharding import Mesh

from seal_jax.aot import costs
from seal_jax.aot.chips import GIB, Chip, chip_of, topology_devices
from seal_jax.aot.programs import (
    Compiled,
    Setting,
    base_bytes_per_device,
    compile_adapt,
    compile_answer,
    compile_finetune,
    compile_merge,
    compile_sample,
    compile_sft,
)
from seal_jax.aot.shapes import default_shapes, sft_steps
from seal_jax.engine.finetune import FinetuneConfig
from seal_jax.engine.inner import remat_policy
from seal_jax.engine.sampling import SamplingConfig
from seal_jax.errors import UserInputError
from seal_jax.experiments import common
from seal_jax.experiments.common import DTYPES, inner_config, sft_config
from seal_jax.models.bundle import abstract_base
from seal_jax.models.known import model_config


def setting(cfg: Any, mesh: Mesh | None, overrides: dict[str, str]) -> Setting:
    """The static settings of `cfg`'s round (model shapes from the shipped config.json, no weights)."""
    shapes = default_shapes(cfg).replace(overrides)
    sft = sft_config(cfg.sft)
    r = cfg.restem
    return Setting(
        model=model_config(cfg.model),
        dtype=DTYPES[cfg.dtype],
        mesh=mesh,
        inner=inner_config(cfg.inner, int(cfg.seed)),
        sft=sft.inner(),
        sample=SamplingConfig(
            max_new=int(r.max_self_edit_tokens), temperature=float(r.temperature), top_p=float(r.top_p)
        ),
        answer=SamplingConfig(max_new=shapes.answer_max_new),
        shapes=shapes,
        sft_steps=sft_steps(shapes.sft_pairs, sft.batch_size, sft.epochs),
    )


# ------------------------------------------------------------------------------------------------ work per call


def _full_remat(s: Setting, tokens: int, cfg_inner: Any) -> bool:
    return remat_policy(abstract_base(s.model, s.dtype), tokens, cfg_inner) == "full"


def call_work(s: Setting, k: int) -> dict[str, tuple[int, costs.Work]]:
    """Program -> (calls per round, work of one call) at chunk size `k`."""
    sh, m = s.shapes, s.model
    wb = jnp.dtype(s.dtype).itemsize
    sample_ctx = sh.sample_prompt + s.sample.max_new
    sample = (
        costs.forward(m, None, sh.sample_rows * sh.sample_prompt, sh.sample_prompt, wb)
        + costs.decode_step(m, None, sh.sample_rows, sample_ctx, 0, wb) * sh.sample_decode
    )
    tokens = k * sh.adapt_batch * sh.adapt_tokens
    full = _full_remat(s, k * sh.adapt_batch * max(sh.adapt_lengths), s.inner)
    adapt = costs.train_step(m, s.inner.lora, tokens, sh.adapt_tokens, k, full, wb) * sh.adapt_real_steps
    rows = k * sh.answer_rows
    answer = (
        costs.forward(m, s.inner.lora, rows * sh.answer_prompt, sh.answer_prompt, wb)
        + costs.decode_step(m, s.inner.lora, rows, sh.answer_prompt + s.answer.max_new, k, wb)
        * sh.answer_decode
    )
    sft_rows = min(s.sft.batch_size, sh.sft_pairs)
    sft_full = _full_remat(s, sft_rows * sh.sft_length, s.sft)
    sft = (
        costs.train_step(m, s.sft.lora, sft_rows * sh.sft_length, sh.sft_length, 1, sft_full, wb)
        * s.sft_steps
    )
    merge = costs.Work(0.0, 2.0 * costs.weight_params(m) * wb)  # read and write the adapted weights
    calls = math.ceil(sh.adaptations / k)
    return {
        "sample": (math.ceil(sh.samples / sh.sample_rows), sample),
        "adapt": (calls, adapt),
        "answer": (calls, answer),
        "M-step": (1, sft),
        "merge": (1, merge),
    }


def round_seconds(work: dict[str, tuple[int, costs.Work]], chip: Chip, chips: int) -> dict[str, float]:
    return {name: n * costs.seconds(w, chip, chips) for name, (n, w) in work.items()}


# ------------------------------------------------------------------------------------------------ chunk_k search


def search_k(
    compile_at: Callable[[int], list[Compiled]],
    k0: int,
    step: int,
    budget: int,
    limit: int,
    log: Callable,
    checks: int = 3,
) -> tuple[int, dict[int, list[Compiled]]]:
    """The largest multiple of `step` (≤ `limit`) whose programs' peaks fit `budget`, found with at most
    2 + `checks` compiles: at `step` and `k0`, then at the K a line through the two nearest known points (the
    largest K that fits and the smallest that does not) puts at the budget. Peaks grow faster than linearly in
    K at scale (Qwen2.5-7B on a v5e-8: 3.97 GiB at K=1, 5.12 at 15, 17.75 at 127), so a guess past the bound
    becomes the upper end of the bracket instead of being stepped down one K at a time. Returns (the largest K
    that compiled within budget, or 0; compiles by K)."""
    seen: dict[int, list[Compiled]] = {}

    def peak(k: int) -> int:
        if k not in seen:
            t = time.time()
            seen[k] = compile_at(k)
            log(
                f"compiled K={k}: peak {max(c.peak for c in seen[k]) / GIB:.2f} GiB ({time.time() - t:.0f} s)"
            )
        return max(c.peak for c in seen[k])

    def on_line(a: int, b: int) -> int:
        """The K at which the line through (a, peak a) and (b, peak b) meets the budget (a < b)."""
        slope = (peak(b) - peak(a)) / (b - a)
        return limit if slope <= 0 else a + int((budget - peak(a)) / slope)

    hi = min(limit, max(k0, 2 * step)) // step * step
    if peak(step) > budget:
        return 0, seen
    fit, over = (hi, None) if peak(hi) <= budget else (step, hi)
    for _ in range(checks):
        if over is None:
            guess = on_line(step, fit) if fit > step else limit
            guess = min(limit, guess) // step * step
        else:
            guess = min(max(on_line(fit, over), fit + step), over - step) // step * step
        if guess <= fit or (over is not None and over - fit <= step):
            break
        if peak(guess) <= budget:
            fit = guess
        else:
            over = guess
    return fit, seen


# ------------------------------------------------------------------------------------------------ printing


def _gb(n: float) -> str:
    return f"{n / GIB:7.2f}"


def print_table(rows: list[tuple[Compiled, int, float, costs.Work]], chip: Chip) -> None:
    head = "program        args_GiB  out_GiB temp_GiB code_GiB peak_GiB  %HBM  calls  s/call  round_s  TFLOP/call"
    print(head + "  xla_TFLOP(loop bodies once)")
    for c, calls, sec, work in rows:
        print(
            f"{c.name:13s} {_gb(c.argument)}  {_gb(c.output)}  {_gb(c.temp)}  {_gb(c.code)}  {_gb(c.peak)} "
            f"{100 * c.peak / chip.hbm_bytes:5.1f} {calls:6d} {sec / calls:7.2f} {sec:8.1f} {work.flops / 1e12:11.1f}"
            f"  {c.xla_flops / 1e12:.3g}"
        )


def run(
    cfg: Any, topology: str, overrides: dict[str, str], search: bool, headroom: float, json_path: str = ""
) -> None:
    """Compiles the round for `topology` and prints the table; the last line is the `AOT ...` summary.
    `json_path`: also write the per-program figures (bytes per device, seconds per round) there."""
    chip = chip_of(topology)  # an unknown name fails here, before libtpu is asked for it
    devices = topology_devices(topology)
    mesh = common.mesh(cfg, devices)
    s = setting(cfg, mesh, overrides)
    budget = int(chip.hbm_bytes * (1 - headroom))
    data = mesh.shape["data"]
    k_cfg = -(-int(cfg.inner.chunk_k) // data) * data  # the runtime pads chunk_k to a multiple of `data`
    print(f"# {cfg.model} on {topology}: {len(devices)} x {devices[0].device_kind}, mesh {dict(mesh.shape)}")
    print(f"# shapes: {dataclasses.asdict(s.shapes)}")
    print(
        f"# base weights per device: {base_bytes_per_device(s) / GIB:.2f} GiB; budget {budget / GIB:.2f} GiB"
    )

    def log(msg: str) -> None:
        print(f"# {msg}", flush=True)

    fixed = []
    for build in (compile_sample, compile_sft, compile_merge):
        t = time.time()
        fixed.append(build(s))
        log(f"compiled {fixed[-1].name}: peak {fixed[-1].peak / GIB:.2f} GiB ({time.time() - t:.0f} s)")

    def at(k: int) -> list[Compiled]:
        return [compile_adapt(s, k), compile_answer(s, k)]

    if search:
        k, seen = search_k(at, k_cfg, data, budget, s.shapes.adaptations, log)
    else:
        seen = {k_cfg: at(k_cfg)}
        k = k_cfg if max(c.peak for c in seen[k_cfg]) <= budget else 0
    shown = k or min(seen)
    work = call_work(s, shown)
    secs = round_seconds(work, chip, len(devices))
    sample, sft, merge = fixed
    adapt, answer = seen[shown]
    rows = [
        (c, work[key][0], secs[key], work[key][1])
        for c, key in (
            (sample, "sample"),
            (adapt, "adapt"),
            (answer, "answer"),
            (sft, "M-step"),
            (merge, "merge"),
        )
    ]
    print_table(rows, chip)
    peak = max(c.peak for c, *_ in rows)
    minutes = sum(secs.values()) / 60
    print(
        f"# round at chunk_k={shown}: {minutes:.1f} min (roofline lower bound, costs.py); K peaks: "
        + ", ".join(f"K={kk} {max(c.peak for c in v) / GIB:.2f} GiB" for kk, v in sorted(seen.items()))
    )
    if json_path:
        record = {
            "topology": topology,
            "base_bytes_per_device": base_bytes_per_device(s),
            "hbm_bytes": chip.hbm_bytes,
            "chunk_k": k,
            "round_seconds": secs,
            "programs": [
                {**dataclasses.asdict(c), "peak": c.peak, "calls": n, "seconds": t} for c, n, t, _ in rows
            ],
        }
        Path(json_path).write_text(json.dumps(record, indent=1))
    print(
        f"AOT topology={topology} fits={'yes' if peak <= budget and k else 'no'} peak_hbm_gb={peak / GIB:.2f} "
        f"hbm_gb={chip.hbm_bytes / GIB:.0f} round_minutes={minutes:.1f} chunk_k={k}"
    )


def full_finetune(cfg: Any, topology: str, headroom: float) -> None:
    """Compiles CPT's full fine-tuning step (`cfg.cpt`, mode "full") for `topology` and prints its per-device
    memory; the last line is `AOT-FT topology=<t> fits=<yes|no> peak_hbm_gb=<x> hbm_gb=<y>`."""
    from seal_jax.experiments.cpt import training_config

    ft = training_config(cfg.cpt)
    if not isinstance(ft, FinetuneConfig):
        raise UserInputError("--finetune compiles full fine-tuning: add --config.cpt.mode=full")
    chip = chip_of(topology)
    devices = topology_devices(topology)
    mesh = common.mesh(cfg, devices)
    s = setting(cfg, mesh, {})
    print(f"# {cfg.model} on {topology}: {len(devices)} x {devices[0].device_kind}, mesh {dict(mesh.shape)}")
    print(f"# {ft}")
    c = compile_finetune(s, ft, int(cfg.cpt.max_length))
    print(
        f"{c.name} per device: args {c.argument / 2**20:.1f} MiB, out {c.output / 2**20:.1f}, temp "
        f"{c.temp / 2**20:.1f}, peak {c.peak / 2**20:.1f} MiB ({100 * c.peak / chip.hbm_bytes:.1f}% of HBM)"
    )
    fits = c.peak <= chip.hbm_bytes * (1 - headroom)
    print(
        f"AOT-FT topology={topology} fits={'yes' if fits else 'no'} peak_hbm_gb={c.peak / GIB:.2f} "
        f"hbm_gb={chip.hbm_bytes / GIB:.0f}"
    )


def analytic(cfg: Any, chip_name: str, chips: int, overrides: dict[str, str]) -> None:
    """Times only (no compile), on `chips` of `chip_name`, at the config's chunk_k: e.g. a GPU estimate."""
    from seal_jax.aot.chips import CHIPS

    s = setting(cfg, None, overrides)
    k = int(cfg.inner.chunk_k)
    work = call_work(s, k)
    secs = round_seconds(work, CHIPS[chip_name], chips)
    print(f"# {cfg.model} on {chips} x {CHIPS[chip_name].name}: analytic only, NOT compiled; chunk_k={k}")
    for name, (calls, w) in work.items():
        print(
            f"{name:8s} calls {calls:4d}  s/call {secs[name] / calls:8.2f}  round_s {secs[name]:8.1f}"
            f"  TFLOP/call {w.flops / 1e12:9.1f}"
        )
    print(f"ANALYTIC chip={chip_name} chips={chips} round_minutes={sum(secs.values()) / 60:.1f} chunk_k={k}")
