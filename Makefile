# Two commands for people: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO_DB := instance/demo.db
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test lint install browser clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# A fresh SQLite database, migrated and seeded, served at http://127.0.0.1:5000
# with localstripe beside it and mail written to instance/mail/.
demo: install
	mkdir -p instance
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	CROWDFUND_ENV=development DATABASE_URL=sqlite:///$(CURDIR)/$(DEMO_DB) $(PY) -m crowdfund.dev.server

# Ruff (rules and format), mypy and the layer contracts (import-linter) over
# the project code (settings in pyproject.toml); zero findings.
LINTED := crowdfund tests migrations config.py wsgi.py worker.py
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Chromium for the browser tests, with Pango and fonts for WeasyPrint's PDFs. Where
# /usr/bin/chromium is missing it is installed when this user may (root, with
# apt-get); otherwise the run stops at once with one line naming the command.
CHROMIUM := /usr/bin/chromium
BROWSER_PACKAGES := chromium fonts-dejavu-core libpango-1.0-0 libpangoft2-1.0-0
APT_MAY := $(and $(filter 0,$(shell id -u)),$(shell command -v apt-get))

browser:
	$(if $(wildcard $(CHROMIUM)),@true,$(if $(APT_MAY),DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y $(BROWSER_PACKAGES),$(error \
		$(CHROMIUM) is missing; install it with: sudo apt-get install -y $(BROWSER_PACKAGES))))

# The linters, then the whole suite on SQLite, then on PostgreSQL when TEST_DATABASE_URL is set.
test: browser install lint
	env -u TEST_DATABASE_URL $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)
	@if [ -n "$$TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL: $$TEST_DATABASE_URL"; \
		$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); \
	else echo "== TEST_DATABASE_URL not set: PostgreSQL run skipped"; fi

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
