#!/usr/bin/env bash
# One prepared GPU measurement (at most about 8 minutes): steps/s and peak memory of DCGAN 64x64 (batch 256),
# WaveGAN paper preset (batch 64) and text (batch 64), fp32 vs bf16, torch.compile off vs on.
# Writes benchmarks/results/gpu.json and gpu.md. Without a GPU it runs the --smoke version on the CPU.
#   bash benchmarks/gpu.sh [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
if [ "${1:-}" != "--smoke" ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  timeout 480 "$PY" benchmarks/bench_gpu.py --out benchmarks/results
else
  echo "no GPU: smoke run on the CPU (tiny sizes; not a measurement)" >&2
  timeout 480 "$PY" benchmarks/bench_gpu.py --smoke --out benchmarks/results
fi
