#!/usr/bin/env bash
# One command on a CUDA machine: the gpu tests, the layer bench and notebooks 10, 21, 22 with
# device="cuda", summarized in data/results/gpu/<card>.json (`python -m peakllm gpucheck`).
#
#   bash tools/device_check.sh        # from anywhere; it works in the repository root
#
# Wheels to carry. The lent H100 / H200 image ('cuda', Python 3.12, no network) already has torch,
# transformers and the rest of its stack; it lacks bitsandbytes, and papermill with the rest of what a
# notebook kernel needs. requirements/device.txt lists exactly those, pinned and hashed (`make lock`
# compiles it from device.in; what the image has is left out). Download them here, once, into the
# git-ignored .whl/ (pip checks every hash as it downloads):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --require-hashes --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     -r requirements/device.txt
#
# The bitsandbytes wheel holds one kernel library per CUDA release (125 MB unpacked), and what travels
# to the machine (the repository, ~47 MiB, and the wheels) is limited to 64 MiB: keep the CUDA 13
# libraries (torch there is 2.11+cu130) and the CPU one. pip does not check a wheel's RECORD against
# its files, so the slimmed wheel installs (its hash changes: the machine installs .whl/ without hashes,
# which were checked at download):
#
#   zip -d .whl/bitsandbytes-0.50.2-*.whl 'bitsandbytes/libbitsandbytes_cuda1[12]*' \
#     'bitsandbytes/libbitsandbytes_rocm*' 'bitsandbytes/libbitsandbytes_xpu*'
#
# Then, through the device tool: run(command="bash tools/device_check.sh", carry=[".whl"], timeout_s=600).
# gpucheck is stopped after GPUCHECK_TIMEOUT seconds (default 540), so the copy below still runs inside
# the tool's limit; its JSON names the step it was in. Under the tool ($OUT set) the summary JSON, the
# executed notebooks and this log are copied to $OUT (the tool brings back at most 8 files).
set -uo pipefail
shopt -s nullglob  # a glob that matches nothing is nothing, not itself
cd "$(dirname "$0")/.."

RESULTS=data/results/gpu
LOG="$RESULTS/device_check.log"
mkdir -p "$RESULTS"

check() {
  export PYTHONPATH="$PWD/lib" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  if compgen -G ".whl/*.whl" >/dev/null; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
      export PYTHONPATH="/tmp/site:$PYTHONPATH"
    else
      echo "device_check: installing .whl/ failed; going on without those packages"
    fi
  fi
  nvidia-smi
  timeout "${GPUCHECK_TIMEOUT:-540}" python3 -m peakllm gpucheck --out "$RESULTS"
}

check 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  cp "$RESULTS"/*.json "$LOG" "$OUT"/
  for run in "$RESULTS"/*/; do
    mkdir -p "$OUT/$(basename "$run")" && cp "$run"*.ipynb "$OUT/$(basename "$run")"/ 2>/dev/null
  done
fi
exit "$status"
