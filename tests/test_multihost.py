"""Several processes as one run: data moves between host and global arrays, only process 0 writes files while
every process knows what they say, and a lost peer ends the others with a one-line error.

The multi-process tests run real 2-process runtimes on 127.0.0.1 (tests/multihost.py). To tell "process 1 learnt
it from process 0" from "process 1 read the file itself", process 1 is pointed at a directory that does not exist:
it must still see process 0's records and verdicts and must create nothing there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from seal_jax.engine import distributed
from seal_jax.engine.checkpoint import RoundCheckpoints
from seal_jax.errors import UserInputError
from tests.multihost import PRELUDE, REPO, launch, run_script

# -- single process: cfg.distributed --------------------------------------------------------------------------

GOOD = {"mode": "explicit", "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}


def test_settings_default_to_one_process_and_explicit_ones_are_kept():
    assert distributed.parse_settings({}) == distributed.Settings(mode="off")
    assert distributed.parse_settings(GOOD) == distributed.Settings(**GOOD)
    assert distributed.parse_settings({"mode": "auto"}).mode == "auto"


@pytest.mark.parametrize(
    "override, named",
    [
        ({"mode": "on"}, "distributed.mode='on'"),
        ({"mode": True}, "distributed.mode=True"),
        ({"coordinator_address": ""}, "distributed.coordinator_address=''"),
        ({"coordinator_address": "10.0.0.1"}, "must be host:port"),
        ({"coordinator_address": "10.0.0.1:http"}, "must be host:port"),
        ({"process_id": 4}, r"distributed.process_id=4 must be an integer in \[0, 4\)"),
        ({"process_id": -1}, "distributed.process_id=-1"),
        ({"num_processes": 0}, "distributed.num_processes=0 must be an integer >= 1"),
        ({"heartbeat_timeout": 0}, "distributed.heartbeat_timeout=0"),
        ({"initialization_timeout": 1.5}, "distributed.initialization_timeout=1.5"),
        ({"process_count": 2}, "unknown distributed setting"),
    ],
)
def test_bad_distributed_settings_are_one_line_user_errors(override, named):
    with pytest.raises(UserInputError, match=named) as err:
        distributed.parse_settings(GOOD | override)
    assert "\n" not in str(err.value)


def test_one_process_needs_no_runtime_and_writes_as_primary():
    assert distributed.initialize({"mode": "off"}).mode == "off"
    assert distributed.is_primary() and distributed.process_count() == 1
    assert distributed.broadcast_json({"a": [1]}) == {"a": [1]}
    assert distributed.on_primary(lambda: 5) == 5


@pytest.mark.parametrize(
    "override, named",
    [
        ("--config.distributed.mode=explicit", "distributed.coordinator_address=''"),
        ("--config.distributed=True", "--config.distributed=True"),  # the boolean of earlier versions
    ],
)
def test_main_exits_2_with_one_line_on_a_bad_distributed_setting(tmp_path, override, named):
    config = tmp_path / "c.py"
    config.write_text("from seal_jax import defaults\n\ndef get_config():\n    return defaults.knowledge()\n")
    done = subprocess.run(
        [sys.executable, "-m", "seal_jax.main", f"--config={config}", override],
        cwd=REPO,
        env={"JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last


# -- two processes ----------------------------------------------------------------------------------------------

ARRAYS = """
import json

import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from seal_jax.engine.distributed import _process_block

