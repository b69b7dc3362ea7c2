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

from seal_jax import experiments, restem
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.domains.knowledge.grading import OpenAIJudge
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
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
    ({"seed": 2**40}, "seed=1099511627776 is out of range"),
    ({"seed": True}, "seed=True must be an integer"),
    ({"workdir": ""}, "workdir is empty"),
    ({"inner__chunk_k": 2**40}, "inner.chunk_k=1099511627776 is out of range"),
    ({"sft__batch_size": -(2**63)}, "sft.batch_size=-9223372036854775808 is out of range"),
    ({"sft__batch_size": 10**12}, "sft.batch_size=1000000000000 is out of range"),
    ({"inner__lora_alpha": float("nan")}, "inner.lora_alpha is NaN"),
    ({"restem__temperature": float("inf")}, "temperature=inf"),
    ({"restem__max_self_edit_tokens": 10**9}, "context length"),
    ({"inner__epochs": 10**20}, "inner.epochs=100000000000000000000 is out of range"),
    ({"inner__epochs": 10**9}, "optimizer steps in total"),
    ({"restem__rounds": 10**9}, "optimizer steps in total"),
    ({"inner__warmup_steps": 10**9}, "inner.warmup_steps is a count"),
    ({"inner__lora_targets": ""}, "inner.lora_targets is empty"),
    ({"sft__lora_targets": " , "}, "sft.lora_targets is empty"),
    ({"inner__max_length": 1}, "inner.max_length=1 leaves no token"),
    ({"sft__max_length": 1}, "sft.max_length=1 leaves no token"),
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
    refused(cfg, "challenges.json: expected a JSON object")


def test_an_arc_max_length_that_would_cut_outputs_is_refused(tmp_path, no_weights):
    from seal_jax import defaults

    cfg = defaults.arc()
    cfg.update(model="tiny-random-llama", workdir=str(tmp_path / "run"))
    cfg.inner.max_length = 1024
    refused(cfg, "inner.max_length=1024 < domain.max_tokens=8192")


def test_a_huge_generate_prompt_is_one_line(tmp_path, no_weights):
    cfg = runpy.run_path(str(REPO / "configs" / "generate.py"))["get_config"]()
    cfg.update(model="tiny-random-llama", prompt="word " * 20_000, workdir=str(tmp_path / "run"))
    refused(cfg, "generate: the longest prompt has")


@pytest.mark.parametrize(
    ("overrides", "logged"),
    [
        ({"inner__max_length": 16}, "are truncated to it"),
        ({"sft__batch_size": 10**9}, "sft.batch_size=1000000000 exceeds the at most 4 examples"),
        ({"inner__batch_size": 10**9}, "inner.batch_size=1000000000 exceeds the at most 31 examples"),
    ],
)
def test_degenerate_but_harmless_settings_are_logged_decisions(
    tmp_path, no_weights, caplog, overrides, logged
):
    with pytest.raises(AssertionError, match="weights were loaded"):  # every check passed
        experiments.dispatch(knowledge_override(tmp_path, **overrides))
    assert logged in caplog.text


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


# The property test: one override of any type on a config whose clean run takes seconds.
PROPERTY_CONFIG = {
    "model": "tiny-random-llama",
    "dtype": "float32",
    "data": {"train_source": "demo", "eval_source": "demo", "num_eval": 1, "num_train": 1},
    "eval": {"baselines": False},  # the run: 1 self-edit sampled, adapted on and graded, no ReST-EM round
    "inner": {"epochs": 1, "chunk_k": 1},
    "restem": {
        "rounds": 0,
        "contexts_per_round": 1,
        "samples_per_context": 1,
        "eval_seeds": 1,
        "max_self_edit_tokens": 4,
        "sample_batch": 1,
    },
    "sft": {"epochs": 1, "batch_size": 1},
}
KEYS = [
    "seed",
    "workdir",
    "dtype",
    "model",
    "writer_model",
    "data.num_eval",
    "data.eval_source",
    "data.selection_seed",
    "domain.prompt",
    "domain.max_sequences",
    "inner.epochs",
    "inner.learning_rate",
    "inner.lora_rank",
    "inner.lora_alpha",
    "inner.lora_targets",
    "inner.max_length",
    "inner.batch_size",
    "inner.chunk_k",
    "inner.warmup_steps",
    "restem.rounds",
    "restem.max_self_edit_tokens",
    "restem.temperature",
    "restem.top_p",
    "restem.sample_batch",
    "restem.selection",
    "sft.batch_size",
    "sft.epochs",
    "sft.learning_rate",
    "sft.max_length",
    "eval.samples",
    "eval.grader",
]
VALUES = [0, 1, 2, -1, -(2**63), 2**63, 10**20, 0.0, -1.0, 1e-30, 1e30, float("nan"), float("inf")]
VALUES += ["", " ", "x", "q,zz", "0", "nan", "1e999", "\x00", "y" * 10_000, True, False]


def base_config(workdir: Path):
    from seal_jax import defaults

    cfg = defaults.knowledge()
    cfg.update_from_flattened_dict(
        {
            f"{section}.{key}" if isinstance(values, dict) else section: value
            for section, values in PROPERTY_CONFIG.items()
            for key, value in (values.items() if isinstance(values, dict) else [(None, values)])
        }
    )
    cfg.workdir = str(workdir)
    return cfg


