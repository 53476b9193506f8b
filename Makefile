# scorematch: `make demo` (install, then train, sample, evaluate and plot SSM-VR on the 2-D Gaussian mixture gmm2d), `make test`
# (the test suite without the slow end-to-end tests), `make test-all` (every test: what CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo-output

.PHONY: install demo test test-slow test-all lint bench bench-install bench-smoke docs clean

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

# the tests marked slow (end-to-end runs that train for seconds each, subprocesses, DDP) are left out
test: install
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow"

# the slow end-to-end tests alone (make test and make test-slow together are make test-all)
test-slow: install
	$(PY) -m pytest -q -n 2 --dist loadgroup -m slow

test-all: install
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples

# the peers (torch stays the installed CPU build: k-diffusion and diffusers-ncsn go in without deps)
bench-install: install
	$(PY) -m pip install --quiet torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])') -e '.[bench]'
	$(PY) -m pip install --quiet --no-deps k-diffusion==0.1.1.post1 diffusers-ncsn==0.1.0

# every benchmark (peers included), results in benchmarks/results/, docs/benchmarks.md tables refreshed
bench: bench-install
	$(PY) -m benchmarks

bench-smoke: install
	$(PY) -m benchmarks.compare --smoke
	$(PY) -m benchmarks.scaling --smoke

# the documentation site in site/ (the docs extra: MkDocs, Material, mkdocstrings, latex2mathml)
docs: install
	$(PY) -m pip install --quiet -e '.[docs]'
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache
