#!/usr/bin/env bash
# Runs one seal_jax config on a single GPU host, over ssh or on this machine (--local); docs/scale.md.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
usage: launch/gpu.sh (--host HOST | --local) [options] CONFIG [--config.KEY=VALUE ...] [-- EXTRA_ARGS ...]

--host HOST: copies this working tree to HOST:~/seal_jax over ssh, installs seal_jax[cuda] into ~/seal_jax/.venv
(Python >= 3.11, provisioned with uv where the host's python3 is older), starts
`python -m seal_jax.main --config CONFIG ...` detached there and streams its log until the job ends.
--local: installs seal_jax[cuda] into ./.venv of this checkout and runs the job in the foreground.

options:
  --host HOST        ssh destination ([user@]host, or an alias from ~/.ssh/config)
  --local            run on this machine instead
  --workdir DIR      run directory, e.g. gs://bucket/run or runs/x (becomes --config.workdir=DIR)
  --config PATH      the config, if not given as the positional CONFIG
  --dry-run          print the commands, one per line, and run none
  -h, --help         this text

Arguments starting with --config. and everything after `--` are passed to seal_jax.main unchanged.
The remote log is ~/seal_jax/logs/run.log; after a Ctrl-C the job keeps running and
  ssh HOST 'tail -F seal_jax/logs/run.log'
reattaches to it.
EOF
}

HOST='' LOCAL=0 WORKDIR='' CONFIG=''
ARGS=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --host) HOST=${2:?--host needs a value}; shift ;;
    --local) LOCAL=1 ;;
    --workdir) WORKDIR=${2:?--workdir needs a value}; shift ;;
    --config) CONFIG=${2:?--config needs a value}; shift ;;
    --config=*) CONFIG=${1#--config=} ;;
    --dry-run) DRY_RUN=1 ;;
    --config.*) ARGS+=("$1") ;;
    --) shift; ARGS+=("$@"); break ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [[ -z $CONFIG ]] || die "two configs: $CONFIG and $1"; CONFIG=$1 ;;
  esac
  shift
done
[[ -n $HOST || $LOCAL == 1 ]] || die "give --host HOST or --local (launch/gpu.sh --help)"
[[ -z $HOST || $LOCAL == 0 ]] || die "--host and --local exclude each other"
[[ -n $CONFIG ]] || die "a config path is required, e.g. configs/arc_llama1b.py"
ROOT=$(repo_root)
# The same relative path names the config in the remote checkout; catch a typo before the copy and install.
[[ -f "$ROOT/${CONFIG%%:*}" ]] || die "no config ${CONFIG%%:*} under $ROOT (paths are relative to it)"
[[ -n $WORKDIR ]] && ARGS+=("--config.workdir=$WORKDIR")

if ((LOCAL)); then
  cd "$ROOT"
  [[ -x .venv/bin/python ]] || run "${PYTHON:-python3}" -m venv .venv
  run .venv/bin/python -m pip install -q -e '.[cuda]'
  run .venv/bin/python -m seal_jax.main --config "$CONFIG" "${ARGS[@]}"
  exit
fi

TARBALL="${TMPDIR:-/tmp}/seal_jax-gpu.tgz"
pack_tree "$ROOT" "$TARBALL"
run scp -q "$TARBALL" "$HOST:seal_jax.tgz"
run ssh "$HOST" "$(remote_setup cuda seal_jax.tgz)"
# Detached start plus a separate log stream, as on TPU VMs: the run outlives a dropped connection.
run ssh "$HOST" "$(remote_start --config "$CONFIG" "${ARGS[@]}")"
run ssh "$HOST" "$(remote_follow)"
