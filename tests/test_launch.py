"""launch/tpu_vm.sh and launch/gpu.sh: their --dry-run commands, and the remote command strings run for real.

The dry run prints the exact argv of each command, so the remote strings it shows (unpack + install, start, log
stream) are executed here with `sh -c` against a fake home and fake interpreters: that is what a worker's login
shell does with `ssh --command`, and it proves that overrides with spaces and quotes reach seal_jax.main intact.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU = ROOT / "launch" / "tpu_vm.sh"
GPU = ROOT / "launch" / "gpu.sh"
SCRIPTS = [TPU, GPU, ROOT / "launch" / "common.sh"]
CONFIG = "configs/knowledge_demo.py"
ODD = ['--config.prompt=What is "this"?', "--config.note=it's a $HOME `x`"]


def call(script, *args, tmp_path, path_prefix=None):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["bash", str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True)


def dry(script, *args, tmp_path, path_prefix=None):
    proc = call(script, *args, "--dry-run", tmp_path=tmp_path, path_prefix=path_prefix)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.splitlines()]


def command_of(line):
    """The remote command string of a gcloud ssh (--command VALUE) or plain ssh (last argument) line."""
    return line[line.index("--command") + 1] if "--command" in line else line[-1]


def executable(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


TPU_BASE = ["--name", "tpu1", "--zone", "us-central2-b"]
GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
GCLOUD_QR = ["gcloud", "compute", "tpus", "queued-resources"]
LOC = ["--zone", "us-central2-b"]


def test_tpu_create_dry_run(tmp_path):
    lines = dry(TPU, *TPU_BASE, "--type", "v4-8", CONFIG, "--config.rounds=1", tmp_path=tmp_path)
    tarball = str(tmp_path / "seal_jax-tpu1.tgz")
    assert lines[0] == [*GCLOUD_TPU, "describe", "tpu1", *LOC]
    assert lines[1] == [*GCLOUD_TPU, "create", "tpu1", *LOC, "--accelerator-type", "v4-8",
                        "--version", "tpu-ubuntu2204-base"]  # fmt: skip
    assert lines[2][:2] == ["bash", "-c"] and lines[2][-2:] == [str(ROOT), tarball]
    assert lines[3] == [*GCLOUD_TPU, "scp", tarball, "tpu1:seal_jax.tgz", *LOC, "--worker=all"]
    assert [line[:8] for line in lines[4:]] == [[*GCLOUD_TPU, "ssh", "tpu1", *LOC]] * 3
    assert [line[8] for line in lines[4:]] == ["--worker=all", "--worker=all", "--worker=0"]
    assert "-e '.[tpu]'" in command_of(lines[4])
    start = command_of(lines[5])
    assert "--config.distributed.mode=auto --config.rounds=1 >" in start
    assert "tail" in command_of(lines[6])
    assert len(lines) == 7


def test_tpu_queued_dry_run_waits_for_active(tmp_path):
    args = [*TPU_BASE, "--type", "v5litepod-16", "--queued", "--project", "p1", "--spot", CONFIG]
    lines = dry(TPU, *args, tmp_path=tmp_path)
    loc = [*LOC, "--project", "p1"]
    assert lines[:4] == [
        [*GCLOUD_TPU, "describe", "tpu1", *loc],
        [*GCLOUD_QR, "describe", "tpu1", *loc],
        [*GCLOUD_QR, "create", "tpu1", "--node-id", "tpu1", *loc, "--accelerator-type", "v5litepod-16",
         "--runtime-version", "v2-alpha-tpuv5-lite", "--spot"],
        [*GCLOUD_QR, "describe", "tpu1", *loc, "--format", "value(state.state)"],
    ]  # fmt: skip
    assert not any(line[:5] == [*GCLOUD_TPU, "create"] for line in lines)
    assert all(line[line.index("--project") + 1] == "p1" for line in lines[4:] if line[0] == "gcloud")


@pytest.mark.parametrize(
    ("extra", "version"),
    [
        (["--type", "v4-32"], "tpu-ubuntu2204-base"),
        (["--type", "v5litepod-8"], "v2-alpha-tpuv5-lite"),
        (["--type", "v5p-8"], "v2-alpha-tpuv5"),
        (["--accelerator-type", "v6e-8"], "v2-alpha-tpuv6e"),
        (["--type", "v6e-8", "--version", "tpu-ubuntu2204-base"], "tpu-ubuntu2204-base"),
    ],
)
def test_tpu_runtime_version(tmp_path, extra, version):
    create = dry(TPU, *TPU_BASE, *extra, CONFIG, tmp_path=tmp_path)[1]
    assert create[create.index("--version") + 1] == version


def test_dry_run_executes_nothing(tmp_path):
    """gcloud/ssh/scp on PATH that leave a mark: a dry run must not call any of them."""
    bin_dir, mark = tmp_path / "bin", tmp_path / "called"
    for name in ("gcloud", "ssh", "scp"):
        executable(bin_dir / name, f"#!/bin/sh\necho {name} >> {mark}\n")
    dry(TPU, *TPU_BASE, "--type", "v4-8", "--queued", CONFIG, tmp_path=tmp_path, path_prefix=bin_dir)
    dry(GPU, "--host", "gpu1", CONFIG, tmp_path=tmp_path, path_prefix=bin_dir)
    assert not mark.exists()
    assert not (tmp_path / "seal_jax-tpu1.tgz").exists()


def run_remote(command, home, timeout=60):
    """Runs a remote command string as a worker's login shell would (`sh -c` in the home directory)."""
    env = {"HOME": str(home), "PATH": f"{home / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(
        ["sh", "-c", command], cwd=home, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("script", ["tpu", "gpu"])
def test_remote_job_receives_overrides_intact(tmp_path, script):
    """The start command, run by a shell, calls seal_jax.main with exactly our argv; the follow command prints
    the job's log and exits with the job's status."""
    workdir = "gs://bucket/run 1"
    if script == "tpu":
        lines = dry(TPU, *TPU_BASE, "--type", "v4-8", "--workdir", workdir, CONFIG, *ODD, tmp_path=tmp_path)
        expected = ["--config", CONFIG, "--config.distributed.mode=auto", *ODD, f"--config.workdir={workdir}"]
    else:
        lines = dry(GPU, "--host", "me@gpu1", "--workdir", workdir, CONFIG, *ODD, tmp_path=tmp_path)
        expected = ["--config", CONFIG, *ODD, f"--config.workdir={workdir}"]
    home = tmp_path / "home"
    argv_file = home / "argv.json"
    executable(
        home / "seal_jax" / ".venv" / "bin" / "python",
        f"#!/bin/sh\n{shlex.quote(sys.executable)} -c 'import json, sys; "
        f'open("{argv_file}", "w").write(json.dumps(sys.argv[1:]))\' "$@"\necho job output line\nexit 3\n',
    )
    started = run_remote(command_of(lines[-2]), home)
    assert started.returncode == 0, started.stderr
    follow = run_remote(command_of(lines[-1]), home)
    assert follow.returncode == 3
    assert "job output line" in follow.stdout
    assert json.loads(argv_file.read_text()) == ["-m", "seal_jax.main", *expected]
    assert (home / "seal_jax" / "logs" / "run.pid").read_text().strip().isdigit()


def fake_python3(home, version):
    """python3 that runs the version check (`-c CODE`) as Python `version` would and records every other call; its
    venvs hold a python that records too."""
    log = home / "calls.txt"
    check = shlex.quote(f"import sys; sys.version_info = {version}; exec(sys.argv[1])")
    executable(
        home / "bin" / "python3",
        f'#!/bin/sh\n[ "$1" = -c ] && exec {shlex.quote(sys.executable)} -c {check} "$2"\n'
        f'echo "$0 $*" >> {log}\n'
        'case "$*" in *venv*.venv) mkdir -p .venv/bin; cp "$0" .venv/bin/python;; esac\n',
    )
    return log


@pytest.mark.parametrize(("version", "uses_uv"), [((3, 10), True), ((3, 12), False)])
def test_remote_setup_unpacks_and_provisions_python(tmp_path, version, uses_uv):
    lines = dry(TPU, *TPU_BASE, "--type", "v4-8", CONFIG, tmp_path=tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    pack = lines[2]
    pack[-1] = str(home / "seal_jax.tgz")
    subprocess.run(pack, check=True)
    log = fake_python3(home, version)
    setup = run_remote(command_of(lines[4]), home)
    assert setup.returncode == 0, setup.stderr
    assert (home / "seal_jax" / "seal_jax" / "main.py").is_file()
    assert (home / "seal_jax" / "launch" / "tpu_vm.sh").is_file()
    calls = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    if uses_uv:
        assert "-m pip install -q --user uv" in calls
        assert "-m uv venv -q --seed --python 3.11 .venv" in calls
        assert "-m venv .venv" not in calls
    else:
        assert "-m venv .venv" in calls
        assert not any("uv" in c for c in calls)
    assert calls[-1] == "-m pip install -q -e .[tpu]"


def test_pack_ships_the_working_tree_without_junk(tmp_path):
    """The pack command on a scratch repo: tracked (also edited) and untracked files go, ignored ones, .git and
    files deleted from the working tree do not."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    (repo / ".gitignore").write_text(".venv/\n/runs/\n")
    for name in ("a.py", "gone.py", "pkg/b.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (repo / "a.py").write_text("x = 2\n")
    (repo / "gone.py").unlink()
    (repo / "new file.py").write_text("y = 1\n")
    for junk in (".venv/bin/python", "runs/x/results.json"):
        (repo / junk).parent.mkdir(parents=True, exist_ok=True)
        (repo / junk).write_text("junk")
    pack = dry(TPU, *TPU_BASE, "--type", "v4-8", CONFIG, tmp_path=tmp_path)[2]
    pack[-2:] = [str(repo), str(tmp_path / "out.tgz")]
    subprocess.run(pack, check=True)
    with tarfile.open(tmp_path / "out.tgz") as tar:
        assert sorted(tar.getnames()) == [".gitignore", "a.py", "new file.py", "pkg/b.py"]
        assert tar.extractfile("a.py").read() == b"x = 2\n"


def test_gpu_host_dry_run(tmp_path):
    lines = dry(GPU, "--host", "me@gpu1", CONFIG, "--config.rounds=1", tmp_path=tmp_path)
    tarball = str(tmp_path / "seal_jax-gpu.tgz")
    assert lines[0][:2] == ["bash", "-c"] and lines[0][-2:] == [str(ROOT), tarball]
    assert lines[1] == ["scp", "-q", tarball, "me@gpu1:seal_jax.tgz"]
    assert [line[:2] for line in lines[2:]] == [["ssh", "me@gpu1"]] * 3
    assert "-e '.[cuda]'" in lines[2][2]
    assert "distributed" not in lines[3][2] and "--config.rounds=1 >" in lines[3][2]
    assert len(lines) == 5


def test_gpu_local_dry_run(tmp_path):
    lines = dry(GPU, "--local", "--workdir", "runs/my run", CONFIG, ODD[0], tmp_path=tmp_path)
    # The venv is created only when the checkout has none (CI's `make install` makes one).
    assert lines[:-2] in ([], [["python3", "-m", "venv", ".venv"]])
    assert lines[-2:] == [
        [".venv/bin/python", "-m", "pip", "install", "-q", "-e", ".[cuda]"],
        [
            ".venv/bin/python",
            "-m",
            "seal_jax.main",
            "--config",
            CONFIG,
            ODD[0],
            "--config.workdir=runs/my run",
        ],
    ]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (TPU, ["--zone", "z", CONFIG], "--name is required"),
        (TPU, ["--name", "n", CONFIG], "--zone is required"),
        (TPU, [*TPU_BASE, CONFIG], "--accelerator-type is needed"),
        (TPU, [*TPU_BASE, "--type", "v4-8", "configs/nope.py"], "no config configs/nope.py"),
        (TPU, [*TPU_BASE, "--bogus", CONFIG], "unknown option --bogus"),
        (GPU, [CONFIG], "give --host HOST or --local"),
        (GPU, ["--host", "h", "--local", CONFIG], "exclude each other"),
        (GPU, ["--local", CONFIG, CONFIG], "two configs"),
    ],
)
def test_bad_invocations_fail_with_a_reason(tmp_path, script, args, message):
    proc = call(script, *args, "--dry-run", tmp_path=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("script", [TPU, GPU])
def test_help(tmp_path, script):
    proc = call(script, "--help", tmp_path=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: launch/{script.name}") and "--dry-run" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (`make install` installs it with apt-get where it can)")
    proc = subprocess.run(
        ["shellcheck", "-x", str(script.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def test_follow_waits_for_a_running_job(tmp_path):
    """The log stream keeps going while the job runs and ends when it does."""
    lines = dry(GPU, "--host", "h", CONFIG, tmp_path=tmp_path)
    home = tmp_path / "home"
    executable(home / "seal_jax" / ".venv" / "bin" / "python", "#!/bin/sh\necho first\nsleep 2\necho last\n")
    t0 = time.monotonic()
    assert run_remote(command_of(lines[-2]), home).returncode == 0
    follow = run_remote(command_of(lines[-1]), home)
    assert follow.returncode == 0
    assert follow.stdout.split() == ["first", "last"]
    assert time.monotonic() - t0 >= 2
