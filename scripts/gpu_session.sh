#!/usr/bin/env bash
# The GPU half of the fused MC head's work, in one call on a lent CUDA machine:
#   1. the CUDA-only tests (the compiled kernel vs the materialised layer; lean gradients with
#      the fused forward), natively;
#   2. the head benchmark (`fused` rows, eager/compile on the GPU, ResNet-50 end to end, training
#      memory), written to bench/results/<gpu>.json.
#
# Nothing is installed: the fused head and the layers import only torch and triton, and the
# tests need pytest and psutil, all of which the lent machines' image holds (see the device
# tool's KINDS.md). Through the device tool (results come back from $OUT):
#
#   run: bash scripts/gpu_session.sh            # full benchmark, ~10 min
#   run: bash scripts/gpu_session.sh --quick    # K <= 1000, B <= 32
#
# then copy $OUT's <gpu>.json into bench/results/ and commit it. On a machine without CUDA the
# tests skip and the benchmark writes CPU rows only (a dry run of this script).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/export/src:$PWD/contract/src${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
"$python" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__,
"cuda", torch.cuda.is_available())' | tee -a "$out/gpu.txt"

# --noconftest: the suite's conftest starts servers this step does not need.
"$python" -m pytest -q -p no:cacheprovider --noconftest -o addopts="--import-mode=importlib" \
  -m gpu -rs tests/unit/export/test_fused_head_parity.py tests/unit/export/test_fused_memory_lean.py \
  2>&1 | tee "$out/gpu-tests.txt"

"$python" bench/head_bench.py "$@" 2>&1 | tee "$out/head_bench.log"
results=$(sed -n 's/^wrote \(.*\.json\) .*/\1/p' "$out/head_bench.log" | tail -1)
if [[ -n "$results" && "$out" != bench/results ]]; then
  cp "$results" "$out/"
fi
