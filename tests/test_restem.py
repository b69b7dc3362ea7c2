"""ReST-EM outer loop: a tiny end-to-end run (journal, round checkpoint, exact policy restore), selection, the
journal, Invalid self-edits, and resume after SIGKILL (no evaluation repeated, the same final numbers)."""

from __future__ import annotations

import collections
import json
import os
import runpy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from seal_jax import restem
from seal_jax.domains.knowledge import data
from seal_jax.domains.knowledge.domain import KnowledgeDomain
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.engine.evaluator import AdaptResult, Evaluator
from seal_jax.engine.runtime import Runtime
from seal_jax.engine.sft import SftConfig
from seal_jax.engine.text import sampling_config
from seal_jax.errors import UserInputError
from seal_jax.experiments import common, knowledge
from seal_jax.models.bundle import default_mesh, load_model
from seal_jax.models.lora import LoraConfig
from seal_jax.restem import Item, RestemConfig, evaluate_items, restore_policy, select, stable_seed

REPO = Path(__file__).resolve().parents[1]
DEMO = data.load_demo()

# A tiny knowledge run: 4 demo passages x 2 self-edits x 1 seed in round 0, evaluated in 4 chunks of 2 (so a
# kill can land between chunks), then the M-step, a checkpoint and the held-out SEAL row.
CONFIG = textwrap.dedent("""
    from seal_jax import defaults


    def get_config():
        cfg = defaults.knowledge()
        cfg.model = "tiny-random-llama"
        cfg.data.train_source = cfg.data.eval_source = "demo"
        cfg.data.num_eval = 2
        cfg.data.num_train = 4
        cfg.domain.chat = True
        cfg.domain.max_sequences = 3
        cfg.eval.baselines = False
        cfg.inner.update(epochs=2, chunk_k=2, lora_rank=4, lora_alpha=8.0, learning_rate=0.05, max_length=64)
        cfg.restem.update(rounds=1, contexts_per_round=4, samples_per_context=2, eval_seeds=1,
                          max_self_edit_tokens=24, sample_batch=8)
        cfg.sft.update(batch_size=2, lora_rank=4, lora_alpha=8.0, max_length=1024, remat=False)
        return cfg
""")
CONTEXTS, SAMPLES, SEEDS = 4, 2, 1
EVALS = CONTEXTS * SAMPLES * SEEDS


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def keys_of(path: Path) -> list[str]:
    return [json.loads(ln)["key"] for ln in lines(path)]


def repeated(keys: list[str]) -> list[str]:
    return [k for k, n in collections.Counter(keys).items() if n > 1]


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def journal_records(workdir: Path) -> dict[str, dict[str, dict]]:
    """{file: {key: record}}; asserts every line parses and no key repeats within a file."""
    out = {}
    for path in sorted((workdir / "journal").glob("*.jsonl")):
        records = [json.loads(ln) for ln in lines(path)]
        keys = [r["key"] for r in records]
        assert not repeated(keys), f"{path.name} repeats {repeated(keys)}"
        out[path.name] = {r["key"]: r for r in records}
    return out


def load_config(path: Path, workdir: Path):
    cfg = runpy.run_path(str(path))["get_config"]()
    cfg.workdir = str(workdir)
    return cfg


