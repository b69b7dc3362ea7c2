"""The command line: bad input exits 2 with a one-line message; the generate experiment runs; data sources."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seal_jax.domains.knowledge import data
from seal_jax.engine.text import generate_texts, sampling_config
from seal_jax.experiments import common, knowledge

REPO = Path(__file__).resolve().parents[1]
CONFIG = textwrap.dedent("""
    from seal_jax import defaults


    def get_config():
        cfg = defaults.knowledge()
        cfg.model = "tiny-random-llama"
        cfg.data.train_source = cfg.data.eval_source = "demo"
        cfg.data.num_eval = 2
        cfg.data.num_train = 2
        cfg.restem.update(rounds=1, contexts_per_round=2, samples_per_context=2, eval_seeds=1,
                          max_self_edit_tokens=16, sample_batch=4)
        return cfg
""")


def main(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "seal_jax.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "tiny_knowledge.py"
    path.write_text(CONFIG)
    return path


def test_unknown_config_key_exits_2_with_one_line(tmp_path):
    proc = main("--config", "configs/generate.py", "--config.nonexistent_key=1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr).startswith("error:") and "nonexistent_key" in last_line(proc.stderr)


def test_malformed_eval_json_exits_2_naming_the_file(tmp_path, config_file):
    bad = tmp_path / "squad_broken.json"
    bad.write_text('[{"title": "t", "context": ')
    proc = main(
        "--config",
        str(config_file),
        f"--config.workdir={tmp_path / 'run'}",
        f"--config.data.eval_source={bad}",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith("error:") and str(bad) in line


@pytest.mark.parametrize(
    ("override", "named"),
    [("sft.saved_matmuls_gb=-1", "saved_matmuls_gb"), ("inner.plan_call_cost=-1", "call_cost")],
)
def test_bad_engine_setting_exits_2_before_any_work(tmp_path, config_file, override, named):
    proc = main("--config", str(config_file), f"--config.workdir={tmp_path / 'run'}", f"--config.{override}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith("error:") and named in line
    assert not (tmp_path / "run" / "journal").exists()  # nothing was evaluated


def test_rerun_with_a_different_config_in_the_same_workdir_exits_2(tmp_path, config_file):
    workdir = tmp_path / "run"
    cfg = runpy.run_path(str(config_file))["get_config"]()
    cfg.workdir = str(workdir)
    common.prepare_workdir(cfg)  # what the first run records
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0
    proc = main("--config", str(config_file), f"--config.workdir={workdir}", "--config.seed=1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = last_line(proc.stderr)
    assert line.startswith("error:") and "different config" in line and "seed" in line
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0  # the record is not overwritten


def test_generate_on_the_tiny_model_prints_the_answer(tiny):
    prompt = "The capital of France is"
    proc = main(
        "--config",
        "configs/generate.py",
        "--config.model=tiny-random-llama",
        f"--config.prompt={prompt}",
        "--config.chat=False",
        "--config.max_new_tokens=8",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = generate_texts(
        tiny.tokenizer, tiny.graphdef(), tiny.base, None, [prompt], sampling_config(tiny.tokenizer, max_new=8)
    )[0]
    assert expected and proc.stdout.strip().splitlines()[-1] == expected


# ---------------------------------------------------------------- knowledge data sources (config -> passages)


def knowledge_cfg(config_file: Path, **data_overrides):
    cfg = runpy.run_path(str(config_file))["get_config"]()
    cfg.data.update(data_overrides)
    return cfg


def write_pool(path: Path, n: int = 12) -> Path:
    items = [
        {
            "title": f"T{i}",
            "context": f"Passage number {i}.",
            "questions": [{"question": "Q?", "answer": "A"}],
        }
        for i in range(n)
    ]
    path.write_text(json.dumps(items))
    return path


def test_one_json_file_for_train_and_eval_gives_disjoint_passages(tmp_path, config_file):
    """With the default splits ("train" / "validation"), which a JSON file ignores, the two selections must
    still be disjoint slices of the one pool (no training on held-out passages)."""
    pool = write_pool(tmp_path / "pool.json")
    cfg = knowledge_cfg(config_file, train_source=str(pool), eval_source=str(pool), num_train=4, num_eval=4)
    train, evals = knowledge.passages(cfg)
    assert len(train) == len(evals) == 4
    assert not {p.id for p in train} & {p.id for p in evals}


def test_demo_train_source_with_a_json_eval_source_trains_on_demo(tmp_path, config_file):
    pool = write_pool(tmp_path / "pool.json")
    cfg = knowledge_cfg(config_file, train_source="demo", eval_source=str(pool), num_train=3, num_eval=3)
    train, evals = knowledge.passages(cfg)
    assert {p.id for p in evals} <= {p.id for p in data.load_json(pool)}
    assert {p.id for p in train} <= {p.id for p in data.load_demo()}
