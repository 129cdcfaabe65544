# The two commands of the README. Both create .venv/ on first use and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# stamp files: reinstall only when pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/mobilenets train --recipe small-data --out runs/demo --overwrite

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
