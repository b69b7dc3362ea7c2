"""Tests of the knowledge domain. Reference data (`../shared`, next to the repo) is optional: tests that
need it skip."""

from pathlib import Path

import pytest

REFERENCE = Path(__file__).parents[2].parent / "shared" / "data" / "seal_reference" / "knowledge"
requires_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference data not at {REFERENCE}")
