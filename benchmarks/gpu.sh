#!/usr/bin/env bash
# textcl on one CUDA GPU in one script, within 10 minutes: the measurements behind the automatic choices
# (bf16 against fp32, the per-chunk cost: `textcl env --measure`), the training-throughput matrix of
# bench_train.py with bf16 on both sides (textcl against SentenceTransformerTrainer; the uniform-length shape
# u included), and encoding against SentenceTransformer.encode. The GPU machine has no network and no `datasets`:
#   here, once:   .venv/bin/python benchmarks/gpu_prepare.py      (.gpu/: fp16 MiniLM + scenario data)
#                 pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                     --platform manylinux_2_17_x86_64 -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
#   there:        bash benchmarks/gpu.sh          (carry .gpu and .whl)
# Batches are GPU_SCALE (4) times the CPU ones, so that a step is not all launch overhead.
set -uo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TEXTCL_SHAPES_CACHE="$PWD/.gpu/shapes"
export TEXTCL_CACHE="${OUT:-/tmp}/textcl-cache"
LOG="${OUT:-/tmp}/gpu-bench.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
  echo "== measurements (textcl env --measure)"
  timeout 90 python3 -m textcl.cli env --measure --model .gpu/minilm --json "${OUT:-/tmp}/env.json" | grep -E "measured|chunk cost|gpu:|cpu:"
  echo "== encoding"
  timeout 90 python3 benchmarks/bench_encode.py --device cuda --model .gpu/minilm --texts .gpu/shapes/sentences-5376.txt \
    --n 20000 --batch-size 256 --repeats 3 --skip-sts
  echo "== the step against its earlier CUDA defaults and sentence-transformers"
  timeout 200 python3 benchmarks/bench_gpu_step.py --arms textcl cudnn chunk4096 st --scenarios b128 c u d
  echo "== training matrix"
  timeout 240 python3 benchmarks/bench_train.py --device cuda --model .gpu/minilm --precisions bf16 --repeats 2 \
    --scenarios a b128 c u --gpu-scale
} 2>&1 | tee "$LOG"
