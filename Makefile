# Thin wrappers; the work is in scripts/, src/ and pytest.
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST := $(BIN)/pytest
SANDBOX_TEST := .sandbox-test

.PHONY: setup demo drill test lint bench sandbox-down clean

setup:
	@bash scripts/setup.sh

demo: setup  ## start the sandbox, run the daily checks, print the summary and report paths
	@$(BIN)/opsverify sandbox up
	@$(PYTEST) -m daily -q; rc=$$?; \
	  echo; echo "summary: $$(readlink -f reports/latest)/summary.html"; \
	  echo "report: $$(readlink -f reports/latest)/report.html"; exit $$rc

drill: setup  ## the disaster-recovery drill set against the sandbox
	@$(BIN)/opsverify sandbox up
	@$(PYTEST) -m dr -q; rc=$$?; \
	  echo; echo "summary: $$(readlink -f reports/latest)/summary.html"; \
	  echo "report: $$(readlink -f reports/latest)/report.html"; exit $$rc

test: setup lint  ## lint, then the suite's own tests (real servers in a separate sandbox)
	@bash scripts/setup-tests.sh
	@$(BIN)/opsverify sandbox up --state-dir $(SANDBOX_TEST) >/dev/null
	@$(PYTEST) tests -n 2 --no-reports --sandbox-dir $(SANDBOX_TEST); rc=$$?; \
	  $(BIN)/opsverify sandbox down --state-dir $(SANDBOX_TEST); exit $$rc

lint: setup
	@$(BIN)/ruff check --no-cache --quiet . && echo "ruff: clean"
	@$(BIN)/mypy

bench: setup  ## benchmarks against the peer tools (gzip -t, redis-check-rdb); prints ratios, not a test
	@$(BIN)/python bench/bench_gzip.py
	@$(BIN)/python bench/bench_rdb.py
	@$(BIN)/python bench/bench_parallel.py
	@$(BIN)/python bench/bench_profile.py
	@$(BIN)/python bench/bench_tls.py
	@$(BIN)/python bench/bench_maintenance.py

sandbox-down:
	$(BIN)/opsverify sandbox down

clean: sandbox-down
	rm -rf $(VENV) reports/2* reports/latest

.PHONY: report
report:  ## render the newest run's allure-results (or RUN=reports/<run>) into <run>/allure-report.html
	@bash scripts/report.sh $(RUN)
