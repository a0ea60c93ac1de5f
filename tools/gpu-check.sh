#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one call: build the addon with CUDA, run the GPU
# parity suite (npm run test:gpu), compute-sanitizer memcheck and racecheck over a small CUDA
# workload, and the GPU benchmark (which writes the 'gpu' section of docs/BENCHMARKS.md).
# Logs and results go to $OUT when it is set, else to ./gpu-check-out. Exits non-zero if any
# step failed; the summary at the end lists each step's status.
#
# Machines without Node: on a machine with Node (the same major version the repository uses),
#   xz -9 -c "$(command -v node)" > node.xz
# and put node.xz in the repository root (or point EVIT_NODE_XZ at it); this script unpacks it.
# node_modules/ and dist/ (npm run build:ts) must be present: the script builds only the addon.
# Without cmake, nvcc or OpenBLAS on the machine, it uses an addon built elsewhere with CUDA:
# $EVIT_BINDING, else build-cuda/Release/evit.node, else build/Release/evit.node.
#
# Environment: OUT, EVIT_NODE_XZ, EVIT_BINDING, EVIT_GPU_CHECK_ARCH (EVIT_CUDA_ARCHITECTURES,
# default "native": only the GPU present, the fastest build), EVIT_GPU_CHECK_SKIP (space-separated
# steps to skip: build test memcheck racecheck bench).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
SKIP=" ${EVIT_GPU_CHECK_SKIP:-} "
status=0

log() { echo "== $*" | tee -a "$SUMMARY"; }

# step NAME CMD...: runs CMD with its output in $OUT_DIR/NAME.log (and on the console), records the status.
step() {
  local name="$1"
  shift
  if [[ "$SKIP" == *" $name "* ]]; then
    log "$name: skipped"
    return 0
  fi
  local t0=$SECONDS
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT_DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  log "$name: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  [[ $rc == 0 ]] || status=1
  return "$rc"
}

# Node: the one on PATH, else the xz archive unpacked next to the checkout.
if ! command -v node > /dev/null; then
  archive="${EVIT_NODE_XZ:-$ROOT/node.xz}"
  if [[ ! -f "$archive" ]]; then
    log "node: not on PATH and no archive at $archive (make one with: xz -9 -c \"\$(command -v node)\" > node.xz)"
    exit 2
  fi
  mkdir -p "$ROOT/.gpu-check/bin"
  if command -v xz > /dev/null; then
    xz -dc "$archive" > "$ROOT/.gpu-check/bin/node"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$archive" "$ROOT/.gpu-check/bin/node"
  fi
  chmod +x "$ROOT/.gpu-check/bin/node"
  export PATH="$ROOT/.gpu-check/bin:$PATH"
fi
log "node $(node --version) at $(command -v node)"
{ nvidia-smi 2>&1 || echo "nvidia-smi not available"; } > "$OUT_DIR/nvidia-smi.txt"
log "gpu: $(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)"
if [[ ! -f dist/index.js ]]; then
  log "dist/ is missing: run npm run build:ts where npm is, and bring dist/ along"
  exit 2
fi

# The addon: built here when the toolchain is present, else one built elsewhere.
build_addon() {
  command -v cmake > /dev/null || { echo "cmake not found"; return 3; }
  command -v nvcc > /dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] || { echo "nvcc not found"; return 3; }
  export PATH="$PATH:/usr/local/cuda/bin"
  node node_modules/cmake-js/bin/cmake-js compile --config Release --out build-gpu-check \
    --parallel "$(nproc)" --CDEVIT_CUDA_ARCHITECTURES="${EVIT_GPU_CHECK_ARCH:-native}"
}
build_rc=0
step build build_addon || build_rc=$?
if [[ $build_rc == 0 && -f build-gpu-check/Release/evit.node ]]; then
  export EVIT_BINDING="$ROOT/build-gpu-check/Release/evit.node"
else
  for candidate in "${EVIT_BINDING:-}" build-cuda/Release/evit.node build/Release/evit.node; do
    if [[ -n "$candidate" && -f "$candidate" ]]; then
      export EVIT_BINDING="$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")"
      break
    fi
  done
  log "build: using the prebuilt addon ${EVIT_BINDING:-(none found)}"
  # A missing toolchain (exit 3) is not a failure of the code under test; a failed compile is.
  [[ $build_rc == 3 && -n "${EVIT_BINDING:-}" ]] && status=0
fi
node -e 'const i = require(process.env.EVIT_BINDING).backendInfo().cuda; console.log(JSON.stringify(i)); process.exit(i.available ? 0 : 1)' \
  > "$OUT_DIR/backend.json" 2>&1 || { log "CUDA is not available to the addon: $(cat "$OUT_DIR/backend.json")"; status=1; }
log "backend: $(cat "$OUT_DIR/backend.json")"

step test node test/gpu/run.js

if command -v compute-sanitizer > /dev/null || [[ -x /usr/local/cuda/bin/compute-sanitizer ]]; then
  SANITIZER="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  step memcheck "$SANITIZER" --tool memcheck --leak-check full --error-exitcode 1 --target-processes all node test/gpu/sanitize.js
  step racecheck "$SANITIZER" --tool racecheck --racecheck-report all --error-exitcode 1 --target-processes all node test/gpu/sanitize.js
else
  log "memcheck, racecheck: compute-sanitizer not found"
  status=1
fi

step bench node bench/gpu.js
cp docs/BENCHMARKS.md "$OUT_DIR/BENCHMARKS.md" 2>/dev/null

echo
cat "$SUMMARY"
log "overall: $([[ $status == 0 ]] && echo ok || echo FAILED)"
exit "$status"
