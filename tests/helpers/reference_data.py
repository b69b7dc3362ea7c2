"""The reference's real data (SQuAD val in the reference format, its self-edit files, ARC subsets), optional.

Its location comes from the environment variable `SEAL_REFERENCE_DATA` (a directory with `knowledge/` and
`arc/`); tests that need it skip, saying why, when the variable is unset or the directory is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SEAL_REFERENCE_DATA"


def reference_dir(*parts: str) -> Path:
    """`$SEAL_REFERENCE_DATA/<parts>` (an empty path when the variable is unset: it is never a directory)."""
    root = os.environ.get(ENV, "")
    return Path(root, *parts) if root else Path()


def requires_reference(*parts: str) -> pytest.MarkDecorator:
    """Skips the test unless `$SEAL_REFERENCE_DATA/<parts>` is a directory."""
    if not os.environ.get(ENV):
        return pytest.mark.skip(reason=f"reference data: set {ENV} to its directory")
    path = reference_dir(*parts)
    return pytest.mark.skipif(not path.is_dir(), reason=f"reference data not at {path} (from {ENV})")