def cli(cfg, key: str | None = None, value=None) -> int:
    """What `python -m seal_jax.main` does with `--config.<key>=<value>`, in-process: an override the config's
    types reject, or a UserInputError, is exit 2 with one line; anything else propagates (a traceback)."""
    if key is not None:
        try:
            cfg.update_from_flattened_dict({key: value})
        except (TypeError, ValueError, OverflowError):
            return 2
    try:
        experiments.dispatch(cfg)
    except UserInputError as err:
        assert "\n" not in str(err), str(err)
        return 2
    return 0


def test_any_single_override_is_refused_in_one_line_or_passes_every_check(tmp_path, monkeypatch, no_weights):
    """The cheap half of the property, over many more overrides: up to the weights' load (which ends the run)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    monkeypatch.chdir(tmp_path)
    runs = iter(range(10**6))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(KEYS), st.sampled_from(VALUES))
    def check(key, value):
        workdir = tmp_path / f"run{next(runs)}"
        try:
            status = cli(base_config(workdir), key, value)
        except AssertionError as err:
            assert "weights were loaded" in str(err)  # every check passed
            status = 0
        assert status in (0, 2) and not (workdir / "config.json").exists()

    check()


def test_any_single_override_runs_cleanly_or_is_one_line_and_the_fix_then_works(tmp_path, monkeypatch):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    monkeypatch.chdir(tmp_path)  # a relative --config.workdir lands here
    assert cli(base_config(tmp_path / "clean")) == 0  # the corrected command, in a directory no run entered
    runs = iter(range(10**6))

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.sampled_from(KEYS), st.sampled_from(VALUES))
    def check(key, value):
        workdir = tmp_path / f"run{next(runs)}"
        status = cli(base_config(workdir), key, value)
        assert status in (0, 2)
        if status == 2 and workdir.exists():  # it entered the workdir: the corrected command must be accepted
            assert cli(base_config(workdir)) == 0
            assert (workdir / "results.json").exists()
        elif status == 2:  # refused before the workdir: nothing there can refuse the corrected (clean) run
            assert not workdir.exists()

    check()


def test_a_judge_outage_is_counted_in_the_results_and_graded_again_on_resume(tmp_path, monkeypatch, capsys):
    """A tiny run graded by an LLM judge (its HTTP call replaced) that fails every other call: the results count
    the failed verdicts its journal holds, as wrong; the same command, with the judge back, grades them again
    from the journaled answers (nothing is adapted again)."""
    calls, outage = [], [True]

    def request(self, prompt, timeout):
        calls.append(prompt)
        if outage[0] and len(calls) % 2 == 0:  # the first call, the check before any work, is answered
            raise OSError("connection reset by peer")
        return "yes"

    monkeypatch.setattr(OpenAIJudge, "_request", request)
    # The tiny random model's answers are empty, which need no judge: give them text.
    score = KnowledgeDomain.score

    def with_text(self, ctx, queries, outputs):
        return score(self, ctx, queries, [o.strip() or "an answer" for o in outputs])

    monkeypatch.setattr(KnowledgeDomain, "score", with_text)

    def run():
        cfg = base_config(tmp_path / "run")
        cfg.eval.update(grader="judge", judge_retries=0)
        return experiments.dispatch(cfg)

    def journaled():
        paths = sorted((tmp_path / "run" / "journal").glob("*.jsonl"))
        return [r for path in paths for r in Journal(path.parent, path.stem).records.values()]

    first = run()
    verdicts = [v for r in journaled() for v in r.get("verdicts") or ()]
    # a record (one passage's answers) with a failed verdict is graded again whole
    regraded = sum(len(r["verdicts"]) for r in journaled() if restem.grading_failed(r))
    failed = sum(v["source"] == "failed" for v in verdicts)
    judged = sum(v["source"] in ("judge", "failed") for v in verdicts)
    assert first["judge"] == {"judged": judged, "failed": failed} and 0 < failed < judged
    assert not any(v["correct"] for v in verdicts if v["source"] == "failed")
    assert f"judge: no verdict on {failed} of {judged} answers (counted wrong)" in capsys.readouterr().out

    outage[0] = False
    adapted = len(calls)
    second = run()
    assert second["judge"] == {"judged": judged, "failed": 0}
    assert len(calls) - adapted == 1 + regraded  # the check, then the records that had a failed verdict
    verdicts = [v for r in journaled() for v in r.get("verdicts") or ()]
    assert len(verdicts) == judged and all(v["source"] == "judge" and v["correct"] for v in verdicts)


@pytest.mark.parametrize(
    "experiment", ["knowledge_table", "knowledge_replay", "knowledge_cpt", "knowledge_continual", "generate"]
)
def test_writer_model_is_refused_where_no_model_writes_for_another(tmp_path, no_weights, experiment):
    cfg = tiny_config(tmp_path)
    cfg.update(experiment=experiment, writer_model="tiny-random-llama")
    refused(cfg, f"applies to the knowledge and arc experiments, not to {experiment}")


def test_table_cpt_and_continual_results_carry_the_judges_counts(tmp_path):
    from seal_jax.experiments import knowledge

    record = {"key": "r", "answers": ["a", "b"], "verdicts": [{"source": "judge"}, {"source": "failed"}]}
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "table.jsonl").write_text(json.dumps(record) + "\n")
    cfg = base_config(tmp_path)
    result = {}
    assert knowledge.add_judged(cfg, tmp_path, result) == "" and result == {}  # the offline grader
    cfg.eval.grader = "judge"
    assert (
        knowledge.add_judged(cfg, tmp_path, result) == "judge: no verdict on 1 of 2 answers (counted wrong)"
    )
    assert result == {"judge": {"judged": 2, "failed": 1}}
