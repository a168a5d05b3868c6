# The service-recovery backend. Two commands matter: `make run` and `make test`.
# Both create the virtual environment and generate the protobuf code when needed.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
SHELL  := bash
.SHELLFLAGS := -eu -o pipefail -c
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)

.PHONY: run demo test test-unit test-integration test-e2e test-faults bench lint proto contract lock clean venv tools-prometheus

venv: $(VENV)/.installed

# The repo root and gen/ go on the venv's path with a .pth file, so `python -m services.<name>`
# works from any directory without installing the project as a package.
$(VENV)/.installed: requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# This machine's pip config names local mirrors that may not exist; hide only those warnings.
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock 2>&1 \
		| { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" \
		> "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/service_recovery.pth"
	touch $@

proto: gen/.generated

gen/.generated: $(PROTOS) $(VENV)/.installed scripts/gen_proto.py
	$(PY) scripts/gen_proto.py
	touch $@

# The published contract (proto/published/: AsyncAPI, JSON Schemas), generated from the code; a unit test fails
# while the committed files differ from what this writes.
contract: proto
	$(PY) scripts/gen_contract.py

# promtool and the prometheus server (Debian's `prometheus` package) for the rule tests and the scrape test;
# installs only when missing and leaves no system Prometheus running (see the script).
tools-prometheus:
	bash scripts/ensure_prometheus.sh

run: proto
	$(PY) -m services

# The system on its embedded default, a dozen customers' scenario, a timeline per case (scripts/demo.py).
demo: proto
	$(PY) scripts/demo.py

# The fault suite (about 10 minutes) runs on its own: `make test-faults`, nightly-style (README, Reliability).
test: proto tools-prometheus
	$(PY) -m pytest -q --ignore=tests/faults

test-unit: proto tools-prometheus
	$(PY) -m pytest -q tests/unit

test-integration: proto
	$(PY) -m pytest -q tests/integration

test-e2e: proto tools-prometheus
	$(PY) -m pytest -q tests/e2e

# Crashes, replicas, a paused broker, a restarted Postgres, stopped schedulers and poison records while a
# stream of failure reports runs; prints what it injected and the invariant counts. Then the fuzz suite's long
# mode: 10,000 generated records per input topic and 1,000 generated requests per RPC.
test-faults: proto
	$(PY) -m pytest -q -s tests/faults
	FUZZ_RECORDS_PER_TOPIC=10000 FUZZ_CALLS_PER_METHOD=1000 $(PY) -m pytest -q -s tests/e2e/test_fuzz.py

# Every module in tests/bench/ is a benchmark printing its figures beside a baseline measured in the same run.
BENCHES := $(basename $(notdir $(filter-out tests/bench/__init__.py,$(wildcard tests/bench/*.py))))

bench: proto
	for bench in $(BENCHES); do $(PY) -m tests.bench.$$bench; done

lint: proto
	$(PY) scripts/buf.py lint
	$(PY) scripts/buf.py breaking
	$(PY) -m ruff check services tests scripts

lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > requirements.lock.new
	{ head -1 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm requirements.lock.new

clean:
	rm -rf gen .pytest_cache .ruff_cache
