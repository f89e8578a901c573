# The two commands of the README: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint faults bench bench-quick bench-kb bench-kpis clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Meridian needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/meridian dev

# promtool checks deploy/prometheus (config, rules and their unit tests); Debian packages it.
$(VENV)/bin/promtool: | $(STAMP)
	@set -e; tmp=$$(mktemp -d); cd $$tmp; apt-get download -qq prometheus 2>/dev/null; \
	  dpkg-deb -x prometheus_*.deb unpacked; cp unpacked/usr/bin/promtool $(CURDIR)/$@; rm -rf $$tmp

test: $(STAMP) $(VENV)/bin/promtool
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

# Intake, escalation timing, shift-end handoff, read side and footprint, each against the bare
# engine on the same server (docs/performance.md): the issue's sizes take about 3 hours, --quick ~10 min.
bench: $(STAMP)
	$(VENV)/bin/python -m bench

bench-quick: $(STAMP)
	$(VENV)/bin/python -m bench --quick

# Knowledge-base search: quality on bench/kb_eval, latency with 100,000 translations (~6 min).
bench-kb: $(STAMP)
	$(VENV)/bin/python bench/kb_search.py --translations 100000

# KPI queries over a year of follow-the-sun history: 1,000,000 tickets (~20 min, ~6 GB of disk).
bench-kpis: $(STAMP)
	$(VENV)/bin/python bench/kpis.py --tickets 1000000

# Fault injection under a stream of tickets: worker SIGKILLs, Temporal and PostgreSQL outages, a
# failing webhook; the slow runs too (~8 min). Counts go to bench/results/faults.json.
faults: $(STAMP)
	MERIDIAN_FAULTS_REPORT=bench/results/faults.json $(VENV)/bin/pytest tests/faults -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
