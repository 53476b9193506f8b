# scorematch: `make demo` (install + train/sample/plot on the seeds' 2-D mixture), `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-output

.PHONY: install demo test lint bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/scorematch train --data gmm2d --objective ssm_vr --steps 2000 --seed 0 --out $(DEMO)/gmm2d-ssm_vr --no-progress
	$(VENV)/bin/scorematch sample $(DEMO)/gmm2d-ssm_vr --n 2000 --seed 0 --out $(DEMO)/gmm2d-ssm_vr/samples.npz
	$(VENV)/bin/scorematch eval $(DEMO)/gmm2d-ssm_vr --n 2000
	$(VENV)/bin/scorematch plot $(DEMO)/gmm2d-ssm_vr --out $(DEMO)/plots
	@echo "demo written to $(DEMO)/ (plots in $(DEMO)/plots)"

test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples

bench: install
	$(PY) -m benchmarks

docs: install
	$(PY) -m pip install --quiet -e '.[docs]'
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache
