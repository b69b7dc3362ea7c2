"""Bad input, second pass: every setting or file that can be checked is refused before the weights load and before
the workdir is entered; a failure that only shows mid-run is one line and never leaves the workdir refusing the
corrected command; degenerate settings are errors or logged decisions.

Most tests call the drivers in-process with the weights' loader replaced by one that fails the test, so "refused
before the weights load" is what is asserted.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from seal_jax import experiments
from seal_jax.domains.knowledge import data
from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.errors import UserInputError
from seal_jax.experiments import checks, common
from seal_jax.experiments.workdir import FAILED, open_workdir
from tests.test_main import CONFIG, REPO, last_line, main


def tiny_config(tmp_path: Path, name: str = "tiny.py"):
    path = tmp_path / name
    path.write_text(CONFIG)
    cfg = runpy.run_path(str(path))["get_config"]()
    cfg.workdir = str(tmp_path / "run")
    return cfg


@pytest.fixture
def no_weights(monkeypatch):
    """The weights' loader fails the test: whatever is refused must be refused before it."""

    def load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the bad input was found")

    monkeypatch.setattr(common, "load", load)


def refused(cfg, match: str) -> str:
    with pytest.raises(UserInputError, match=match) as err:
        experiments.dispatch(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert not (Path(cfg.workdir) / "config.json").exists()  # the workdir was never entered
    return message


def write_passages(path: Path, context: str, question: str = "Who?", answer: str = "Otrar") -> Path:
    item = {"title": "T", "context": context, "questions": [{"question": question, "answer": answer}]}
    path.write_text(json.dumps([item, {**item, "context": context + " More."}, {**item, "title": "U"}]))
    return path


def knowledge_override(tmp_path: Path, **overrides):
    cfg = tiny_config(tmp_path)
    for key, value in overrides.items():
        section, _, leaf = key.rpartition("__")
        target = cfg[section] if section else cfg
        target[leaf] = value
    return cfg


# (override (section__key), error text): settings refused before any work (each ran, crashed or ran forever).
BAD_SETTINGS = [
    ({"seed": -1}, "seed=-1 must be an integer"),
    ({"seed": 2**40}, "seed=1099511627776 must be an integer"),
    ({"workdir": ""}, "workdir is empty"),
    ({"restem__max_self_edit_tokens": 10**9}, "context length"),
    ({"inner__epochs": 10**20}, "optimizer steps in total"),
    ({"restem__rounds": 10**12}, "optimizer steps in total"),
    ({"inner__lora_targets": ""}, "inner.lora_targets is empty"),
    ({"sft__lora_targets": " , "}, "sft.lora_targets is empty"),
    ({"inner__max_length": 1}, "inner.max_length=1 leaves no token"),
    ({"sft__max_length": 1}, "sft.max_length=1 leaves no token"),
    ({"sft__batch_size": 10**12}, "sft.batch_size=1000000000000 rows"),
    ({"inner__batch_size": 10**12}, "inner.batch_size=1000000000000 rows"),
    ({"eval__judge_timeout_s": 0.0, "eval__grader": "judge"}, "timeout_s=0.0"),
    ({"eval__judge_api": "grpc", "eval__grader": "judge"}, "judge api='grpc'"),
]


@pytest.mark.parametrize(("overrides", "match"), BAD_SETTINGS, ids=[str(o) for o, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_before_the_weights_load(tmp_path, no_weights, overrides, match):
    refused(knowledge_override(tmp_path, **overrides), match)


def test_an_empty_workdir_writes_nothing_into_the_current_directory(tmp_path, monkeypatch, no_weights):
    monkeypatch.chdir(tmp_path)
    cfg = knowledge_override(tmp_path, workdir="")
    with pytest.raises(UserInputError, match="workdir is empty"):
        experiments.dispatch(cfg)
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.py"]


def test_a_sampling_batch_beyond_memory_is_refused():
    from seal_jax.models.config import tiny_config as model_config
    from seal_jax.models.tiny import byte_tokenizer

    spec = checks.ModelSpec(model_config(num_layers=4096, max_position_embeddings=10**9), byte_tokenizer())
    checks.check_prompts("sampling", spec, ["a prompt"], 1000, 2)
    with pytest.raises(UserInputError, match="GiB of cache"):
        checks.check_prompts("sampling", spec, ["a prompt"] * 4, 10**7, 4)


def test_a_config_without_an_experiment_is_one_line():
    with pytest.raises(UserInputError, match="no 'experiment' key"):
        experiments.dispatch(ml_collections.ConfigDict({"seed": 0}))


def test_a_config_file_without_an_experiment_exits_2(tmp_path):
    path = tmp_path / "no_experiment.py"
    path.write_text(
        "import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'seed': 0})\n"
    )
    proc = main("--config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no 'experiment' key" in last_line(proc.stderr)


@pytest.mark.parametrize(
    ("context", "match"),
    [("x" * 1_000_000, "context length"), ("   ", "'context' is empty")],
    ids=["1 MB passage", "empty passage"],
)
def test_bad_passages_are_refused_before_the_weights_load(tmp_path, no_weights, context, match):
    path = write_passages(tmp_path / "passages.json", context)
    refused(knowledge_override(tmp_path, data__train_source=str(path), data__eval_source=str(path)), match)


def test_a_data_file_whose_strings_are_all_empty_is_refused(tmp_path, no_weights):
    path = write_passages(tmp_path / "empty.json", "", question="", answer="")
    refused(knowledge_override(tmp_path, data__train_source=str(path), data__eval_source=str(path)), "empty")


def test_empty_questions_and_answers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'answer' is empty"):
        data.load_json(write_passages(tmp_path / "a.json", "A passage.", answer=" "))
    with pytest.raises(ValueError, match="'question' is empty"):
        data.load_json(write_passages(tmp_path / "q.json", "A passage.", question=""))


def test_a_truncated_gguf_is_one_line_before_any_work(tmp_path, no_weights):
    from seal_jax.models.loading import embedded_gguf_path

    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(embedded_gguf_path("smollm2-135m-instruct").read_bytes()[:200])
    refused(knowledge_override(tmp_path, model=str(truncated)), "cannot read")


def test_malformed_replay_files_are_refused_before_the_weights_load(tmp_path, no_weights):
    (tmp_path / "base_val.json").write_text('[{"title": "t", "context": "c", "questions": []}]')
    cfg = knowledge_override(tmp_path, experiment="knowledge_replay")
    cfg.replay.update(directory=str(tmp_path), names="base")
    refused(cfg, "non-empty list")


def test_a_malformed_arc_task_file_is_refused_before_the_weights_load(tmp_path, no_weights):
    from seal_jax import defaults

    challenges = tmp_path / "challenges.json"
    challenges.write_text('{"t1": {"train": [], "test": [{"input": [[1, 2], [3]]}]}}')
    cfg = defaults.arc()
    cfg.update(model="tiny-random-llama", workdir=str(tmp_path / "run"))
    cfg.data.update(source="kaggle", challenges=str(challenges), eval_challenges=str(challenges))
    refused(cfg, "")


def test_a_huge_generate_prompt_is_one_line(tmp_path, no_weights):
    cfg = runpy.run_path(str(REPO / "configs" / "generate.py"))["get_config"]()
    cfg.update(model="tiny-random-llama", prompt="word " * 20_000, workdir=str(tmp_path / "run"))
    refused(cfg, "generate: the longest prompt has")


def test_training_texts_longer_than_max_length_are_logged_as_truncated(tmp_path, no_weights, caplog):
    cfg = knowledge_override(tmp_path, inner__max_length=16)
    with pytest.raises(AssertionError, match="weights were loaded"):  # every check passed
        experiments.dispatch(cfg)
    assert "are truncated to it" in caplog.text


def test_a_checkpoint_deleted_from_the_middle_of_a_run_is_one_line(tmp_path):
    checkpoints = RoundCheckpoints(tmp_path)
    state = {"w": np.ones(2, np.float32)}
    for r in (1, 2, 3):
        checkpoints.save(r, state, jnp.zeros(2, jnp.uint32), {"stats": {}})
    for path in (tmp_path / "checkpoints" / "3").rglob("*"):
        if path.is_file() and path.suffix != ".json":
            path.unlink()  # a damaged last round
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "2")
    with pytest.raises(UserInputError, match=r"has round 3 but not rounds \[2\]"):
        RoundCheckpoints(tmp_path).latest_round()
    with pytest.raises(UserInputError, match=r"checkpoint of round 3 .* cannot be read"):
        RoundCheckpoints(tmp_path).restore(3)


def record_work(workdir: Path) -> None:
    (workdir / "journal").mkdir(exist_ok=True)
    (workdir / "journal" / "heldout.jsonl").write_text('{"key": "base/x/0/0", "reward": 1.0}\n')


@pytest.mark.parametrize(
    ("failure", "named"),
    [
        (PermissionError(30, "Read-only file system"), "cannot write in"),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 29316026878696 bytes."), "out of memory"),
        (UserInputError("a bad self-edit file"), "a bad self-edit file"),
    ],
    ids=["read-only", "out of memory", "late bad input"],
)
def test_a_run_failing_on_its_settings_does_not_lock_the_workdir(tmp_path, caplog, failure, named):
    cfg = tiny_config(tmp_path)
    workdir = Path(cfg.workdir)
    with pytest.raises(UserInputError, match=named) as err, open_workdir(cfg):
        record_work(workdir)
        raise failure
    assert "\n" not in str(err.value) and (workdir / FAILED).exists()
    cfg.restem.sample_batch = 1  # the corrected command
    with open_workdir(cfg):
        assert not (workdir / "journal").exists()  # it starts anew ...
    assert (workdir / "failed_runs" / "1" / "journal" / "heldout.jsonl").exists()  # ... the work is kept
    assert not (workdir / FAILED).exists() and "failed on its settings" in caplog.text
    assert json.loads((workdir / "config.json").read_text())["restem"]["sample_batch"] == 1


def test_a_bug_mid_run_keeps_its_traceback_and_the_workdir_still_refuses_changes(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(KeyError), open_workdir(cfg):
        record_work(Path(cfg.workdir))
        raise KeyError("a bug")
    cfg.seed = 1
    with pytest.raises(UserInputError, match="different config"), open_workdir(cfg):
        pass


def test_the_same_config_resumes_after_a_failure_and_clears_it(tmp_path):
    cfg = tiny_config(tmp_path)
    workdir = Path(cfg.workdir)
    with pytest.raises(UserInputError), open_workdir(cfg):
        record_work(workdir)
        raise MemoryError()
    with open_workdir(cfg):
        assert (workdir / "journal" / "heldout.jsonl").exists()  # resumed, not set aside
    assert not (workdir / FAILED).exists()
