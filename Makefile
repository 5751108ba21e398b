# Two commands on a fresh machine: `make demo` (the pipeline under Nextflow on the bundled test
# data) and `make test` (the test suite). Both install into $(VENV) first, and Nextflow from
# Maven Central into build/nextflow (`make nextflow`; for development, see docs/usage.md).
VENV ?= .venv
PY := $(VENV)/bin/python
VIRNUCPRO := $(VENV)/bin/virnucpro
# The pinned torch is installed first (here: a local CPU wheel; elsewhere: PyPI's build).
TORCH ?= torch==2.13.0

# Nextflow for development and CI: the release tested in full and the oldest the manifest admits.
NXF_VER ?= 25.04.4
NXF_VER_OLDEST ?= 24.10.0
NEXTFLOW_DIR := build/nextflow
NEXTFLOW := $(NEXTFLOW_DIR)/$(NXF_VER)/nextflow
NEXTFLOW_OLDEST := $(NEXTFLOW_DIR)/$(NXF_VER_OLDEST)/nextflow

.PHONY: install nextflow demo demo-cli test test-fast test-min test-containers clean

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

$(NEXTFLOW_DIR)/%/nextflow: tools/nextflow/install.sh tools/nextflow/pom.xml
	tools/nextflow/install.sh $* $(NEXTFLOW_DIR)/$*

nextflow: $(NEXTFLOW) $(NEXTFLOW_OLDEST)

# The pipeline on the bundled data with tiny models (-profile test) -> results_test/
demo: install $(NEXTFLOW)
	PATH="$(abspath $(VENV))/bin:$$PATH" NXF_ANSI_LOG=false $(NEXTFLOW) run . -profile test --outdir results_test

# The same data through `virnucpro predict` on this machine -> results/
demo-cli: install
	$(VIRNUCPRO) make-test-models test_models
	$(VIRNUCPRO) predict assets/test_reads.fa assets/test_reads.fq.gz --outdir results \
		--chunk-length 300 --classifier test_models/classifier_test_tiny_300.pt \
		--esm-model test_models/esm2_t2_test_tiny.pt --dna-model test_models/dna

# `make test`: everything, the pipeline under Nextflow included. `make test-fast`: the everyday
# loop, without the tests marked slow (those that start processes: engine, CLI and pipeline runs,
# kill/resume, benchmark smoke).
test: install nextflow
	PATH="$(abspath $(VENV))/bin:$$PATH" VIRNUCPRO_REQUIRE_NEXTFLOW=1 \
		VIRNUCPRO_NEXTFLOW=$(abspath $(NEXTFLOW)) VIRNUCPRO_NEXTFLOW_OLDEST=$(abspath $(NEXTFLOW_OLDEST)) \
		$(PY) -m pytest -q -m "not containers"

test-fast: install
	$(PY) -m pytest -q -m "not slow"

test-min: $(VENV_MIN)/.installed
	$(VENV_MIN)/bin/python -m pytest -q -m "(not slow or end_to_end) and not containers"

# `make test-containers` (CI, as root on Debian): podman set up (tools/containers/podman-setup.sh),
# the CPU image built from a debootstrapped Debian base and PyPI, without Docker Hub
# (tools/containers/build-cpu-image.sh; its downloads are cached in /var/cache/virnucpro-ci), then
# the CLI and `nextflow run . -profile test,podman` in it against the same runs without containers.
test-containers: install nextflow
	tools/containers/podman-setup.sh
	image=$$(tools/containers/build-cpu-image.sh) && \
		PATH="$(abspath $(VENV))/bin:$$PATH" VIRNUCPRO_CONTAINER_IMAGE="$$image" VIRNUCPRO_REQUIRE_NEXTFLOW=1 \
		VIRNUCPRO_NEXTFLOW=$(abspath $(NEXTFLOW)) $(PY) -m pytest -q -m containers tests/test_containers.py

clean:
	rm -rf results results_test test_models .pytest_cache work .nextflow .nextflow.log*