# ---------------------------------------------------------------- one run through the Python API


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`experiments.knowledge.run` in-process on a fresh workdir; the final policy's weights are copied to the
    host on their way out of `run_restem` (which updates the policy in place). Also the uninterrupted run the
    SIGKILL test compares against."""
    root = tmp_path_factory.mktemp("restem")
    config = root / "tiny_knowledge.py"
    config.write_text(CONFIG)
    cfg = load_config(config, root / "fresh")
    captured = {}

    def spy(policy, *args, **kwargs):
        captured["stats"] = restem.run_restem(policy, *args, **kwargs)
        captured["policy_base"] = leaves(policy.base)
        return captured["stats"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(knowledge, "run_restem", spy)
        results = knowledge.run(cfg)
    return dict(config=config, cfg=cfg, workdir=root / "fresh", results=results, **captured)


def test_round_journals_one_line_per_context_self_edit_seed(reference):
    journal = reference["workdir"] / "journal" / "round_0.jsonl"
    keys = keys_of(journal)
    assert not repeated(keys)
    ids = sorted({k.split("/")[2] for k in keys})
    assert len(ids) == CONTEXTS
    want = {f"round_0/eval/{c}/{i}/{s}" for c in ids for i in range(SAMPLES) for s in range(SEEDS)}
    assert {k for k in keys if "/eval/" in k} == want
    assert {k for k in keys if "/sample/" in k} == {
        f"round_0/sample/{c}/{i}" for c in ids for i in range(SAMPLES)
    }
    assert len(keys) == len(want) + CONTEXTS * SAMPLES
    for rec in map(json.loads, lines(journal)):
        if "/eval/" in rec["key"]:
            _, _, cid, i, s = rec["key"].split("/")
            assert rec["seed"] == stable_seed(0, 0, cid, int(i), int(s))
            assert 0.0 <= rec["reward"] <= 1.0 and rec["final_loss"] > 0 and rec["answers"]


def test_round_checkpoint_restores_the_merged_policy_exactly(reference):
    tiny = common.load(reference["cfg"])  # the run's base weights, in the run's dtype
    initial = leaves(tiny.base)  # a host copy: the merge below donates the base
    ckpt = RoundCheckpoints(reference["workdir"])
    assert ckpt.latest_round() == 1
    _, meta = ckpt.restore(1)
    assert meta["stats"] == reference["stats"][0] == reference["results"]["rounds"][0]
    assert len(meta["kept"]) == CONTEXTS  # best-of-N: one self-edit per context
    assert restore_policy(tiny, ckpt, common.sft_config(reference["cfg"].sft), 1) is None  # in place
    for a, b in zip(leaves(tiny.base), reference["policy_base"], strict=True):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(initial, reference["policy_base"], strict=True)]
    assert any(changed)  # the M-step changed the policy


def test_results_carry_the_held_out_rows_with_intervals(reference):
    results, workdir = reference["results"], reference["workdir"]
    (row,) = results["table"]  # baselines off: the SEAL row alone
    (with_ci,) = results["intervals"]["table"]
    assert (with_ci["method"], with_ci["passages"]) == (row["method"], 2)
    assert with_ci["accuracy"] == pytest.approx(row["accuracy"])
    assert with_ci["ci95"][0] <= with_ci["accuracy"] <= with_ci["ci95"][1]
    assert f"| {row['method']} |" in (workdir / "results.md").read_text()


def test_rerun_of_a_finished_run_does_no_new_work(reference):
    before = {p.name: p.read_text() for p in (reference["workdir"] / "journal").glob("*.jsonl")}

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run recomputed something")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Evaluator, "run_chunk", forbidden)
        mp.setattr(Runtime, "sample", forbidden)
        mp.setattr(restem, "sft", forbidden)
        again = knowledge.run(reference["cfg"])
    assert again == reference["results"]
    assert {p.name: p.read_text() for p in (reference["workdir"] / "journal").glob("*.jsonl")} == before


# ---------------------------------------------------------------- selection


def test_best_of_n_keeps_first_of_ties_and_has_no_threshold():
    rewards = {
        ("a", 0): 0.2,
        ("a", 1): 0.5,
        ("a", 2): 0.5,
        ("b", 0): 0.0,
        ("b", 1): 0.0,
        ("c", 0): -0.1,
        ("c", 1): 0.3,
    }
    assert select(rewards, RestemConfig(selection="best_of_n")) == [("a", 1), ("b", 0), ("c", 1)]


def test_all_positive_keeps_every_positive_reward():
    rewards = {("a", 0): 0.2, ("a", 1): 0.0, ("b", 0): -0.5, ("b", 1): 1e-9, ("c", 0): 0.0}
    assert select(rewards, RestemConfig(selection="all_positive")) == [("a", 0), ("b", 1)]
    with pytest.raises(ValueError, match="selection"):
        RestemConfig(selection="top_k")


# ---------------------------------------------------------------- journal


def test_journal_drops_a_torn_last_line_and_appends_cleanly(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v": 2}\n{"key": "c", "v"')
    j = Journal(tmp_path, "j")
    assert set(j.records) == {"a", "b"} and "c" not in j
    j.write({"key": "c", "v": 3})
    assert [json.loads(ln)["key"] for ln in lines(path)] == ["a", "b", "c"]  # every line parses
    assert Journal(tmp_path, "j").get("c") == {"key": "c", "v": 3}


@pytest.mark.parametrize(
    "content",
    [
        '{"key": "a"}\n{"key": \n{"key": "b"}\n',  # a corrupt middle line
        '{"key": "a"}\n[1, 2]\n',  # a whole last line that is no record: a kill never leaves a newline after it
    ],
)
def test_journal_rejects_a_corrupted_line(tmp_path, content):
    (tmp_path / "j.jsonl").write_text(content)
    with pytest.raises(UserInputError, match="corrupted"):
        Journal(tmp_path, "j")


# ---------------------------------------------------------------- evaluate_items without a model


class StubEvaluator:
    """Duck-types the Evaluator: one chunk holding every job; answers "x"; counts compiled calls."""

    def __init__(self):
        self.calls = 0
        self.jobs = []

    def plan(self, jobs):
        return [list(range(len(jobs)))] if jobs else []

    def run_chunk(self, jobs):
        self.calls += 1
        self.jobs += jobs
        return [AdaptResult(["x"] * len(j.queries), [1.5], False) for j in jobs]


def items(domain, texts):
    return [
        Item(f"round_0/eval/{c.id}/{i}/0", c, t, domain.parse_self_edit(c, t), i)
        for i, (c, t) in enumerate(zip(DEMO, texts, strict=False))
    ]


def test_invalid_self_edit_is_journaled_with_reward_zero_and_reason(tmp_path):
    domain = KnowledgeDomain(tuple(DEMO[:2]), ())
    its = items(domain, ["  \n ", "Implications:\nSomething true."])
    stub = StubEvaluator()
    records = evaluate_items(stub, domain, its, Journal(tmp_path, "r"), "test")
    bad = records[its[0].key]
    assert bad["reward"] == 0.0 and bad["invalid"] == "empty self-edit" and bad["self_edit"] == "  \n "
    assert "invalid" not in records[its[1].key] and records[its[1].key]["final_loss"] == 1.5
    assert stub.calls == 1  # only the valid one was adapted
    assert sorted(keys_of(tmp_path / "r.jsonl")) == sorted(it.key for it in its)


def test_each_seed_of_a_self_edit_trains_on_its_own_order_stream(tmp_path):
    """The held-out and round items give seed s of every self-edit the data-order stream s."""
    from seal_jax.experiments import heldout

    domain = KnowledgeDomain((), tuple(DEMO[:2]))
    stub = StubEvaluator()
    heldout.evaluate_fixed(
        "passage", stub, domain, DEMO[:2], domain.passage_only_self_edit, 3, Journal(tmp_path, "h"), 0
    )
    streams = collections.defaultdict(set)
    for job in stub.jobs:
        streams[job.examples].add(job.order_stream)
    assert len(stub.jobs) == 6 and all(s == {0, 1, 2} for s in streams.values()), streams


def test_a_journal_record_of_another_self_edit_text_is_refused(tmp_path):
    """E.g. a replay whose self-edit file was edited between two runs in one workdir: its old rewards are stale."""
    domain = KnowledgeDomain(tuple(DEMO[:1]), ())
    evaluate_items(StubEvaluator(), domain, items(domain, ["One fact."]), Journal(tmp_path, "r"), "test")
    with pytest.raises(UserInputError, match="another self-edit text"):
        evaluate_items(StubEvaluator(), domain, items(domain, ["Another fact."]), Journal(tmp_path, "r"), "t")


def test_a_non_finite_m_step_keeps_the_policy_and_checkpoints_the_round(tmp_path, tiny):
    """An SFT learning rate that overflows the adapter: the round is logged and saved, the policy unchanged."""
    initial = leaves(tiny.base)
    cfg = RestemConfig(
        rounds=1,
        contexts_per_round=2,
        samples_per_context=1,
        eval_seeds=1,
        sampling=sampling_config(tiny.tokenizer, max_new=8, temperature=1.0),
        sample_batch=2,
        sft=SftConfig(lora=LoraConfig(4, 8.0, ("q", "v")), learning_rate=1e30, batch_size=2),
    )
    domain = KnowledgeDomain(tuple(DEMO[:2]), ())
    samples = Journal(tmp_path / "journal", "round_0")  # the self-edits, as if sampled before a kill
    for c in DEMO[:2]:
        samples.write({"key": f"round_0/sample/{c.id}/0", "context": c.id, "sample": 0, "text": "A fact."})
    policy = Runtime(load_model("tiny-random-llama"), default_mesh())  # its own base: merges donate it
    stats = restem.run_restem(policy, domain, StubEvaluator(), cfg, str(tmp_path), {})
    assert stats[0]["kept"] == 2 and "non-finite" in stats[0]["sft_error"]
    assert all(np.array_equal(a, b) for a, b in zip(leaves(policy.base), initial, strict=True))
    checkpoints = RoundCheckpoints(tmp_path)
    assert checkpoints.latest_round() == 1 and checkpoints.restore(1)[1]["stats"] == stats[0]
    restored = Runtime(load_model("tiny-random-llama"), default_mesh())
    restore_policy(restored, checkpoints, cfg.sft, 1)  # merges the round's no-op adapter
    assert all(np.array_equal(a, b) for a, b in zip(leaves(restored.base), initial, strict=True))


def test_resume_of_a_partly_journaled_chunk_repeats_no_key(tmp_path):
    """A kill between two journal writes of one chunk: the rerun recomputes the chunk but must not append
    the keys the journal already holds."""
    domain = KnowledgeDomain(tuple(DEMO[:3]), ())
    its = items(domain, ["One fact.", "Two facts.", "Three facts."])
    evaluate_items(StubEvaluator(), domain, its, Journal(tmp_path, "r"), "test")
    path = tmp_path / "r.jsonl"
    path.write_text(lines(path)[0] + "\n")  # killed after the chunk's first write
    stub = StubEvaluator()
    evaluate_items(stub, domain, its, Journal(tmp_path, "r"), "test")
    assert stub.calls == 1
    keys = keys_of(path)
    assert not repeated(keys), f"keys journaled twice: {repeated(keys)}"
    assert sorted(keys) == sorted(it.key for it in its)
    stub = StubEvaluator()
    evaluate_items(stub, domain, its, Journal(tmp_path, "r"), "test")
    assert stub.calls == 0  # a fully journaled chunk is skipped


def test_resume_of_a_partly_journaled_sample_batch_repeats_no_key(tmp_path, monkeypatch, tiny_runtime):
    calls = []

    def fake_sample(self, prompts, cfg, seed, grammar=None):
        calls.append(len(prompts))
        return [f"self-edit {seed} {i}" for i in range(len(prompts))]

    monkeypatch.setattr(Runtime, "sample", fake_sample)
    domain = KnowledgeDomain(tuple(DEMO[:2]), ())
    args = (tiny_runtime, domain, DEMO[:2], 2, sampling_config(tiny_runtime.tokenizer))
    first = restem.sample_self_edits(*args, Journal(tmp_path, "s"), "round_0", 0, 4)
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines(path)[:2]) + "\n")
    again = restem.sample_self_edits(*args, Journal(tmp_path, "s"), "round_0", 0, 4)
    assert again == first and calls == [4, 4]
    keys = keys_of(path)
    assert not repeated(keys), f"keys journaled twice: {repeated(keys)}"
    assert sorted(keys) == sorted({f"round_0/sample/{c.id}/{i}" for c in DEMO[:2] for i in range(2)})


# ---------------------------------------------------------------- resume after SIGKILL (subprocess)


def command(config: Path, workdir: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "seal_jax.main",
        "--config",
        str(config),
        f"--config.workdir={workdir}",
        f"--config.compilation_cache_dir={cache}",
    ]


def eval_lines(workdir: Path) -> int:
    path = workdir / "journal" / "round_0.jsonl"
    if not path.exists():
        return 0
    return sum('"round_0/eval/' in ln for ln in path.read_text().splitlines())


def test_resume_after_sigkill_repeats_nothing_and_matches_an_uninterrupted_run(reference, tmp_path):
    cache = tmp_path / "jax_cache"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed = tmp_path / "killed"
    cmd = command(reference["config"], killed, cache)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while eval_lines(killed) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert running, "the run ended before it could be killed mid-round"
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = eval_lines(killed)
    assert 0 < done_at_kill < EVALS and not (killed / "results.json").exists()

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = journal_records(killed), journal_records(reference["workdir"])
    assert sum(k.startswith("round_0/eval/") for k in got["round_0.jsonl"]) == EVALS
    assert got == want  # every evaluation: same self-edit, seed, answers and loss as the uninterrupted run
    results = json.loads((killed / "results.json").read_text())
    assert results == json.loads((reference["workdir"] / "results.json").read_text())
    assert results["rounds"][0]["kept"] == CONTEXTS and len(results["rounds"][0]["sft_loss_first_last"]) == 2


class ScriptedPolicy:
    """Duck-types `Runtime.sample`: hands out `replies` in order, one per prompt; records each call's seed."""

    def __init__(self, replies):
        self.replies, self.seeds = list(replies), []

    def sample(self, prompts, cfg, seed, grammar=None):
        self.seeds.append(seed)
        return [self.replies.pop(0) for _ in prompts]