checks = {"count": distributed.process_count(), "primary": distributed.is_primary()}
checks["broadcast"] = distributed.broadcast_json({"from": jax.process_index(), "items": list(range(300)), "s": "é"})
host = np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4)  # the same on every process
for shape in [(8, 1, 1), (4, 2, 1)]:
    mesh = jax.make_mesh(shape, ("data", "fsdp", "tensor"))
    for spec in [P("data"), P("data", "fsdp"), P(("data", "fsdp")), P()]:
        sharding = NamedSharding(mesh, spec)
        x = distributed.global_array(host, sharding)
        doubled = jax.jit(lambda a: 2 * a, out_shardings=sharding)(x)
        block = _process_block(host.shape, sharding)
        checks[f"block {shape} {spec}"] = [b.indices(n)[:2] for b, n in zip(block, host.shape)]
        checks[f"{shape} {spec}"] = [
            x.is_fully_addressable,
            all(np.array_equal(np.asarray(s.data), host[s.index]) for s in x.addressable_shards),
            np.array_equal(distributed.to_host(x), host),
            np.array_equal(distributed.to_host(doubled), 2 * host),
        ]
distributed.barrier("arrays done")
print("RESULT", json.dumps(checks))
"""


def results(outcomes) -> list:
    """The JSON each process printed after "RESULT "."""
    assert [o.returncode for o in outcomes] == [0, 0], "\n".join(o.stderr[-3000:] for o in outcomes)
    return [json.loads(o.stdout.split("RESULT ", 1)[1]) for o in outcomes]


def test_broadcast_and_host_global_round_trips_on_two_processes(tmp_path):
    first, second = results(run_script(ARRAYS, tmp_path))
    assert first["count"] == second["count"] == 2
    assert (first["primary"], second["primary"]) == (True, False)
    assert first["broadcast"] == second["broadcast"] == {"from": 0, "items": list(range(300)), "s": "é"}
    layouts = [k for k in first if k.startswith("(")]
    assert len(layouts) == 8
    for key in layouts:  # spans both processes, each shard is its block, and the host sees the whole array
        assert first[key] == second[key] == [False, True, True, True], key
    # each process passes only the rows (and, split over fsdp, the columns) its devices hold
    for layout in ["(8, 1, 1) P('data',)", "(4, 2, 1) P('data', 'fsdp')"]:
        assert first[f"block {layout}"] == [[0, 4], [0, 6], [0, 4]]
        assert second[f"block {layout}"] == [[4, 8], [0, 6], [0, 4]]
    assert first["block (4, 2, 1) P()"] == second["block (4, 2, 1) P()"] == [[0, 8], [0, 6], [0, 4]]


IO = """
import json
from pathlib import Path

import ml_collections
import numpy as np

from seal_jax import report
from seal_jax.engine.checkpoint import Journal, RoundCheckpoints
from seal_jax.errors import UserInputError
from seal_jax.experiments.workdir import open_workdir

root, pid = Path(sys.argv[3]), jax.process_index()
mine = root if pid == 0 else root / f"absent_{pid}"  # process 1 cannot read what is there
out = {}


def attempt(fn):
    try:
        return {"value": fn()}
    except UserInputError as err:
        return {"error": str(err)}


journal = Journal(mine / "journal", "j")
out["first"] = sorted(journal.records)
for key in ("a", "b"):
    journal.write({"key": key, "v": 1})
out["restarted"] = sorted(Journal(mine / "journal", "j").records)
out["corrupted"] = attempt(lambda: Journal(mine / "journal", "bad"))

cfg = ml_collections.ConfigDict({"workdir": str(mine / "work"), "seed": pid, "distributed": {"process_id": pid}})
out["refused"] = attempt(lambda: open_workdir(cfg).__enter__())
cfg.workdir = str(mine / "fresh")
with open_workdir(cfg) as workdir:
    report.write_file(workdir / "tasks.json", "[]\\n")
    report.write_json(workdir / "results.json", {"pid": pid})

