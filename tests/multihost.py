"""Runs N Python processes on 127.0.0.1 as one multi-process JAX runtime (4 CPU devices each, gloo collectives),
as the same command on every host of a pod slice would run.

`launch` formats "{process_id}" and "{coordinator}" in each argument, so a `seal_jax.main` command takes
`--config.distributed.mode=explicit --config.distributed.coordinator_address={coordinator}
--config.distributed.num_processes=2 --config.distributed.process_id={process_id}`, and a script takes them as
arguments (see `PRELUDE`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]

# The first lines of a script that `launch` runs as [python, script, "{coordinator}", "{process_id}", *more]: it
# joins the runtime with 4 CPU devices per process and a 10 s heartbeat timeout (a lost peer ends it quickly).
PRELUDE = """
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)
from seal_jax.engine import distributed

distributed.initialize({"mode": "explicit", "coordinator_address": sys.argv[1], "num_processes": 2,
                        "process_id": int(sys.argv[2]), "heartbeat_timeout": 10})
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One process's exit status and output; `seconds`: from launch to its exit."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def launch(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    num_processes: int = 2,
    timeout: float = 120,
    while_running: Callable[[list[subprocess.Popen]], None] | None = None,
) -> list[Outcome]:
    """Runs `argv` (formatted per process, see the module docstring) as `num_processes` processes from the
    repository root and waits for all of them; `while_running(procs)` is called every 50 ms meanwhile (e.g. to
    kill one at a chosen moment). Past `timeout` seconds every process still running is killed and
    AssertionError shows what each printed. -> one Outcome per process id."""
    coordinator = f"127.0.0.1:{free_port()}"
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("XLA_FLAGS", None)  # a forced host device count would fight jax_num_cpu_devices
    start = time.monotonic()
    procs, logs, ends = [], [], {}
    with contextlib.ExitStack() as files:
        try:
            for i in range(num_processes):
                # files, not pipes: a full pipe would block a process that nobody reads until the end
                out, err = (files.enter_context(tempfile.TemporaryFile()) for _ in range(2))
                logs.append((out, err))
                args = [a.format(process_id=i, coordinator=coordinator) for a in argv]
                procs.append(
                    subprocess.Popen(
                        args, cwd=REPO, env=full_env, stdout=out, stderr=err, start_new_session=True
                    )
                )
            while len(ends) < num_processes and time.monotonic() - start < timeout:
                for i, p in enumerate(procs):
                    if i not in ends and p.poll() is not None:
                        ends[i] = time.monotonic() - start
                if while_running:
                    while_running(procs)
                time.sleep(0.05)
        finally:
            for p in procs:  # with whatever each started (its own process group: a supervised child)
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        outcomes = []
        for i, (p, (out, err)) in enumerate(zip(procs, logs, strict=True)):
            outcomes.append(Outcome(p.returncode, _read(out), _read(err), ends.get(i, float("inf"))))
    if len(ends) < num_processes:
        shown = "\n".join(
            f"--- process {i}: status {o.returncode}\n{o.stderr[-3000:]}" for i, o in enumerate(outcomes)
        )
        raise AssertionError(f"processes still running after {timeout} s were killed\n{shown}")
    return outcomes


def run_script(
    body: str, tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> list[Outcome]:
    """Writes `PRELUDE + body` to a file and launches it in 2 processes (`args` follow the coordinator and id)."""
    script = tmp_path / f"script_{time.monotonic_ns()}.py"
    script.write_text(PRELUDE + body)
    return launch([sys.executable, str(script), "{coordinator}", "{process_id}", *args], env, timeout=timeout)
