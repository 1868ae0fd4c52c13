#!/usr/bin/env bash
# FlashHead Pro's GPU figures as one prepared script for a short loan of one GPU machine (<= 5 min):
#
#   bash benchmarks/gpu_wheels.sh          # here, once: wheels the bare GPU image lacks -> .whl/ (git-ignored)
#   bash benchmarks/gpu_flashhead.sh       # there (carry .whl); results land in $OUT (default: benchmarks/results)
#
# Steps, each under its own time limit:
#   1. the FlashHead tests that run on any machine (golden cases skip without ../shared; bf16 precision, sampler);
#   2. the released Pro configuration with random weights (512x512, 33 frames, 4 steps, bf16), default levers:
#      per-stage ms, fps, DiT FLOP utilisation (the README's speed figures are estimates until this runs);
#   3. the same with the levers (regional compile, FP8 GEMMs where the GPU has FP8 tensor cores).
# Each bench writes its JSON report (device, date, commit, configuration, figures); commit them under
# benchmarks/results/ with the session's note. BENCH_ARGS adds bench arguments ("--tiny" tries it on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=benchmarks/gpu_steps.sh
. benchmarks/gpu_steps.sh
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
log="$OUT/gpu_flashhead.log"
: > "$log"
gpu_setup
gpu_header
device=$(gpu_device_tag)
status=0

step "FlashHead tests" 120 "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_flashhead_golden.py \
  tests/engine/test_flashhead_bench.py -k "not cli_bench and not gpu_script"
# shellcheck disable=SC2086
step "bench: FlashHead Pro, default levers" 90 "$PY" -m soulx_live bench --engine flashhead --chunks 4 \
  ${BENCH_ARGS:-} --out "$OUT/engine_flashhead_${device}.json"
levers=(--compile --compile-mode default)
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9) else 1)" 2> /dev/null; then
  levers+=(--fp8)
fi
# shellcheck disable=SC2086
step "bench: FlashHead Pro, ${levers[*]}" 150 "$PY" -m soulx_live bench --engine flashhead --chunks 5 \
  ${BENCH_ARGS:-} "${levers[@]}" --out "$OUT/engine_flashhead_${device}_levers.json"

step_summary
echo "gpu_flashhead: $([ $status -eq 0 ] && echo all steps passed || echo some steps failed, see $log)" | tee -a "$log"
exit $status
