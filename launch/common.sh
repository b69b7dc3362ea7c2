# shellcheck shell=bash
# Helpers shared by launch/tpu_vm.sh and launch/gpu.sh (sourced, not run).
#
# Every command that touches the outside world goes through `run`, so --dry-run prints exactly the argv that would
# be executed (shell-quoted, one command per line) and executes nothing.  Commands sent to a remote
# shell are single-line strings built with `quote`, so configs and overrides containing spaces or quotes survive
# the extra round of word splitting on the far side.

DRY_RUN=0
REMOTE_DIR=seal_jax  # checkout on the remote side, relative to the login user's home directory

die() {
  echo "error: $*" >&2
  exit 2
}

# Shell-quotes its arguments into one string that any POSIX shell splits back into them: words of plain characters
# stay as they are, others go in single quotes (printf %q's backslashes and $'..' are bash-only and unreadable).
quote() {
  local a q="'\\''" out=()
  for a in "$@"; do
    if [[ $a =~ ^[[:alnum:]_./:=@%+,-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/$q}'")
    fi
  done
  local IFS=' '
  printf '%s' "${out[*]}"
}

run() {
  if ((DRY_RUN)); then
    quote "$@"
    echo
  else
    "$@"
  fi
}

# A read-only query whose exit status decides what to do next (does the TPU exist?).  In a dry run it is printed
# and counts as "no", so the dry run shows the full create path.
probe() {
  if ((DRY_RUN)); then
    quote "$@"
    echo
    return 1
  fi
  "$@" >/dev/null 2>&1
}

repo_root() {
  git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse --show-toplevel
}

# Tarball of the working tree as git sees it: tracked files (with uncommitted edits) plus untracked files that are
# not ignored, so .venv/, runs/, caches and .git itself stay home.  Files deleted but not yet committed are skipped.
pack_tree() {
  local root=$1 tarball=$2
  # shellcheck disable=SC2016  # $1/$2 belong to the inner bash, not to this one
  run bash -c 'cd "$1" && git ls-files -z --cached --others --exclude-standard --deduplicate | while IFS= read -r -d "" f; do [ -e "$f" ] && printf "%s\0" "$f"; done | tar --null -T - -czf "$2"' pack "$root" "$tarball"
}

# Remote: unpack the shipped tree over the checkout and install the package with EXTRA into .venv.
# seal_jax needs Python >= 3.11 (jax >= 0.7 has no wheels for 3.10; docs/scale.md), but the Cloud TPU VM images
# are Ubuntu 22.04 with Python 3.10: when the host's python3 is older, uv fetches a standalone CPython 3.11.
remote_setup() {
  local extra=$1 tarball=$2
  printf '%s' "set -e; mkdir -p $REMOTE_DIR; tar -xzf $(quote "$tarball") -C $REMOTE_DIR; cd $REMOTE_DIR; \
if [ ! -x .venv/bin/python ]; then \
if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then python3 -m venv .venv; \
else python3 -m pip install -q --user uv && python3 -m uv venv -q --seed --python 3.11 .venv; fi; fi; \
.venv/bin/python -m pip install -q -e $(quote ".[$extra]")"
}

# Remote: start the job detached (setsid nohup), so a dropped ssh connection or a Ctrl-C on the log stream does
# not kill a run that may take hours.  Its output goes to logs/run.log in the checkout, its pid to logs/run.pid and
# its exit status to logs/run.rc when it ends.
remote_start() {
  local job inner
  job=$(quote .venv/bin/python -m seal_jax.main "$@")
  inner="$job > logs/run.log 2>&1; echo \$? > logs/run.rc"
  printf '%s' "set -e; cd $REMOTE_DIR; mkdir -p logs; rm -f logs/run.rc; \
setsid nohup bash -c $(quote "$inner") > /dev/null 2>&1 < /dev/null & echo \$! > logs/run.pid"
}

# Remote: stream the log from the start until the job's process exits, then exit with the job's status.
remote_follow() {
  printf '%s' "cd $REMOTE_DIR; tail -n +1 -F --pid=\"\$(cat logs/run.pid)\" logs/run.log 2>/dev/null; \
exit \"\$(cat logs/run.rc 2>/dev/null || echo 1)\""
}