@pytest.mark.parametrize("attempts", [1, 3])
def test_unparseable_self_edits_are_resampled_up_to_the_cap(tmp_path, attempts):
    """Empty knowledge self-edits do not parse: each is resampled until it parses or `attempts` samples were
    drawn; the journal keeps the attempts and the rejected reasons, and the invalid rate counts every draw."""
    domain = KnowledgeDomain(tuple(DEMO[:2]), ())
    policy = ScriptedPolicy(["", "First fact.", " ", "Second fact.", "", "never used"])
    journal = Journal(tmp_path, "r")
    texts = restem.sample_self_edits(policy, domain, DEMO[:2], 1, None, journal, "t", 0, 2, attempts)
    keys = [f"t/sample/{c.id}/0" for c in DEMO[:2]]
    if attempts == 1:
        assert list(texts.values()) == ["", "First fact."] and len(policy.seeds) == 1
        assert restem.sampling_stats(journal, keys, invalid=1) == {"sample_attempts": 2, "invalid_rate": 0.5}
        return
    # batch 1: "" and "First fact."; attempt 2 redraws the first: " "; attempt 3 redraws it again: "Second fact."
    assert texts == {(DEMO[0].id, 0): "Second fact.", (DEMO[1].id, 0): "First fact."}
    assert len(set(policy.seeds)) == 3
    assert (
        journal.get(keys[0])["attempts"] == 3 and journal.get(keys[0])["rejected"] == ["empty self-edit"] * 2
    )
    assert restem.sampling_stats(journal, keys, invalid=0) == {"sample_attempts": 4, "invalid_rate": 0.5}
