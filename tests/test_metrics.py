"""A run's metrics.jsonl and TensorBoard events; library INFO logs stay out of stderr; the grid's rows."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

from tensorboardX.proto import event_pb2

from seal_jax.metrics import summarise_curves

REPO = Path(__file__).resolve().parents[1]
CONFIG = textwrap.dedent("""
    from seal_jax import defaults


    def get_config():
        cfg = defaults.knowledge()
        cfg.model = "tiny-random-llama"
        cfg.data.train_source = cfg.data.eval_source = "demo"
        cfg.data.num_eval = 2
        cfg.data.num_train = 2
        cfg.eval.baselines = False
        cfg.eval.inner_grid = "learning_rate=1e-2,3e-2"
        cfg.inner.epochs = 2
        cfg.restem.update(rounds=1, contexts_per_round=2, samples_per_context=2, eval_seeds=1,
                          max_self_edit_tokens=16, sample_batch=4)
        return cfg
""")


def read_events(path: Path) -> list[event_pb2.Event]:
    """The records of a TFRecord event file: length (u64), its CRC, the bytes, their CRC."""
    data, events, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length]))
        pos += 12 + length + 4
    return events


def test_summarise_curves_per_step_over_the_adapters_that_reach_it():
    out = summarise_curves([[3.0, 2.0, 1.0], [5.0, 4.0], [1.0]])
    assert out == {"mean": [3.0, 3.0, 1.0], "min": [1.0, 2.0, 1.0], "max": [5.0, 4.0, 1.0]}
    assert summarise_curves([]) == {"mean": [], "min": [], "max": []}


def test_tiny_run_writes_metrics_and_events_and_no_library_info(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(CONFIG)
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "seal_jax.main", "--config", str(config), f"--config.workdir={workdir}"],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "checkpoints" / "1").is_dir()  # Orbax saved a round ...
    info = [line for line in proc.stderr.splitlines() if line.startswith("I") and ".py:" in line]
    assert info and not [line for line in info if "orbax" in line or "checkpoint" in line]  # ... silently
    assert any("restem.py" in line and "round 1:" in line for line in info)  # the round line stays

    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    round_, heldout = lines
    for key in (
        "reward_mean",
        "reward_best",
        "invalid_rate",
        "invalid_after_resampling",
        "self_edit_words",
        "time_sample_s",
        "time_adapt_s",
        "time_answer_s",
        "time_sft_s",
        "time_merge_s",
        "evals_per_s",
        "compile_s",
    ):
        assert isinstance(round_[key], float), key
    assert round_["round"] == 1 and round_["evaluations"] == 4 and round_["compile_s"] > 0
    assert round_["sample_attempts"] >= 4  # each of the 2 contexts × 2 self-edits is drawn at least once
    curves = [round_[f"inner_loss_{k}"] for k in ("mean", "min", "max")]
    assert len(set(map(len, curves))) == 1 and curves[0]
    assert all(lo <= m <= hi for lo, m, hi in zip(curves[1], curves[0], curves[2], strict=True))
    assert round_["sft_loss"] and all(isinstance(v, float) for v in round_["sft_loss"])

    # the in-call grid: one held-out row per setting besides the run's own
    results = json.loads((workdir / "results.json").read_text())
    assert round_["invalid_rate"] == results["rounds"][0]["invalid_rate"]  # the drawn samples', as the stats
    methods = [row["method"] for row in results["table"]]
    assert methods == [
        "SEAL (1 round)",
        "SEAL (1 round) [learning_rate=0.01]",
        "SEAL (1 round) [learning_rate=0.03]",
    ]
    assert set(heldout) == {f"heldout/{m}" for m in methods}

    (event_file,) = (workdir / "tensorboard").glob("events.out.tfevents.*")
    scalars = {(v.tag, e.step): v.simple_value for e in read_events(event_file) for v in e.summary.value}
    assert abs(scalars["reward_mean", 1] - round_["reward_mean"]) < 1e-6
    assert abs(scalars["round_1/sft_loss", 0] - round_["sft_loss"][0]) < 1e-5
    assert len([k for k in scalars if k[0] == "round_1/inner_loss_mean"]) == len(curves[0])
