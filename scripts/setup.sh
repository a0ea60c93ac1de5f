#!/usr/bin/env bash
# Installs what a source build of evit and its tests need (Debian/Ubuntu), then builds it. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a ] && [ ! -e /usr/lib/x86_64-linux-gnu/libopenblas.a ]; then
  need+=(libopenblas-dev)
fi
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
# The queue tests start their own Redis.
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# npm ci only when the lockfile changed since the last install.
if [ ! -e node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
# The binary the package ships, for test/pack.test.js to install. One GPU generation is enough to test that
# the CUDA backend is compiled in and stays off without a driver; `npm pack` refuses this narrowed build,
# a release runs `npm run prebuilds` alone. Incremental after the first run.
EVIT_CUDA_ARCHITECTURES="${EVIT_CUDA_ARCHITECTURES:-80-real}" npm run prebuilds
