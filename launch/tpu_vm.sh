#!/usr/bin/env bash
# Runs one seal_jax config on every worker of a Cloud TPU VM (single host or pod slice); docs/scale.md.
#
# Every worker runs the same command; jax.distributed.initialize() (cfg.distributed.mode=auto) wires them up, adapters
# are split over the "data" mesh axis and process 0 writes the journal, checkpoints and results, so on a pod slice
# the workdir should be a gs:// bucket that every worker can reach.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh --name NAME --zone ZONE [options] CONFIG [--config.KEY=VALUE ...] [-- EXTRA_ARGS ...]

Creates the TPU VM NAME (or reuses it when `gcloud ... describe` finds it), copies this working tree to every
worker, installs seal_jax[tpu] into ~/seal_jax/.venv on each (Python >= 3.11, provisioned with uv where the image's
python3 is older), starts `python -m seal_jax.main --config CONFIG --config.distributed.mode=auto ...` on all workers
and streams worker 0's log until the job ends.

options:
  --name NAME               TPU VM name (with --queued also the queued-resource id)
  --zone ZONE               e.g. us-central2-b, europe-west4-a
  --accelerator-type TYPE   e.g. v4-8, v5litepod-16, v6e-8 (alias --type); needed only to create the TPU
  --version VERSION         runtime image; default from TYPE: v2-alpha-tpuv6e (v6e), v2-alpha-tpuv5-lite
                            (v5e / v5litepod), v2-alpha-tpuv5 (v5p), tpu-ubuntu2204-base (v4 and older)
  --queued                  create through a queued resource and wait until it is ACTIVE
  --spot                    spot capacity (passed to the create command)
  --project PROJECT         GCP project (default: gcloud's configured one)
  --workdir DIR             run directory, e.g. gs://bucket/run (becomes --config.workdir=DIR)
  --config PATH             the config, if not given as the positional CONFIG
  --dry-run                 print the commands, one per line, and run none (assumes the TPU does not exist yet)
  -h, --help                this text

Arguments starting with --config. and everything after `--` are passed to seal_jax.main unchanged.
Worker k's log stays in ~/seal_jax/logs/run.log on worker k; after a Ctrl-C the job keeps running and
  gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 --command 'tail -F seal_jax/logs/run.log'
reattaches to it.
EOF
}

NAME='' ZONE='' TYPE='' VERSION='' PROJECT='' WORKDIR='' CONFIG='' QUEUED=0 SPOT=0
ARGS=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --name) NAME=${2:?--name needs a value}; shift ;;
    --zone) ZONE=${2:?--zone needs a value}; shift ;;
    --accelerator-type | --type) TYPE=${2:?$1 needs a value}; shift ;;
    --version) VERSION=${2:?--version needs a value}; shift ;;
    --project) PROJECT=${2:?--project needs a value}; shift ;;
    --workdir) WORKDIR=${2:?--workdir needs a value}; shift ;;
    --config) CONFIG=${2:?--config needs a value}; shift ;;
    --config=*) CONFIG=${1#--config=} ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --config.*) ARGS+=("$1") ;;
    --) shift; ARGS+=("$@"); break ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [[ -z $CONFIG ]] || die "two configs: $CONFIG and $1"; CONFIG=$1 ;;
  esac
  shift
done
[[ -n $NAME ]] || die "--name is required (launch/tpu_vm.sh --help)"
[[ -n $ZONE ]] || die "--zone is required"
[[ -n $CONFIG ]] || die "a config path is required, e.g. configs/knowledge_qwen7b.py"
# The same relative path names the config in the remote checkout; catch a typo before paying for a TPU.
[[ -f "$(repo_root)/${CONFIG%%:*}" ]] || die "no config ${CONFIG%%:*} under $(repo_root) (paths are relative to it)"
[[ -n $WORKDIR ]] && ARGS+=("--config.workdir=$WORKDIR")

if [[ -z $VERSION ]]; then
  case $TYPE in
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

LOCATION=(--zone "$ZONE")
[[ -n $PROJECT ]] && LOCATION+=(--project "$PROJECT")
TPU=(gcloud compute tpus tpu-vm)
QR=(gcloud compute tpus queued-resources)

# A queued resource may sit in WAITING_FOR_RESOURCES for hours; poll its state and give up on terminal failures.
wait_active() {
  local describe=("${QR[@]}" describe "$NAME" "${LOCATION[@]}" --format 'value(state.state)') state
  if ((DRY_RUN)); then
    run "${describe[@]}"
    return
  fi
  while state=$("${describe[@]}") && [[ $state != ACTIVE ]]; do
    [[ $state == FAILED || $state == SUSPENDED ]] && die "queued resource $NAME is $state"
    echo "queued resource $NAME: ${state:-unknown}; checking again in 60 s" >&2
    sleep 60
  done
  [[ $state == ACTIVE ]] || die "could not read the state of queued resource $NAME"
}

if ! probe "${TPU[@]}" describe "$NAME" "${LOCATION[@]}"; then
  [[ -n $TYPE ]] || die "TPU $NAME not found; --accelerator-type is needed to create it"
  spot=()
  ((SPOT)) && spot=(--spot)
  if ((QUEUED)); then
    # Re-running while the request is still queued must wait for it, not fail on "already exists".
    if ! probe "${QR[@]}" describe "$NAME" "${LOCATION[@]}"; then
      run "${QR[@]}" create "$NAME" --node-id "$NAME" "${LOCATION[@]}" --accelerator-type "$TYPE" \
        --runtime-version "$VERSION" "${spot[@]}"
    fi
    wait_active
  else
    run "${TPU[@]}" create "$NAME" "${LOCATION[@]}" --accelerator-type "$TYPE" --version "$VERSION" "${spot[@]}"
  fi
fi

TARBALL="${TMPDIR:-/tmp}/seal_jax-$NAME.tgz"
pack_tree "$(repo_root)" "$TARBALL"
run "${TPU[@]}" scp "$TARBALL" "$NAME:seal_jax.tgz" "${LOCATION[@]}" --worker=all
run "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker=all --command "$(remote_setup tpu seal_jax.tgz)"
# `ssh --worker=all` interleaves every worker's output without telling them apart, and its connections are the
# job's lifetime.  So the job is started detached on all workers (each writing its own log) and a second ssh to
# worker 0 alone follows that worker's log, ending with the job's exit status.
run "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker=all \
  --command "$(remote_start --config "$CONFIG" --config.distributed.mode=auto "${ARGS[@]}")"
run "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" --worker=0 --command "$(remote_follow)"
