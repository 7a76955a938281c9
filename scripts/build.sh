#!/usr/bin/env bash
# Configures and builds trellis into ./build (or $TRELLIS_BUILD_DIR).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TRELLIS_BUILD_DIR:-$root/build}
jobs=${TRELLIS_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${TRELLIS_BUILD_TYPE:-Release} >/dev/null
cmake --build "$build" -j "$jobs"
