# dialswitch: `make run` installs everything and starts the switch; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config/dialswitch.toml
RUNTIME_DEBS := espeak-ng libopus0 libssl3
TEST_DEBS := sip-tester baresip-core sipvicious chromium coturn
PJSUA2_INPUTS := $(wildcard deploy/pjsua2/*.sh deploy/pjsua2/*.h deploy/pjsua2/patches/*.patch)
PHONE := switch/web/phone

.PHONY: install run test test-tools lint unit integration bench clean

install: $(VENV)/.installed $(PHONE)/node_modules/.installed

$(VENV)/.installed: pyproject.toml $(PJSUA2_INPUTS)
	deploy/apt-install.sh $(RUNTIME_DEBS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e .
	wheel=$$(deploy/pjsua2/build.sh $(abspath $(PY)) | tail -n 1) && \
	  $(PY) -m pip install -q --no-deps --force-reinstall "$$wheel"
	$(PY) -c "import pjsua2" || { echo "dialswitch: pjsua2 did not import; see deploy/pjsua2/README.md" >&2; exit 1; }
	touch $@

# The browser phone's JsSIP, pinned by package-lock.json; npm ci also bundles it for the
# page (package.json's postinstall). Node from Debian unless a node/npm is already there.
$(PHONE)/node_modules/.installed: $(PHONE)/package.json $(PHONE)/package-lock.json
	command -v npm >/dev/null || deploy/apt-install.sh nodejs npm
	cd $(PHONE) && npm ci --no-audit --no-fund
	touch $@

run: install
	$(VENV)/bin/dialswitch --config $(CONFIG)

$(VENV)/.test-tools: $(VENV)/.installed pyproject.toml
	deploy/apt-install.sh $(TEST_DEBS)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test-tools: $(VENV)/.test-tools $(PHONE)/node_modules/.installed

lint: test-tools
	$(VENV)/bin/ruff check switch media tests $(wildcard bench)
	$(VENV)/bin/ruff format --check switch media tests $(wildcard bench)
	$(VENV)/bin/mypy switch media

unit: test-tools
	$(VENV)/bin/pytest -q tests/unit tests/component

integration: test-tools
	$(VENV)/bin/pytest -q tests/integration

# The unit and component tiers run first, under the call path's coverage floor
# (pyproject.toml, [tool.coverage.report]); then the integration tier.
test: test-tools lint
	$(VENV)/bin/pytest -q tests/unit tests/component --cov --cov-report=term
	$(VENV)/bin/pytest -q tests/integration

bench: install test-tools
	$(PY) bench/dial_bench.py

clean:
	rm -rf $(VENV) var build *.egg-info $(PHONE)/node_modules
