#!/usr/bin/env bash
# Ours beside the released SoulX-FlashTalk code on one GPU, as one prepared call (<= 8 min on an H200).
#
#   bash benchmarks/gpu_wheels.sh                 # here, once: wheels the bare GPU image lacks -> .whl/
#   bash scripts/make_release_copy.sh             # here, once: the release, from a local mirror -> third_party/
#   bash benchmarks/gpu_compare.sh                # there, carrying ["third_party", ".whl"]; results in $OUT
#   bash benchmarks/gpu_compare.sh --tiny --out-dir DIR   # any CPU, tiny widths, < 1 min: checks the script (CI)
#
# Options: --out-dir DIR (default $OUT, else benchmarks/results/gpu_compare), --reference PATH (default
# third_party/SoulX-FlashTalk), --budget SECONDS (default 480: optional steps start only while time is left).
# Env: PYTHON (python3), REFERENCE_ARGS (extra flags of python -m engine.bench.reference).
#
# Required steps, each under its own time limit, each writing its JSON as soon as it finishes:
#   1. compare_ceiling.json    device peaks and measured 8192^3 bf16/FP8 matmul ceilings (engine.bench.ceiling);
#   2. compare_ours.json       ours: 14B, random weights, released configuration (33 frames 768x448, 4 steps),
#                              bf16, SDPA attention, 3 chunks (the first reported apart as warm-up);
#   3. compare_reference.json  the released code path on the same configuration (engine.bench.reference),
#                              skipped with the reason when the release copy is absent;
#   4. compare_ratio.json      speed-up (released ms / our ms) per chunk and per stage, both DiT MFUs.
# Optional steps, only while the budget lasts: 5. ours with compile + FP8 (compare_ours_compile_fp8.json), then
# each memory mode the bench has (compare_ours_fp8_weights.json, compare_ours_offload.json).
# $OUT gets at most 8 files (these 7 and gpu_compare.log), what the GPU loan sends back.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/gpu_steps.sh
. benchmarks/gpu_steps.sh

TINY=0
OUT_DIR="${OUT:-benchmarks/results/gpu_compare}"
REF="third_party/SoulX-FlashTalk"
BUDGET=480
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --out-dir) OUT_DIR=$2; shift ;;
    --reference) REF=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    *) echo "gpu_compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT=$OUT_DIR
mkdir -p "$OUT"
log="$OUT/gpu_compare.log"
: > "$log"

CARRY='["third_party", ".whl"]'
MAKER="bash $(compgen -G "scripts/make_release_copy.*" | head -1 || true)"
[ "$MAKER" = "bash " ] && MAKER="scripts/make_release_copy.*"
carry_lines() {
  local have_ref have_whl
  [ -d third_party/SoulX-FlashTalk ] && have_ref="present here" || have_ref="ABSENT here"
  compgen -G ".whl/*.whl" > /dev/null && have_whl="present here" || have_whl="ABSENT here"
  echo "gpu_compare: carry $CARRY"
  echo "  third_party  ($have_ref) the release copy for step 3," \
    "made by $MAKER from a local mirror"
  echo "  .whl         ($have_whl) wheels the bare GPU image lacks, made by bash benchmarks/gpu_wheels.sh"
}
carry_lines | tee -a "$log"
gpu_setup
gpu_header
status=0
required_failed=()

if [ "$TINY" -eq 1 ]; then
  BENCH=(--tiny --chunks 2 --attention sdpa)
  CEILING=(--device cpu --size 64)
  LIMIT_CEILING=60 LIMIT_OURS=120 LIMIT_REF=120 LIMIT_COMPILE=180
else
  BENCH=(--chunks 3 --dtype bf16 --attention sdpa)
  CEILING=()
  # required steps at most 45 + 150 + 180 + 30 s (+ set-up): the optional ones get what is left of the budget
  LIMIT_CEILING=45 LIMIT_OURS=150 LIMIT_REF=180 LIMIT_COMPILE=200
fi
echo "bench flags: ${BENCH[*]}; budget ${BUDGET}s" | tee -a "$log"

required() {  # required NAME SECONDS COMMAND...: a step whose failure fails the call
  step "$@" || required_failed+=("$1")
}

required "1 ceilings" "$LIMIT_CEILING" "$PY" -m engine.bench.ceiling "${CEILING[@]}" --out "$OUT/compare_ceiling.json"
required "2 ours" "$LIMIT_OURS" "$PY" -m engine.bench "${BENCH[@]}" --out "$OUT/compare_ours.json"

rm -f "$OUT/compare_reference.json"
ref_skipped=""
if [ ! -d "$REF" ]; then
  ref_skipped="$REF is absent: make it with $MAKER from a local mirror and carry third_party"
  step_skip "3 reference" "$ref_skipped"
else
  ref_path=$REF
  if ! git rev-parse --git-dir > /dev/null 2>&1 && [ "${REF#/}" = "$REF" ]; then
    # No .git here (a copied working tree): the adapter's git-ignore check cannot run, so hand it a copy
    # outside the checkout (the release is never committed either way).
    ref_path="/tmp/gpu_compare_release/$(basename "$REF")"
    rm -rf "$ref_path" && mkdir -p "$(dirname "$ref_path")" && cp -a "$REF" "$ref_path"
    echo "no .git here: the release copy is read from $ref_path" | tee -a "$log"
  fi
  # shellcheck disable=SC2086
  required "3 reference" "$LIMIT_REF" "$PY" -m engine.bench.reference "$ref_path" "${BENCH[@]}" \
    ${REFERENCE_ARGS:-} --out "$OUT/compare_reference.json"
fi

read -r -d '' RATIO_PY << 'PY'
import json, sys
from pathlib import Path

