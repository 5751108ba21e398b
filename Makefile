# Two commands on a fresh machine: `make demo` (the main job on the bundled test data)
# and `make test` (the test suite). Both install into $(VENV) first.
VENV ?= .venv
PY := $(VENV)/bin/python
VIRNUCPRO := $(VENV)/bin/virnucpro
# The pinned torch is installed first (here: a local CPU wheel; elsewhere: PyPI's build).
TORCH ?= torch==2.13.0

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VIRNUCPRO) make-test-models test_models
	$(VIRNUCPRO) predict assets/test_reads.fa assets/test_reads.fq.gz --outdir results \
		--chunk-length 300 --classifier test_models/classifier_test_tiny_300.pt \
		--esm-model test_models/esm2_t2_test_tiny.pt --dna-model test_models/dna

test: install
	$(PY) -m pytest -q

clean:
	rm -rf results test_models .pytest_cache
