#!/usr/bin/env bash
# One command from a fresh Debian 12 checkout to a built deeptrain: packages, data, build.
# Idempotent; a re-run only checks and rebuilds what changed.
#   usage: scripts/setup.sh [--with-torch]   (options go to install_deps.sh)
# --with-torch sets up the test suite's peers too: Debian's PyTorch (install_deps.sh) and ONNX
# Runtime for Node (install_onnx_tools.sh, into build/tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/install_deps.sh "$@"
scripts/fetch_data.sh
# Configure once; afterwards the build re-runs cmake itself when CMakeLists.txt changes, and
# options someone set in build/ (e.g. -DDEEPTRAIN_NATIVE=OFF) are kept.
if [[ ! -f build/build.ninja ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build
for arg in "$@"; do
  if [[ $arg == --with-torch ]]; then scripts/install_onnx_tools.sh; fi
done
