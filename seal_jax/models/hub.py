"""Hugging Face hub ids (`org/name`, `org/name@revision`) -> a local snapshot directory of the HF cache.

Only the files `load_pretrained` reads are fetched (top-level safetensors, configs, tokenizer files), never
`*.bin`/`*.pth` duplicates or `original/` checkpoints. The cache is tried first without any network call, so an
offline machine with a pre-downloaded model works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub
from absl import logging
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from seal_jax.models.loading import EMBEDDED, CheckpointError

# What seal_jax loads from an HF checkpoint dir (weights + index, model config, tokenizer in any of its forms).
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
]
# fnmatch's `*` crosses `/`: this keeps e.g. `original/*.safetensors` or `onnx/` copies out.
IGNORE_PATTERNS = ["*/*"]

# A repo id's parts: word characters, `-` and `.`, not starting or ending with `-`/`.` (as the hub requires),
# which also keeps relative paths such as `./model` or `../x` out. The revision may contain `/` (refs/pr/1).
_PART = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?P<repo>{_PART}/{_PART})(?:@(?P<revision>.+))?")

# Three `--include` flags: `hf download` takes one pattern per flag (a second word would be a file name).
_DOWNLOAD = "hf download {repo} --include '*.safetensors' --include '*.json' --include 'tokenizer*'"


def parse_hub_id(name: str) -> tuple[str, str | None] | None:
    """`(repo_id, revision or None)` if `name` is shaped like a hub id, else None."""
    match = _HUB_ID.fullmatch(name)
    if match is None:
        return None
    try:
        validate_repo_id(match["repo"])  # the hub's finer rules (no `--` or `..`)
    except HFValidationError:
        return None
    return match["repo"], match["revision"]


def _is_complete(snapshot: str) -> bool:
    """A cached snapshot holds what loading needs (the cache may hold only e.g. a config fetched by
    another tool)."""
    path = Path(snapshot)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _download(repo_id: str, revision: str | None, local_files_only: bool) -> str:
    return huggingface_hub.snapshot_download(
        repo_id,
        revision=revision,
        allow_patterns=ALLOW_PATTERNS,
        ignore_patterns=IGNORE_PATTERNS,
        local_files_only=local_files_only,
    )


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str | os.PathLike:
    """A hub id string -> its local snapshot dir (from the HF cache, else downloaded into it). Embedded names,
    `tiny-random-*` names, `Path` objects, existing paths, `.gguf` paths and anything not shaped like a hub id
    come back unchanged (`load_pretrained` reports those)."""
    if not isinstance(name_or_path, str):  # a Path is a path (and Path("./org/name") prints as "org/name")
        return name_or_path
    name = name_or_path
    parsed = parse_hub_id(name)
    if name in EMBEDDED or name.startswith("tiny-random-") or name.endswith(".gguf") or parsed is None:
        return name
    if Path(name).exists():  # a local `runs/model` dir wins over the hub id of the same shape
        return name
    repo_id, revision = parsed
    try:
        snapshot = _download(repo_id, revision, local_files_only=True)
        if _is_complete(snapshot):
            return snapshot
    except LocalEntryNotFoundError:
        pass  # not cached: download
    if constants.is_offline_mode():  # offline, snapshot_download would hand back an incomplete snapshot
        raise _not_cached(name, repo_id, revision)
    logging.info("fetching %s from the Hugging Face hub into %s", name, constants.HF_HUB_CACHE)
    try:
        return _download(repo_id, revision, local_files_only=False)
    except GatedRepoError as err:
        raise _access_error(repo_id) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(
            f"no model {repo_id} on the Hugging Face hub (or it is private: log in with `hf auth login` or set "
            "HF_TOKEN); a local checkpoint directory works too: --config.model=/path"
        ) from err
    except RevisionNotFoundError as err:
        raise CheckpointError(
            f"model {repo_id} on the Hugging Face hub has no revision {revision!r}"
        ) from err
    except LocalEntryNotFoundError as err:  # the hub unreachable and the model not cached
        raise _not_cached(name, repo_id, revision) from err
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code in (401, 403):
            raise _access_error(repo_id) from err
        raise CheckpointError(f"cannot download {name} from the Hugging Face hub: {_one_line(err)}") from err


def _not_cached(name: str, repo_id: str, revision: str | None) -> CheckpointError:
    download = _DOWNLOAD.format(repo=repo_id) + (f" --revision {revision}" if revision else "")
    # The cache path last: main cuts messages at 400 characters.
    return CheckpointError(
        f"model {name} is not in the local Hugging Face cache and the hub cannot be reached: pre-download it "
        f"with `{download}` (same HF_HOME), or pass a local checkpoint directory: --config.model=/path "
        f"(cache: {constants.HF_HUB_CACHE})"
    )


def _access_error(name: str) -> CheckpointError:
    return CheckpointError(
        f"model {name} is gated or private on the Hugging Face hub: accept its license on huggingface.co, then "
        "log in with `hf auth login` (or set HF_TOKEN), or pass a local checkpoint directory: --config.model=/path"
    )


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
