# The two commands that do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: install run test lint migration

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

run: install
	$(PY) stack.py $(ARGS)

# The last two hold the imports to DESIGN section 2's layers: lint-imports the packages
# (contracts in pyproject.toml), tests/layers.py the top-level modules it cannot read.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m tests.layers

# Two test processes (pytest-xdist), then the tests marked solo, alone. Exit status 5 is
# "nothing selected", as when ARGS names tests of only one of the two kinds.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not solo" $(ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m solo $(ARGS) || [ $$? -eq 5 ]

# A new migration from the difference between models/tables.py and the migrations so far,
# found on a scratch SQLite database brought to head first. Review the file it writes.
SCRATCH_DB := .data/autogenerate.db
migration: install
	@test -n "$(MESSAGE)" || { echo 'usage: make migration MESSAGE="what changed"' >&2; exit 2; }
	@mkdir -p .data && rm -f $(SCRATCH_DB)*
	$(PY) -m alembic -x url=sqlite:///$(SCRATCH_DB) upgrade head
	$(PY) -m alembic -x url=sqlite:///$(SCRATCH_DB) revision --autogenerate -m "$(MESSAGE)"
	@rm -f $(SCRATCH_DB)*
