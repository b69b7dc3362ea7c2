"""Experiment drivers, dispatched on `cfg.experiment` by `seal_jax.main`."""

from __future__ import annotations

import importlib
from typing import Any

from seal_jax.errors import UserInputError

# experiment name -> module under seal_jax.experiments with a `run(cfg)` function.
EXPERIMENTS = {
    "generate": ("generate", "run"),
    "knowledge": ("knowledge", "run"),
    "knowledge_replay": ("table", "replay"),
    "knowledge_table": ("table", "run"),
    "knowledge_continual": ("continual", "run"),
    "knowledge_cpt": ("cpt", "run"),
    "arc": ("arc", "run"),
}
# The experiments where another model writes the self-edits (teacher-student, `cfg.writer_model`).
WITH_WRITER_MODEL = ("knowledge", "arc")


def dispatch(cfg: Any) -> Any:
    """Runs the driver `cfg.experiment` names, after the checks every experiment shares."""
    from seal_jax.experiments.checks import check_run

    name = cfg.get("experiment")
    if name is None:
        raise UserInputError(f"the config has no 'experiment' key: set one of {sorted(EXPERIMENTS)}")
    check_run(cfg)
    if name not in EXPERIMENTS:
        raise UserInputError(f"unknown experiment {name!r}: expected one of {sorted(EXPERIMENTS)}")
    if str(cfg.get("writer_model") or "").strip() and name not in WITH_WRITER_MODEL:
        raise UserInputError(
            f"writer_model={cfg.writer_model!r} applies to the {' and '.join(WITH_WRITER_MODEL)} experiments, "
            f"not to {name}: unset --config.writer_model"
        )
    module, function = EXPERIMENTS[name]
    return getattr(importlib.import_module(f"seal_jax.experiments.{module}"), function)(cfg)
