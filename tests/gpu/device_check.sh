#!/usr/bin/env bash
# One prepared run on the GPU device machine: the GPU tests, then the GPU benchmark.
# Results land in $OUT (the device tool brings them back); see docs/performance.md, "GPU".
# Prepare once where pip reaches PyPI (the device image, Python 3.12, lacks these two packages):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl fair-esm==2.0.0 biopython==1.85
# Then: device run, carry [".whl"], timeout_s 600, command: bash tests/gpu/device_check.sh
# Time limits below (2026-12-04 figures in brackets): tests 350 s (about 30 spawned workers, each
# loading a model; the 18 engine tests took 308 s, the rotary kernel's child run adds ~15 s),
# benchmark 140 s and scaling 60 s (the two together about 110 s); with the install and the
# preflight, under the device tool's 600 s per command.
set -uo pipefail
OUT=${OUT:-/tmp/virnucpro-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"
nvidia-smi -L
# Fail at once, and say why, when something the run needs is missing: a run whose GPU tests all
# skip would otherwise end "green" having measured nothing.
python3 - <<'PY' || { echo "device_check: preflight failed, nothing measured" | tee "$OUT/preflight_failed.txt"; exit 1; }
import click, einops, esm, pytest, rich, torch, transformers, Bio  # noqa: F401
from virnucpro.engine import devices
print("torch", torch.__version__, "CUDA", torch.version.cuda, "transformers", transformers.__version__)
count = devices.visible_gpu_count()
assert count > 0 and torch.cuda.is_available(), "no CUDA GPU visible: the GPU tests would all skip"
print("visible GPUs:", count)
PY
status=0
# SIGINT at the limit (SIGKILL 15 s later): pytest then prints the summary of what ran, and -v
# has named every test as it finished; durations show where the time went.
timeout -s INT -k 15 350 python3 -m pytest -v -rA -s -m gpu tests/gpu -p no:cacheprovider --durations=0 2>&1 \
    | tee "$OUT/gpu_tests.log" || status=1
timeout -s INT -k 10 140 python3 benchmarks/gpu_esm_throughput.py --json "$OUT/gpu_esm.json" 2>&1 \
    | tee "$OUT/gpu_esm.log" || status=1
timeout -s INT -k 5 60 python3 benchmarks/gpu_esm_throughput.py --scaling --scaling-tokens 1000000 \
    --json "$OUT/gpu_scaling.json" 2>&1 | tee "$OUT/gpu_scaling.log" || status=1
exit $status
