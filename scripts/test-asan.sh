#!/usr/bin/env bash
# Builds the addon with AddressSanitizer (CPU only) and runs the native-facing tests against it.
# Any invalid read or write in the C++ kernels aborts the run with a report.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build/asan
npx cmake-js compile --config Debug -O "$out" --CDEVIT_CUDA=OFF --CDEVIT_TESTING=ON \
  --CDCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" \
  --CDCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address" >/dev/null
npm run build:ts >/dev/null

export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export EVIT_BINDING="$PWD/$out/Debug/evit.node"
node test/run.js ops.test.js parity.test.js model.test.js isa.test.js cli.test.js esm.test.js
