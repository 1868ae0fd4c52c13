#!/usr/bin/env bash
# Download, here, the wheels that a bare GPU machine's Python lacks for benchmarks/gpu_check.sh, into .whl/
# (git-ignored). The GPU image has torch, transformers, safetensors, numpy, scipy, pyyaml and pytest, but no
# network; what else the engine, the bench CLI and its config imports travels as these wheels.
#   bash benchmarks/gpu_wheels.sh            # then carry .whl to the GPU machine
# PYVER (default 3.12) is the GPU machine's Python.
set -euo pipefail
cd "$(dirname "$0")/.."

PYVER="${PYVER:-3.12}"
PIP="${PIP:-python3 -m pip}"
# Pure Python or manylinux wheels; versions as this project's .venv resolves them (one version of each).
WANTED=(
  "pydantic==2.14.4"
  "pydantic-core==2.50.5"
  "annotated-types==0.8.0"
  "typing-inspection==0.4.5"
  "pyloudnorm==0.2.0"
  "typing-extensions==4.16.0"  # pydantic 2.14 needs >= 4.16, which the GPU image lacks
  # The released code's own imports for --compare-reference (engine.bench.release_compat stands in for these
  # only when they are missing; real ones are used where present).
  "loguru==0.7.3"
  "easydict==1.13"
  "ftfy==6.3.1"
  "wcwidth==0.9.4"
  "einops==0.8.1"
)

mkdir -p .whl
platforms=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
$PIP download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${platforms[@]}" \
  -d .whl "${WANTED[@]}"
ls -l .whl
du -sh .whl
