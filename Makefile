# Two entry points, as README.md says: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# editable_mode=compat: a .pth entry for the clone, so that a folder named invkit in the current
# directory (the clone itself, seen from its parent) cannot shadow the installed package
EDITABLE := --config-settings editable_mode=compat -e

install: $(PY)
	$(PY) -m pip install --quiet $(EDITABLE) .

demo: install
	$(VENV)/bin/invkit study --demo

# tmeasures, for tests/test_layers.py's side-by-side: installed without the OpenCV and
# scikit-image it declares (its PyTorch measures use neither); statsmodels, which it imports
# without declaring it, is in the test extra.
test: $(PY)
	.ci/chromium
	$(PY) -m pip install --quiet $(EDITABLE) '.[test]'
	$(PY) -m pip install --quiet ./plugins/invkit-jigsaw
	$(PY) -m pip install --quiet --no-deps tmeasures==1.2.11
	$(MAKE) lint
	$(PY) -m pytest

lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
