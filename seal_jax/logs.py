"""What a run prints: the project's own progress lines, and libraries' (Orbax, absl users) only from WARNING up.

Orbax logs a few dozen INFO lines per checkpoint through `absl.logging`, the same logger seal_jax uses, so the
split is by the file a record comes from rather than by logger name. `--config.verbose=True` shows everything.
"""

from __future__ import annotations

import logging as std_logging
from pathlib import Path

from absl import logging

_PACKAGE = str(Path(__file__).resolve().parent)


class _OwnInfoOnly(std_logging.Filter):
    """Passes warnings and errors, and lower levels only from files inside the seal_jax package."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE)


_FILTER = _OwnInfoOnly()


def configure(verbose: bool) -> None:
    """Quiet library INFO logs unless `verbose` (idempotent; call once the absl flags are parsed)."""
    handler = logging.get_absl_handler()
    if verbose:
        handler.removeFilter(_FILTER)
    elif _FILTER not in handler.filters:
        handler.addFilter(_FILTER)
