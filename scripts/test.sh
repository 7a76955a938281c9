#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (as root:
# the netns and e2e tiers create network namespaces). Extra arguments go to
# ctest, e.g. `scripts/test.sh -L unit`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: run as root (the tests create network namespaces)" >&2
  exit 1
fi
umask 022
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "${TRELLIS_BUILD_DIR:-$root/build}"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