checkpoints = RoundCheckpoints(root / "run")  # one directory: Orbax coordinates the processes
adapter = {"layer": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}}
checkpoints.save(1, adapter, jax.random.key(7), {"note": "r1"})
again = RoundCheckpoints(root / "run")
state, meta = again.restore(again.latest_round())
out["checkpoint"] = {
    "latest": again.latest_round(),
    "a": np.asarray(state["adapter"]["layer"]["a"]).tolist(),
    "rng": np.asarray(state["rng"]).tolist(),
    "expected_rng": np.asarray(jax.random.key_data(jax.random.key(7))).tolist(),
    "meta": meta,
}
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def io_run(tmp_path_factory):
    """A 2-process run of IO over a directory holding a journal with a torn last line, a corrupted journal and a
    workdir with work of another config. -> (root, [process 0's results, process 1's])."""
    root = tmp_path_factory.mktemp("io")
    (root / "journal").mkdir()
    (root / "journal" / "j.jsonl").write_text('{"key": "old", "v": 0}\n{"key": "to')
    (root / "journal" / "bad.jsonl").write_text('{"key": "x"}\nnot json\n{"key": "y"}\n')
    (root / "work" / "journal").mkdir(parents=True)
    (root / "work" / "journal" / "heldout.jsonl").write_text('{"key": "done"}\n')
    (root / "work" / "config.json").write_text(json.dumps({"workdir": "elsewhere", "seed": 1}))
    return root, results(run_script(IO, root, str(root)))


def test_the_journal_is_read_and_written_by_process_0_and_known_to_all(io_run):
    root, (first, second) = io_run
    assert first["first"] == second["first"] == ["old"]
    assert first["restarted"] == second["restarted"] == ["a", "b", "old"]
    lines = (root / "journal" / "j.jsonl").read_text().splitlines()  # the torn line dropped, each write once
    assert [json.loads(line)["key"] for line in lines] == ["old", "a", "b"]
    assert first["corrupted"] == second["corrupted"]
    assert "bad.jsonl:2 is not a journal record" in first["corrupted"]["error"]
    assert not (root / "absent_1").exists()


def test_a_workdir_refusal_is_raised_on_every_process_and_only_process_0_writes(io_run):
    root, (first, second) = io_run
    assert first["refused"] == second["refused"]
    assert "holds work of a run with a different config (seed)" in first["refused"]["error"]
    fresh = root / "fresh"
    assert {p.name for p in fresh.iterdir()} == {
        ".lock",
        "config.json",
        "devices.json",
        "tasks.json",
        "results.json",
    }
    assert json.loads((fresh / "results.json").read_text()) == {"pid": 0}
    assert not (root / "absent_1").exists()


def test_round_checkpoints_save_and_restore_across_two_processes(io_run):
    _, (first, second) = io_run
    assert first["checkpoint"] == second["checkpoint"]
    saved = first["checkpoint"]
    assert saved["latest"] == 1 and saved["meta"] == {"round": 1, "note": "r1"}
    assert saved["a"] == [[0, 1, 2], [3, 4, 5]] and saved["rng"] == saved["expected_rng"]


