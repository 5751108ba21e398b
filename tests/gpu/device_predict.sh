#!/usr/bin/env bash
# One prepared run on the GPU device machine: the whole `virnucpro predict` at real model sizes
# (benchmarks/gpu_predict.py: random ESM-2 3B, a DNABERT-S-sized DNA model, the reference MLP).
# Prepare the wheels as for tests/gpu/device_check.sh (its header), then: device run, carry
# [".whl"], timeout_s 600, command: bash tests/gpu/device_predict.sh
# Sized for the device tool's 600 s per command: writing the random 3B checkpoint (11 GB) and
# loading it take a few minutes of their own, so the read sets are a fifth of the issue's
# (20,000 reads, 200 contigs); the 1M-read time is extrapolated from the reads' rate.
set -uo pipefail
OUT=${OUT:-/tmp/virnucpro-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=index,name,power.limit --format=csv
timeout -s INT -k 15 540 python3 benchmarks/gpu_predict.py --esm 3B --reads 20000 --contigs 200 \
    --workdir /tmp/virnucpro-gpu-predict --json "$OUT/gpu_predict.json" 2>&1 | tee "$OUT/gpu_predict.log"
