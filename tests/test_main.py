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
from seal_jax.engine.text import sampling_config
from seal_jax.errors import UserInputError
from seal_jax.experiments import knowledge
from seal_jax.experiments.workdir import open_workdir

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


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.py")))
def test_every_config_loads_through_the_command_line(config):
    """Each config file parses as `--config` (a config built on another must not import an entry point: its
    flags would be defined twice); an unknown key is then one line, exit 2."""
    proc = main("--config", f"configs/{config}", "--config.nonexistent_key=1")
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
    assert not (tmp_path / "run" / "config.json").exists()  # nor recorded: the corrected command may run


def test_rerun_with_a_different_config_over_finished_work_exits_2(tmp_path, config_file):
    workdir = tmp_path / "run"
    cfg = runpy.run_path(str(config_file))["get_config"]()
    cfg.workdir = str(workdir)
    with open_workdir(cfg):  # what the first run records, then its first journal line
        (workdir / "journal").mkdir()
        (workdir / "journal" / "heldout.jsonl").write_text('{"key": "base/x/0/0", "self_edit": null}\n')
    proc = main("--config", str(config_file), f"--config.workdir={workdir}", "--config.seed=1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = last_line(proc.stderr)
    assert line.startswith("error:") and "different config (seed)" in line
    assert json.loads((workdir / "config.json").read_text())["seed"] == 0  # the record is not overwritten


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (None, "cannot load the config file ([Errno 2] No such file"),
        ("def get_config(:\n", "cannot load the config file (SyntaxError"),
        ("def get_config():\n    1 / 0\n", "cannot load the config file (ZeroDivisionError"),
        ("X = 1\n", "defines no get_config()"),
        ("def get_config(x):\n    return None\n", "missing 1 required positional argument"),
        ("def get_config():\n    return None\n", "get_config() returned None"),
        ("def get_config():\n    return {'experiment': 'generate'}\n", "ConfigDict, not dict"),
    ],
)
def test_a_config_file_that_cannot_load_exits_2_with_one_line(tmp_path, content, named):
    path = tmp_path / "config.py"
    if content is not None:
        path.write_text(content)
    proc = main("--config", str(path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr).startswith("error:") and named in last_line(proc.stderr)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("inner.batch_size=0", "batch_size=0"),
        ("inner.length_bucket=0", "length_bucket=0"),
        ("inner.schedule=warm", "schedule must be one of"),
        ("inner.chunk_k=0", "chunk_k=0"),
        ("inner.learning_rate=-1", "learning_rate=-1"),
        ("inner.learning_rate=nan", "learning_rate=nan"),
        ("inner.epochs=0", "epochs=0"),
        ("domain.max_sequences=-1", "max_sequences=-1"),
        ("sft.epochs=0", "epochs=0"),
        ("sft.schedule=warm", "schedule must be one of"),
        ("restem.samples_per_context=0", "samples_per_context=0"),
        ("restem.eval_seeds=0", "eval_seeds=0"),
        ("restem.top_p=0", "top_p=0"),
        ("restem.temperature=-1", "temperature=-1"),
        ("restem.max_self_edit_tokens=0", "max_new=0"),
        ("restem.selection=best", "selection must be"),
        ("mesh.data=3", "does not match"),
        ("inner.lora_rank=0", "bad inner-loop config: LoRA rank"),
        ("inner.lora_alpha=nan", "LoRA alpha"),
        ("eval.seeds=0", "seeds=0"),
        ("eval.samples=0", "samples=0"),
        ("data.num_eval=-1", "num_eval=-1"),
    ],
)
def test_bad_settings_fail_before_any_work_and_leave_no_record(tmp_path, config_file, override, named):
    """In-process (the command line's exit 2 is tested above): one line naming the setting, and nothing in the
    workdir that would block the corrected command."""
    cfg = runpy.run_path(str(config_file))["get_config"]()
    cfg.workdir = str(tmp_path / "run")
    key, value = override.split("=")
    section, field = key.split(".")
    cfg[section][field] = type(cfg[section][field])(value)
    with pytest.raises(UserInputError) as err:
        knowledge.run(cfg)
    assert named in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).count("config:") <= 1  # one prefix, not one per wrapping layer
    assert not (tmp_path / "run" / "config.json").exists()


def test_generate_with_a_bad_setting_exits_2_naming_it():
    proc = main(
        "--config", "configs/generate.py", "--config.model=tiny-random-llama", "--config.max_new_tokens=0"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "max_new=0" in last_line(proc.stderr)


def test_generate_on_the_tiny_model_prints_the_answer(tiny_runtime):
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
    expected = tiny_runtime.sample([prompt], sampling_config(tiny_runtime.tokenizer, max_new=8), seed=0)[0]
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
