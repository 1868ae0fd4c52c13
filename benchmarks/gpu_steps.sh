# Shared by the prepared GPU scripts (benchmarks/gpu_check.sh, benchmarks/gpu_compare.sh); sourced, not run.
#
#   gpu_setup                  PY (python), PYTHONPATH: this checkout first; the wheels in .whl/ installed into
#                              /tmp/site when the bare GPU image lacks the packages they carry
#   gpu_header                 date, commit, GPU, driver and torch into $log (the caller sets log)
#   gpu_device_tag             h200, h100, ... or gpu (file names of results)
#   step NAME SECONDS CMD...   CMD under `timeout SECONDS` (SIGINT, then SIGKILL 15 s later), its output tee'd into
#                              $log; prints "== NAME: rc=RC in Ns", returns RC, sets status=1 when RC != 0 and
#                              appends the line to STEP_LINES (for a closing summary)
#   step_skip NAME REASON      records a step that did not run, with the reason
#   step_summary               one line per step, in order, on stdout
# shellcheck shell=bash

STEP_LINES=()

gpu_setup() {
  export PYTHONUNBUFFERED=1
  PY="${PYTHON:-python3}"
  if ! "$PY" -c "import pydantic, pyloudnorm" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  fi
  export PYTHONPATH="$PWD:${PYTHONPATH:-}"
}

gpu_header() {
  {
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    git rev-parse --short HEAD 2> /dev/null || echo "commit: unknown (no .git here)"
    if command -v nvidia-smi > /dev/null; then
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    else
      echo "nvidia-smi: not found (no NVIDIA driver here)"
    fi
    "$PY" -c "import torch; c = torch.cuda.is_available(); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if c else 'no CUDA device')"
  } 2>&1 | tee -a "$log"
}

gpu_device_tag() {
  "$PY" -c "import torch; n = torch.cuda.get_device_name(0).lower(); \
print(next((k for k in ('h200', 'h100', 'h800', 'h20', 'a100', 'l40s', 'l4', 'b200') if k in n), 'gpu'))" \
    2> /dev/null || echo gpu
}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$log"
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  local line="$name: rc=$rc in $((SECONDS - start))s"
  [ "$rc" -eq 124 ] && line="$line (timed out)"
  echo "== $line" | tee -a "$log"
  STEP_LINES+=("$line")
  [ "$rc" -eq 0 ] || status=1
  return "$rc"
}

step_skip() {  # step_skip NAME REASON
  local line="$1: skipped ($2)"
  echo "== $line" | tee -a "$log"
  STEP_LINES+=("$line")
}

step_summary() {
  local line
  for line in "${STEP_LINES[@]}"; do
    echo "  $line"
  done
}
