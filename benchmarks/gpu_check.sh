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

# shellcheck source=benchmarks/gpu_steps.sh
. benchmarks/gpu_steps.sh
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
log="$OUT/gpu_check.log"
: > "$log"
gpu_setup
gpu_header
device=$(gpu_device_tag)
status=0

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
