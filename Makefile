# Two commands on a fresh machine: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Extras installed by `make test`: the TF oracle (reference), the bench's plotting, tests.
EXTRAS ?= test,bench,reference,tune,peers
PYTEST_ARGS ?=

.PHONY: demo test test-slow system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Debian packages: the aarch64 cross linker, and qemu-user + mmdebstrap for the emulated
# arm64 device. Installed when missing and when we may (root with apt-get); otherwise the
# tests that need them skip and say why.
SYSTEM_PACKAGES := gcc-aarch64-linux-gnu qemu-user-static binfmt-support mmdebstrap
system-deps:
	@if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1 \
	    || ! command -v mmdebstrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "note: cannot apt-get install $(SYSTEM_PACKAGES); arm64 and device tests will be skipped"; fi; \
	fi
	@if [ "$$(id -u)" = 0 ] && command -v update-binfmts >/dev/null 2>&1; then \
	  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true; \
	  update-binfmts --enable qemu-aarch64 2>/dev/null || true; \
	fi

DEMO_WORKLOAD ?= hifigan-up1
demo: $(STAMP)
	$(VENV)/bin/conv1d-transpose demo --workload $(DEMO_WORKLOAD)
	mkdir -p out
	$(VENV)/bin/conv1d-transpose bench --quick --workload $(DEMO_WORKLOAD) --targets host \
	    --json out/demo-bench.json --plot out/demo-bench.png

# The default run (well under 20 minutes on 2 cores); `test-slow` runs the long
# campaigns (the whole sweep on TVM, the wheel in a clean venv, 10,000-call memory runs).
test: $(STAMP) system-deps
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

test-slow: $(STAMP) system-deps
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
