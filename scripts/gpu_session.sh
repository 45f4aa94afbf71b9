#!/bin/bash
# One device call for the 8-bit cross-attention work: GPU tests, then the benchmark for
# large-v3 and large-v3-turbo dimensions with HF re-measured in the same run. Every step has a
# time guard so the whole call ends within TOTAL seconds; results and logs go to $OUT.
set -u
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
TOTAL=${TOTAL:-525}
T0=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - T0) )); echo $(( l > 5 ? l : 5 )); }
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton, transformers, whisper; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'whisper', whisper.__version__)"
} 2>&1 | tee "$OUT/env.txt"
echo "== tests ($(( $(date +%s) - T0 ))s in)"
# conftest needs the database stack, which the device image lacks; these tests use none of it
timeout "$(left 130)" python3 -m pytest -q -s --noconftest -p no:cacheprovider tests/test_engine_gpu.py \
  "tests/test_engine.py::test_gpu_greedy_tokens_equal_stock_decode" 2>&1 | tee "$OUT/pytest.log" | grep -v "^$" | tail -30
echo "== large-v3 ($(( $(date +%s) - T0 ))s in)"
timeout "$(left 370)" python3 scripts/bench_asr.py gpu --archs large-v3 --batches 256 512 --kv model fp8 int8 \
  --stock-windows 0 --hf-batches 256 --hf-plain-only --kernel-bench --json "$OUT/large-v3.json" 2>&1 \
  | tee "$OUT/large-v3.log" | grep -v -i "warn"
echo "== turbo ($(( $(date +%s) - T0 ))s in)"
timeout "$(left "$TOTAL")" python3 scripts/bench_asr.py gpu --archs large-v3-turbo --batches 256 512 --kv model fp8 int8 \
  --stock-windows 0 --hf-batches 256 512 --hf-plain-only --json "$OUT/turbo.json" 2>&1 \
  | tee "$OUT/turbo.log" | grep -v -i "warn"
echo "== done ($(( $(date +%s) - T0 ))s)"
