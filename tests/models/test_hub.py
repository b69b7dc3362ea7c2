"""Models by hub id: the HF cache works offline, only loadable files are fetched, hub failures are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import jax
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects

from seal_jax.models import hub
from seal_jax.models.bundle import load_model
from seal_jax.models.config import tiny_config
from seal_jax.models.loading import CheckpointError, load_pretrained
from tests.helpers import model_files

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache with the hub switched off. huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into
    `constants` at import time, so the attributes are patched, not the environment."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cached_snapshot(cache: Path, repo_id: str, ref: str = "main") -> Path:
    """The directory huggingface_hub keeps a snapshot in: `models--org--name/snapshots/<commit>`, found
    through `refs/<ref>`."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / ref).write_text(COMMIT)
    return storage / "snapshots" / COMMIT


def test_offline_without_cache_exits_2_with_one_line(tmp_path):
    # A subprocess: the env vars are read when huggingface_hub is imported.
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_CACHE": str(tmp_path / "hf_home" / "hub"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "seal_jax.main",
            "--config",
            "configs/generate.py",
            "--config.model=Qwen/Qwen2.5-7B",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert "Qwen/Qwen2.5-7B is not in the local Hugging Face cache" in line
    assert "pre-download it with `hf download Qwen/Qwen2.5-7B --include '*.safetensors'" in line
    assert "--config.model=/path" in line
    assert str(tmp_path / "hf_home" / "hub") in line


@pytest.mark.parametrize("ref", ["", "@main", f"@{COMMIT}"])
def test_cached_hub_id_loads_offline(offline_cache, tmp_path, ref):
    cfg = tiny_config("qwen2")
    snapshot = cached_snapshot(offline_cache, "org/tiny-qwen")
    model_files.write_hf_checkpoint(snapshot, cfg, model_files.random_hf_params(cfg, seed=3))
    loaded = load_model(f"org/tiny-qwen{ref}")
    assert loaded.config == cfg
    assert load_pretrained(f"org/tiny-qwen{ref}").source == str(snapshot)
    # Same weights as loading the directory itself (written out again elsewhere: not a cache lookup).
    plain = model_files.write_hf_checkpoint(
        tmp_path / "plain", cfg, model_files.random_hf_params(cfg, seed=3)
    )
    expected = load_model(str(plain))
    for got, want in zip(jax.tree.leaves(loaded.base), jax.tree.leaves(expected.base), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_unknown_revision_offline_is_not_cached(offline_cache):
    cfg = tiny_config("llama")
    model_files.write_hf_checkpoint(
        cached_snapshot(offline_cache, "org/tiny"), cfg, model_files.random_hf_params(cfg)
    )
    with pytest.raises(
        CheckpointError, match="org/tiny@v2 is not in the local Hugging Face cache"
    ) as excinfo:
        load_pretrained("org/tiny@v2")
    assert "--revision v2" in str(excinfo.value)


def test_incomplete_cached_snapshot_is_not_a_hit(offline_cache):
    # Only config.json cached (e.g. fetched by another tool): offline that is "not cached", not a load error.
    snapshot = cached_snapshot(offline_cache, "org/partial")
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(tiny_config("llama").to_hf_dict()))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        hub.resolve_checkpoint("org/partial")


def test_only_loadable_files_are_fetched():
    repo_files = [
        "config.json",
        "generation_config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "original/consolidated.00.pth",
        "original/params.json",
        "original/tokenizer.model",
        "onnx/model.safetensors",
        "README.md",
        "LICENSE.txt",
    ]
    fetched = filter_repo_objects(
        repo_files, allow_patterns=hub.ALLOW_PATTERNS, ignore_patterns=hub.IGNORE_PATTERNS
    )
    assert sorted(fetched) == sorted(repo_files[:10])


@pytest.mark.parametrize(
    "name",
    [
        "smollm2-135m-instruct",
        "tiny-random-llama",
        "models/SmolLM2.Q4_1.gguf",
        "/abs/path/to/checkpoint",
        "./org/name",
        "../org/name",
        "a/b/c",
        "org--x/name",
        "-org/name",
    ],
)
def test_non_hub_names_pass_through(monkeypatch, name):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub_call)
    assert hub.resolve_checkpoint(name) == name
    assert hub.resolve_checkpoint(Path(name)) == Path(name)


def test_path_objects_are_paths(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub_call)
    assert hub.resolve_checkpoint(Path("org/name")) == Path("org/name")


def test_existing_local_dir_shaped_like_a_hub_id_wins(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub_call)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config("llama")
    model_files.write_hf_checkpoint(tmp_path / "runs" / "model", cfg, model_files.random_hf_params(cfg))
    assert hub.resolve_checkpoint("runs/model") == "runs/model"
    assert load_pretrained("runs/model").config == cfg


def test_path_not_shaped_like_a_hub_id_keeps_the_no_checkpoint_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _no_hub_call)
    with pytest.raises(CheckpointError, match="no checkpoint at a/b/c"):
        load_pretrained("a/b/c")


def _no_hub_call(*args, **kwargs):
    raise AssertionError(f"unexpected hub call {args} {kwargs}")


def _http_error(cls: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://huggingface.co/api/models/org/name")
    return cls(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "fragments"),
    [
        (
            lambda: _http_error(GatedRepoError, 403),
            ["model org/name is gated or private", "hf auth login", "HF_TOKEN"],
        ),
        (lambda: _http_error(HfHubHTTPError, 401), ["org/name is gated or private", "HF_TOKEN"]),
        (lambda: _http_error(RepositoryNotFoundError, 404), ["no model org/name on the Hugging Face hub"]),
        (lambda: _http_error(RevisionNotFoundError, 404), ["has no revision 'v9'"]),
        (lambda: _http_error(HfHubHTTPError, 500), ["cannot download org/name@v9", "500 Client Error"]),
        (
            lambda: LocalEntryNotFoundError("connection refused"),
            ["org/name@v9 is not in the local Hugging Face cache", "--include 'tokenizer*' --revision v9`"],
        ),
    ],
)
def test_hub_failures_are_one_line_checkpoint_errors(monkeypatch, error, fragments):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs["local_files_only"]:
            raise LocalEntryNotFoundError("not cached")
        raise error()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(CheckpointError) as excinfo:
        hub.resolve_checkpoint("org/name@v9")
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    # The cache first, without network; then the hub; both for the same files and revision.
    assert [(repo, kw["local_files_only"], kw["revision"]) for repo, kw in calls] == [
        ("org/name", True, "v9"),
        ("org/name", False, "v9"),
    ]
    assert all(kw["allow_patterns"] == hub.ALLOW_PATTERNS for _, kw in calls)
