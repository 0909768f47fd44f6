#!/usr/bin/env bash
# The training-throughput scenarios (a)-(d) of bench_train.py on one CUDA GPU, bf16 on both sides, textcl against
# SentenceTransformerTrainer, in under 8 minutes. The GPU machine has no network, and no `datasets`:
#   here, once:   .venv/bin/python benchmarks/gpu_prepare.py      (.gpu/: fp16 MiniLM + scenario data)
#                 pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#                     -d .whl datasets==4.4.1 dill==0.4.0 multiprocess==0.70.18
#   there:        bash benchmarks/gpu.sh          (carry .gpu and .whl)
# Batches are GPU_SCALE (4) times the CPU ones, so that a step is not all launch overhead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TEXTCL_SHAPES_CACHE="$PWD/.gpu/shapes"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
timeout 470 python3 benchmarks/bench_train.py --device cuda --model .gpu/minilm --precisions bf16 --repeats 2 \
  --gpu-scale 2>&1 | tee "${OUT:-/tmp}/gpu-bench.log"
