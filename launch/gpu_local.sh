#!/usr/bin/env bash
# One GPU host: install the CUDA extra and run a config.  launch/gpu_local.sh configs/arc_llama1b.py [overrides]
set -euo pipefail
CONFIG=$1; shift
python3 -m venv .venv && .venv/bin/pip install -q -e '.[cuda]'
.venv/bin/python -m seal_jax.main --config "$CONFIG" "$@"
