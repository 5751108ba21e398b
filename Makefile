# Two commands on a fresh machine: `make demo` (the main job on the bundled test data)
# and `make test` (the test suite). Both install into $(VENV) first.
VENV ?= .venv
PY := $(VENV)/bin/python
VIRNUCPRO := $(VENV)/bin/virnucpro
# The pinned torch is installed first (here: a local CPU wheel; elsewhere: PyPI's build).
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast test-min clean

# `make test-min`: the fast tests plus one end-to-end predict, with the lowest dependency versions
# pyproject.toml allows.
VENV_MIN ?= .venv-min

# $(call install_into,VENV,EXTRA PIP OPTIONS): a virtual environment with the package and its test extra.
define install_into
	python3 -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet "$(TORCH)"
	$(1)/bin/python -m pip install --quiet $(2) -e '.[test]'
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call install_into,$(VENV),)

$(VENV_MIN)/.installed: pyproject.toml tests/min-versions.txt
	$(call install_into,$(VENV_MIN),-c tests/min-versions.txt)

install: $(VENV)/.installed

demo: install
	$(VIRNUCPRO) make-test-models test_models
	$(VIRNUCPRO) predict assets/test_reads.fa assets/test_reads.fq.gz --outdir results \
		--chunk-length 300 --classifier test_models/classifier_test_tiny_300.pt \
		--esm-model test_models/esm2_t2_test_tiny.pt --dna-model test_models/dna

# `make test`: everything. `make test-fast`: the everyday loop, without the tests marked slow
# (those that start processes: engine and CLI runs, kill/resume, workflow and benchmark smoke).
test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -m pytest -q -m "not slow or end_to_end"

clean:
	rm -rf results test_models .pytest_cache
