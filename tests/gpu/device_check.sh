#!/usr/bin/env bash
# One prepared run on the GPU device machine: the GPU tests, then the GPU benchmark.
# Results land in $OUT (the device tool brings them back); see docs/performance.md, "GPU".
# Prepare once where pip reaches PyPI (the device image, Python 3.12, lacks these two packages):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl fair-esm==2.0.0 biopython==1.85
# Then: device run, carry [".whl"], timeout_s 600, command: bash tests/gpu/device_check.sh
# Time limits below: tests 320 s (about 40 spawned workers, each loading a model), benchmark
# 160 s, scaling 90 s; together under the device tool's 600 s per command.
set -uo pipefail
OUT=${OUT:-/tmp/virnucpro-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
status=0
timeout 320 python3 -m pytest -q -s -m gpu tests/gpu -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" || status=1
timeout 160 python3 benchmarks/gpu_esm_throughput.py --json "$OUT/gpu_esm.json" 2>&1 | tee "$OUT/gpu_esm.log" || status=1
timeout 90 python3 benchmarks/gpu_esm_throughput.py --scaling --scaling-tokens 1000000 \
    --json "$OUT/gpu_scaling.json" 2>&1 | tee "$OUT/gpu_scaling.log" || status=1
exit $status