LOOP = """
import os
import signal

import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

mesh = jax.make_mesh((8,), ("data",))
x = distributed.global_array(np.ones(8, np.float32), NamedSharding(mesh, P("data")))
total = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))
for i in range(10**6):
    assert distributed.to_host(total(x)) == 8
    if i == 20 and jax.process_index() == 1:
        print("killing process 1", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""
SUPERVISED = (
    "import sys; from seal_jax.main import supervise; sys.exit(supervise([sys.executable, *sys.argv[1:]]))"
)


def test_a_killed_peer_ends_the_other_process_with_one_clear_line(tmp_path):
    """Process 1 dies mid-way through a loop of collectives; process 0, waiting in one, exits 1 within the
    heartbeat timeout (10 s here) saying why."""
    script = tmp_path / "loop.py"
    script.write_text(PRELUDE + LOOP)
    first, second = launch(
        [sys.executable, "-c", SUPERVISED, str(script), "{coordinator}", "{process_id}"], timeout=90
    )
    assert "killing process 1" in second.stdout and second.returncode == 128 + 9
    last = first.stderr.strip().splitlines()[-1]
    assert first.returncode == 1, first.stderr[-3000:]
    assert last.startswith("error: lost contact with another process (") and "heartbeats" in last
    detection = first.seconds - second.seconds
    print(f"lost peer detected after {detection:.1f} s")
    assert detection < 30


# ------------------------------------------------- a whole ReST-EM round: one process or two, same results

ROUND = [
    "-m",
    "seal_jax.main",
    "--config",
    "tests/golden/tiny_round_config.py",
    "--config.eval.baselines=False",
]
TWO_PROCESSES = [
    "--config.num_cpu_devices=4",
    "--config.distributed.mode=explicit",
    "--config.distributed.coordinator_address={coordinator}",
    "--config.distributed.num_processes=2",
    "--config.distributed.process_id={process_id}",
    "--config.distributed.heartbeat_timeout=10",
]


def _run_files(workdir: Path) -> dict[str, bytes]:
    """The journal lines and results of a run, by relative path."""
    files = [*sorted((workdir / "journal").glob("*.jsonl")), workdir / "results.json"]
    return {str(f.relative_to(workdir)): f.read_bytes() for f in files}


def _adapter(workdir: Path) -> dict[str, np.ndarray]:
    state, _ = RoundCheckpoints(workdir).restore(1)
    return {k: np.asarray(v) for k, v in flatten_dict(state["adapter"], sep="/").items()}


@pytest.fixture(scope="module")
def one_process_round(tmp_path_factory) -> Path:
    """The tiny ReST-EM round (sampling, K-adapter evaluation, M-step, held-out SEAL row) as one process with 8
    CPU devices: what the two-process runs must reproduce."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, *ROUND, f"--config.workdir={workdir}", "--config.num_cpu_devices=8"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_a_round_on_two_processes_equals_one_process_on_as_many_devices(one_process_round, tmp_path):
    """Two processes × 4 devices write the same journal lines, results and round adapter as one process × 8
    devices, each line once (process 0 writes; process 1's records come from the same gathered outputs)."""
    workdir = tmp_path / "two"
    outcomes = launch([sys.executable, *ROUND, f"--config.workdir={workdir}", *TWO_PROCESSES], timeout=600)
    assert all(o.returncode == 0 for o in outcomes), outcomes[0].stderr[-3000:] + outcomes[1].stderr[-3000:]
    ours, reference = _run_files(workdir), _run_files(one_process_round)
    assert ours == reference
    for name, text in ours.items():
        keys = (
            [json.loads(line)["key"] for line in text.decode().splitlines()] if name.endswith("jsonl") else []
        )
        assert len(keys) == len(set(keys)), f"{name} repeats a record"
    got, want = _adapter(workdir), _adapter(one_process_round)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


def test_a_killed_process_stops_the_other_and_the_same_command_resumes(one_process_round, tmp_path):
    """Process 1 is killed once round 0's first evaluations are journaled: process 0 exits 1 with one clear
    line within the heartbeat timeout, and the same command then finishes with the uninterrupted numbers."""
    workdir = tmp_path / "killed"
    command = [sys.executable, *ROUND, f"--config.workdir={workdir}", *TWO_PROCESSES]
    journal = workdir / "journal" / "round_0.jsonl"
    killed: list[float] = []

    def kill_process_1(procs: list[subprocess.Popen]) -> None:
        evals = journal.read_text().count("/eval/") if journal.exists() else 0
        if not killed and evals:
            os.killpg(procs[1].pid, signal.SIGKILL)
            killed.append(time.monotonic())

    start = time.monotonic()
    first, _ = launch(command, timeout=600, while_running=kill_process_1)
    assert killed, "the run finished before process 1 could be killed"
    assert first.returncode == 1, first.stderr[-3000:]
    assert first.seconds - (killed[0] - start) < 60  # heartbeat timeout 10 s, plus the supervisor's exit
    assert first.stderr.strip().splitlines()[-1].startswith("error: lost contact with another process (")
    outcomes = launch(command, timeout=600)
    assert all(o.returncode == 0 for o in outcomes), outcomes[0].stderr[-3000:]
    assert _run_files(workdir) == _run_files(one_process_round)
