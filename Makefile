# `make demo` and `make test` work from a fresh clone: they create .venv, install, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# install stamps: STAMP, the video and dev extras (tests, lint, benchmarks); DEMO_STAMP, video only
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-video
PYTEST_ARGS ?=
# Idle OpenMP threads spin by default; on a shared 2-core machine that made small torch ops 10-100x
# slower (measured). Passive waiting costs nothing measurable on the big ops.
export OMP_WAIT_POLICY ?= PASSIVE
# Property tests draw the same examples on every run of `make test` (tests/conftest.py, "ci"
# profile); run pytest directly (profile "dev") to explore new random examples.
export HYPOTHESIS_PROFILE ?= ci

.PHONY: install demo test test-fast lint browser bench clean

$(DEMO_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[video]'
	touch $(DEMO_STAMP)

# `make demo` installs without the dev extras (11-20 s less from a fresh clone); `make test` adds them
$(STAMP): $(DEMO_STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[video,dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless chromium for the explorer's browser test (Debian package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

demo: $(DEMO_STAMP)
	$(PY) -m otcluster_video.demo

test: install browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# ruff on everything; mypy on the core and tests/typing (configuration: [tool.mypy] in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check otcluster otcluster_video benchmarks tests
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/bench_solver.py --out runs/bench/$$(date +%Y%m%d-%H%M%S)  # a new folder: never over a page

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
