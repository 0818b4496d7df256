# Two commands on a fresh machine: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Extras installed by `make test`: the TF oracle (reference), the bench's plotting, tests.
EXTRAS ?= test,bench,reference,tune
PYTEST_ARGS ?=

.PHONY: demo test test-fast system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Debian packages for cross builds: the aarch64 cross linker. Installed when missing and
# when we may (root with apt-get); otherwise the arm64 tests skip and say why.
system-deps:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null; \
	  else echo "note: aarch64-linux-gnu-gcc missing and cannot apt-get install it; arm64 builds will be skipped"; fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/conv1d-transpose demo

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
