#!/usr/bin/env bash
# One prepared GPU measurement (at most about 8 minutes): steps/s and peak memory of DCGAN 64x64 (batch 256),
# WaveGAN paper preset (batch 64) and text (batch 64), fp32 vs bf16, torch.compile off vs on, DCGAN channels-last
# (benchmarks/bench_gpu.py, 330 s budget); then genkit's step against a plain PyTorch loop on the GPU for the three
# default domains, with the share of each step spent waiting for data (benchmarks/bench_engine.py, 100 s at most).
# Writes benchmarks/results/gpu.json, gpu.md, engine-gpu.json and engine-gpu.txt.
# Without a GPU it runs the --smoke version on the CPU.
#   bash benchmarks/gpu.sh [--smoke]          PYTHON=python3 bash benchmarks/gpu.sh   (another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p benchmarks/results
if [ "${1:-}" != "--smoke" ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  timeout 380 "$PY" benchmarks/bench_gpu.py --budget 330 --out benchmarks/results
  timeout 100 "$PY" benchmarks/bench_engine.py --device cuda --rounds 3 --steps 20 \
    --json benchmarks/results/engine-gpu.json | tee benchmarks/results/engine-gpu.txt
else
  echo "no GPU: smoke run on the CPU (tiny sizes; not a measurement)" >&2
  timeout 480 "$PY" benchmarks/bench_gpu.py --smoke --out benchmarks/results
  timeout 120 "$PY" benchmarks/bench_engine.py --batch-size 8 --rounds 1 --steps 2 --warmup 1 \
    --json benchmarks/results/engine-smoke.json
fi
