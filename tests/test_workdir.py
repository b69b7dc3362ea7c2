"""The run directory: one process at a time, and finished work resumes only with the config that made it."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import pytest

from seal_jax.errors import UserInputError
from seal_jax.experiments.workdir import changed_settings, open_workdir


def config(workdir: Path, **restem) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"workdir": str(workdir), "compilation_cache_dir": "", "seed": 0, "restem": {"rounds": 2, **restem}}
    )


def prepare(cfg: ml_collections.ConfigDict) -> Path:
    with open_workdir(cfg) as workdir:
        return workdir


def record_work(workdir: Path) -> None:
    (workdir / "journal").mkdir(exist_ok=True)
    (workdir / "journal" / "round_0.jsonl").write_text('{"key": "round_0/sample/x/0", "text": "t"}\n')


def test_changed_settings_are_named_by_leaf_and_exclude_where_the_run_lives():
    old = {"workdir": "/a", "compilation_cache_dir": "", "seed": 0, "restem": {"rounds": 2, "top_p": 0.95}}
    new = {"workdir": "/b/", "compilation_cache_dir": "/c", "seed": 0, "restem": {"rounds": 3}}
    assert changed_settings(old, new) == ["restem.rounds", "restem.top_p"]


def test_a_different_config_is_refused_once_work_is_recorded(tmp_path):
    prepare(config(tmp_path))
    record_work(tmp_path)
    with pytest.raises(UserInputError, match=r"different config \(restem\.rounds\)"):
        prepare(config(tmp_path, rounds=3))
    assert json.loads((tmp_path / "config.json").read_text())["restem"]["rounds"] == 2


def test_without_recorded_work_a_new_config_replaces_the_old(tmp_path):
    """A run that failed on bad input before any work must not block the corrected command."""
    prepare(config(tmp_path, rounds=-5))
    prepare(config(tmp_path, rounds=3))
    assert json.loads((tmp_path / "config.json").read_text())["restem"]["rounds"] == 3


def test_a_copied_run_directory_resumes(tmp_path):
    prepare(config(tmp_path / "a"))
    record_work(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert prepare(config(tmp_path / "b")) == tmp_path / "b"


@pytest.mark.parametrize("broken", [None, "", '{"seed": '])
def test_recorded_work_without_a_readable_config_is_refused(tmp_path, broken):
    record_work(tmp_path)
    if broken is not None:
        (tmp_path / "config.json").write_text(broken)
    with pytest.raises(UserInputError, match=r"no readable config\.json"):
        prepare(config(tmp_path))


def test_a_config_json_that_holds_no_object_counts_as_unreadable(tmp_path):
    record_work(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match=r"no readable config\.json"):
        prepare(config(tmp_path))


@pytest.mark.parametrize("blocker", ["", "journal", "config.json/"])
def test_a_path_that_cannot_be_a_run_directory_is_a_one_line_error(tmp_path, blocker):
    """The workdir itself, its journal directory or its config.json in the way as the wrong kind of file."""
    path = tmp_path / "run" / blocker
    if blocker.endswith("/"):
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    with pytest.raises(UserInputError, match=r"cannot use .* as a run directory"):
        prepare(config(tmp_path / "run"))


def test_a_workdir_in_use_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)",
            str(tmp_path / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserInputError, match="another process is running"):
            prepare(config(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert prepare(config(tmp_path)) == tmp_path  # free again once the holder is gone


def test_the_lock_is_held_for_the_block_only(tmp_path):
    with open_workdir(config(tmp_path)), pytest.raises(UserInputError, match="another process is running"):
        prepare(config(tmp_path))
    assert prepare(config(tmp_path)) == tmp_path


def test_a_resume_on_another_device_count_is_logged(tmp_path, caplog):
    prepare(config(tmp_path))
    record_work(tmp_path)
    (tmp_path / "devices.json").write_text('{"platform": "tpu", "devices": 256}\n')
    with caplog.at_level(logging.WARNING):
        prepare(config(tmp_path))
    assert "was started on {'platform': 'tpu', 'devices': 256}" in caplog.text
    assert json.loads((tmp_path / "devices.json").read_text())["devices"] == jax.device_count()
