"""`python -m seal_jax.aot --config CONFIG --topology v5e-8 [--config.x=y] [--shape NAME=VALUE ...]`.

Compiles every program of one ReST-EM round for the topology (no TPU needed), prints each one's per-device
memory against the chip's HBM and an analytic roofline time, the round's total, and the largest `chunk_k` that
fits; the last line is `AOT topology=<t> fits=<yes|no> peak_hbm_gb=<x> hbm_gb=<y> round_minutes=<z> chunk_k=<k>`.
"""

from __future__ import annotations

import os
import sys

# The programs are compiled for a deviceless topology: the process's own backend can be the CPU (with libtpu
# installed, a TPU backend would otherwise probe for local chips). Set before JAX is imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libtpu takes a machine-wide lock meant for owning local chips; compiling for a topology owns none, so several
# of these processes (or one beside a TPU job) may run at once.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

from absl import app, flags
from ml_collections import config_flags

from seal_jax.aot import report
from seal_jax.aot.chips import CHIPS
from seal_jax.errors import UserInputError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_TOPOLOGY = flags.DEFINE_string(
    "topology", "v5e-8", "TPU slice: v5e-1, v5e-4, v5e-8, v5e-32, v4-8, v5p-8, v6e-8."
)
_SHAPES = flags.DEFINE_multi_string(
    "shape", [], "NAME=VALUE override of a RoundShapes field (seal_jax/aot/shapes.py)."
)
_SEARCH = flags.DEFINE_bool(
    "search_k", True, "Find the largest chunk_k that fits (two more compiles + a check)."
)
_HEADROOM = flags.DEFINE_float("headroom", 0.10, "HBM fraction left free for `fits` and the chunk_k search.")
_JSON = flags.DEFINE_string("json", "", "Also write the per-program figures (bytes per device) to this file.")
_CHIP = flags.DEFINE_enum(
    "analytic_chip", "", ["", *CHIPS], "No compile: analytic times only, on this chip (e.g. a GPU)."
)
_CHIPS = flags.DEFINE_integer("analytic_chips", 1, "Chips for --analytic_chip.")
_FINETUNE = flags.DEFINE_bool(
    "finetune", False, "Compile only CPT's full fine-tuning step (a config with cpt.mode=full)."
)


def main(argv: list[str]) -> None:
    del argv
    overrides = dict(s.split("=", 1) for s in _SHAPES.value)
    try:
        if _CHIP.value:
            report.analytic(_CONFIG.value, _CHIP.value, _CHIPS.value, overrides)
        elif _FINETUNE.value:
            report.full_finetune(_CONFIG.value, _TOPOLOGY.value, _HEADROOM.value)
        else:
            report.run(_CONFIG.value, _TOPOLOGY.value, overrides, _SEARCH.value, _HEADROOM.value, _JSON.value)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