from engine.bench.reference import compare, format_comparison

out, skipped = Path(sys.argv[1]), sys.argv[2]
ours = json.loads((out / "compare_ours.json").read_text())
ceiling_file = out / "compare_ceiling.json"
ceilings = json.loads(ceiling_file.read_text())["matmul_ceiling"] if ceiling_file.exists() else {}
peak, peak_dtype = ours.get("peak_tflops_per_gpu"), ours.get("peak_dtype")
measured = (ceilings.get(peak_dtype) or {}).get("tflops")
# Ours runs the text/CLIP K/V once per session; the release recomputes them every DiT forward.
tflop = {"ours": ours["dit_tflop_per_chunk"], "reference": ours["dit_tflop_per_chunk_with_context_kv"]}

def dit_ms(stages):
    return sum(v for k, v in stages.items() if k.startswith("dit_step_"))

def share(side, ms, of):
    return round(tflop[side] / (ms / 1e3) / of, 4) if ms and of else None

def pct(v):
    return "-" if v is None else f"{v * 100:.1f} %"

result = {"config": ours["config"], "device_name": ours.get("device_name"), "peak_dtype": peak_dtype,
          "peak_tflops_per_gpu": peak, "measured_ceiling_tflops": measured, "dit_tflop_per_chunk": tflop,
          "reference_skipped": skipped or None}
runs = {"ours": ours}
if skipped:
    print(f"comparison: the reference step was skipped ({skipped}); ours alone below")
else:
    runs["reference"] = json.loads((out / "compare_reference.json").read_text())
    tflop["reference"] = runs["reference"].get("dit_tflop_per_chunk") or tflop["reference"]  # its own count first
    result["comparison"] = compare(ours, runs["reference"])
    print(format_comparison(result["comparison"]))
result["mfu"] = {side: {"dit_flop_utilisation": run.get("dit_flop_utilisation") or share(side, run["dit_ms"], peak),
                        "of_measured_ceiling": share(side, run["dit_ms"], measured)} for side, run in runs.items()}
rows = []
for i in range(min(len(run["wall_ms"]) for run in runs.values())):
    row = {"chunk": i}
    for side, run in runs.items():
        row |= {f"{side}_ms": run["wall_ms"][i], f"{side}_dit_ms": round(dit_ms(run["per_chunk_ms"][i]), 3),
                f"{side}_mfu": share(side, dit_ms(run["per_chunk_ms"][i]), peak)}
    if "reference" in runs:
        row["speedup"] = round(row["reference_ms"] / row["ours_ms"], 3) if row["ours_ms"] else None
    rows.append(row)
result["per_chunk"] = rows
print(f"{'chunk':<7}{'ours ms':>12}{'released ms':>14}{'speed-up':>10}{'ours MFU':>10}{'released MFU':>14}")
for r in rows:
    ref_ms, sp = r.get("reference_ms"), r.get("speedup")
    print(f"{r['chunk']:<7}{r['ours_ms']:>12,.1f}{'-' if ref_ms is None else f'{ref_ms:,.1f}':>14}"
          f"{'-' if sp is None else f'{sp:.2f}x':>10}{pct(r['ours_mfu']):>10}{pct(r.get('reference_mfu')):>14}")
for side, m in result["mfu"].items():
    print(f"{side} DiT MFU (steady chunks): {pct(m['dit_flop_utilisation'])} of {peak or '-'} TF/s {peak_dtype} peak, "
          f"{pct(m['of_measured_ceiling'])} of the measured {measured or '-'} TF/s ceiling")
(out / "compare_ratio.json").write_text(json.dumps(result, indent=2) + "\n")
PY
if [ -f "$OUT/compare_ours.json" ]; then
  required "4 ratio" 30 "$PY" -c "$RATIO_PY" "$OUT" "$ref_skipped"
else
  step_skip "4 ratio" "no compare_ours.json (step 2 failed)"
  required_failed+=("4 ratio")
fi

optional() {  # optional NAME SECONDS COMMAND...: runs only while the budget lasts, within what is left of it
  local name=$1 limit=$2 left=$((BUDGET - SECONDS - 20))
  shift 2
  if [ "$left" -lt 60 ]; then
    step_skip "$name" "time: $((left > -20 ? left + 20 : 0))s of the ${BUDGET}s budget left, under $((60 + 20))s"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  step "$name" "$limit" "$@" || true
}

optional "5 ours, compile + FP8" "$LIMIT_COMPILE" "$PY" -m engine.bench "${BENCH[@]}" --chunks 4 --compile \
  --compile-mode default --fp8 --out "$OUT/compare_ours_compile_fp8.json"
bench_help=$("$PY" -m engine.bench --help 2> /dev/null)
for mode in fp8-weights offload; do
  if grep -q -- "--$mode" <<< "$bench_help"; then
    optional "5 ours, --$mode" 150 "$PY" -m engine.bench "${BENCH[@]}" "--$mode" \
      --out "$OUT/compare_ours_${mode//-/_}.json"
  else
    step_skip "5 ours, --$mode" "this bench has no --$mode"
  fi
done

{
  echo "gpu_compare summary (${SECONDS}s):"
  step_summary
  [ -n "$ref_skipped" ] && echo "  the reference step was skipped: the ratio holds ours alone"
  carry_lines
  if [ ${#required_failed[@]} -eq 0 ]; then
    echo "gpu_compare: all steps passed$([ $status -eq 0 ] || echo ' (required ones; an optional step failed)')"
  else
    echo "gpu_compare: required steps failed: ${required_failed[*]}; see $log"
  fi
} 2>&1 | tee -a "$log"
[ ${#required_failed[@]} -eq 0 ]
