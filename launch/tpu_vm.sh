#!/usr/bin/env bash
# Runs one seal_jax config on every worker of a Cloud TPU VM (single host or pod slice).
#   launch/tpu_vm.sh TPU_NAME ZONE configs/knowledge_qwen7b.py [--config.overrides ...]
# Every worker runs the same command; jax.distributed.initialize() (cfg.distributed=True) wires them up, adapters
# are split over the "data" mesh axis and process 0 writes the journal, checkpoints and results.
set -euo pipefail
TPU_NAME=$1; ZONE=$2; CONFIG=$3; shift 3
REPO=${REPO:-$HOME/seal_jax}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  cd $REPO
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'
  .venv/bin/python -m seal_jax.main --config $CONFIG --config.distributed=True $*
"
