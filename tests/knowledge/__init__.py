"""Tests of the knowledge domain. Reference data (`$SEAL_REFERENCE_DATA/knowledge`) is optional: tests that
need it skip."""

from tests.helpers.reference_data import reference_dir
from tests.helpers.reference_data import requires_reference as _requires

REFERENCE = reference_dir("knowledge")
requires_reference = _requires("knowledge")
