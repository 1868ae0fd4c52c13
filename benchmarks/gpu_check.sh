#!/usr/bin/env bash
# The GPU checks of this repository as one prepared script, sized for a short loan of one GPU machine (<= 9 min).
#
#   bash benchmarks/gpu_wheels.sh          # here, once: wheels the bare GPU image lacks -> .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh           # there (carry .whl); results land in $OUT (default: benchmarks/results)
#
# Steps, each under its own time limit so that a slow one does not cost the others:
#   1. the CUDA-only tests (flash-kernel LSE, bf16 attention kernels, torch._scaled_mm FP8, compiled DiT blocks
#      with and without CUDA graphs, CUDA event timers);
#   2. the full 14B configuration with random weights (768x448, 33 frames, 4 steps, bf16), default levers;
#   3. the same with every lever (regional compile with CUDA graphs, FP8 GEMMs).
# Each bench writes its JSON report (device, date, commit, configuration, figures); commit them under
# benchmarks/results/ with the session's note.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

if ! "$PY" -c "import pydantic, pyloudnorm" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

log="$OUT/gpu_check.log"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$log"

device=$("$PY" -c "import torch; n = torch.cuda.get_device_name(0).lower(); \
print(next((k for k in ('h200', 'h100', 'h800', 'h20', 'a100', 'l40s', 'l4', 'b200') if k in n), 'gpu'))" 2>/dev/null || echo gpu)
status=0

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: rc=$rc in $((SECONDS - start))s" | tee -a "$log"
  [ "$rc" -eq 0 ] || status=1
}

step "CUDA-path tests" 200 "$PY" -m pytest -q -p no:cacheprovider \
  tests/engine/test_cuda_paths.py tests/engine/test_profiling.py tests/engine/test_attention_backends.py
# BENCH_ARGS: extra bench arguments (e.g. "--tiny" to try this script on a CPU; its test does).
# shellcheck disable=SC2086
step "bench: 14B, default levers" 150 "$PY" benchmarks/engine_14b.py --chunks 3 ${BENCH_ARGS:-} \
  --out "$OUT/engine_14b_${device}.json"
# shellcheck disable=SC2086
step "bench: 14B, compile + FP8" 200 "$PY" benchmarks/engine_14b.py --chunks 4 ${BENCH_ARGS:-} \
  --compile --compile-mode default --fp8 --out "$OUT/engine_14b_${device}_levers.json"

echo "gpu_check: $([ $status -eq 0 ] && echo all steps passed || echo some steps failed, see $log)" | tee -a "$log"
exit $status
