"""`python -m seal_jax.sweep`: a 2-point sweep on the tiny model writes its table, and a rerun resumes it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seal_jax import defaults, sweep
from seal_jax.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
SWEEP = textwrap.dedent("""
    from seal_jax import defaults, sweep


    def get_config():
        cfg = defaults.knowledge()
        cfg.model = "tiny-random-llama"
        cfg.data.train_source = cfg.data.eval_source = "demo"
        cfg.data.num_eval = 2
        cfg.data.num_train = 2
        cfg.eval.baselines = False
        cfg.inner.epochs = 1
        cfg.restem.update(rounds=0, max_self_edit_tokens=16, sample_batch=4)
        return cfg


    def get_sweep():
        return sweep.product(**{"inner.learning_rate": [1e-3, 3e-2]})
""")


def run_sweep(config: Path, workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seal_jax.sweep", "--config", str(config), f"--config.workdir={workdir}"],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_product_and_zipped_and_names():
    points = sweep.product(**{"inner.learning_rate": [1e-3, 3e-3], "inner.lora_rank": [4, 8]})
    assert points[1] == {"inner.learning_rate": 1e-3, "inner.lora_rank": 8} and len(points) == 4
    assert sweep.zipped(a=[1, 2], b=["x", "y"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(UserInputError, match="different lengths"):
        sweep.zipped(a=[1, 2], b=[1])
    assert sweep.point_name(points[1]) == "inner.learning_rate=0.001,inner.lora_rank=8"
    assert sweep.point_name({"model": "org/name"}) == "model=org_name"


def test_bad_points_are_one_line_errors():
    base = defaults.knowledge()
    with pytest.raises(UserInputError, match="not a config value"):
        sweep.check_configs(base, [{"inner.no_such_key": 1}])
    with pytest.raises(UserInputError, match="learning_rate"):
        sweep.check_configs(base, [{"inner.learning_rate": "fast"}])
    with pytest.raises(UserInputError, match="repeat"):
        sweep.check_points([{"seed": 1}, {"seed": 1}])
    with pytest.raises(UserInputError, match="no points"):
        sweep.check_points([])


def test_tiny_sweep_writes_its_table_and_resumes(tmp_path):
    config = tmp_path / "tiny_sweep.py"
    config.write_text(SWEEP)
    workdir = tmp_path / "sweep"
    proc = run_sweep(config, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["inner.learning_rate=0.001", "inner.learning_rate=0.03"]
    results = [json.loads((workdir / n / "results.json").read_text()) for n in names]
    rows = list(csv.reader((workdir / "sweep.csv").open()))
    assert rows[0] == ["inner.learning_rate", "SEAL (0 rounds) (%)", "status"]
    assert [r[0] for r in rows[1:]] == ["0.001", "0.03"]
    assert [float(r[1]) for r in rows[1:]] == [round(100 * r["table"][0]["accuracy"], 1) for r in results]
    assert "| 0.03 |" in (workdir / "sweep.md").read_text()
    assert (workdir / "sweep.png").stat().st_size > 0
    # the two points trained with different learning rates on the same self-edits
    journals = [(workdir / n / "journal" / "heldout.jsonl").read_text().splitlines() for n in names]
    evals = [[json.loads(line) for line in j if "/sample/" not in line] for j in journals]
    assert [r["self_edit"] for r in evals[0]] == [r["self_edit"] for r in evals[1]]
    assert [r["final_loss"] for r in evals[0]] != [r["final_loss"] for r in evals[1]]

    # resume: the first point is finished (skipped); the second lost its results.json and part of its journal
    first_mtime = (workdir / names[0] / "results.json").stat().st_mtime_ns
    (workdir / names[1] / "results.json").unlink()
    (workdir / names[1] / "journal" / "heldout.jsonl").write_text("\n".join(journals[1][:-1]) + "\n")
    proc = run_sweep(config, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep point 1/2 inner.learning_rate=0.001: finished earlier" in proc.stderr
    assert (workdir / names[0] / "results.json").stat().st_mtime_ns == first_mtime
    assert json.loads((workdir / names[1] / "results.json").read_text()) == results[1]
    assert (workdir / names[1] / "journal" / "heldout.jsonl").read_text().splitlines() == journals[1]
    assert list(csv.reader((workdir / "sweep.csv").open())) == rows
