#!/usr/bin/env bash
# Installs ONNX Runtime for Node (npm onnxruntime-node) into build/tools, where the ONNX tests
# (tests/onnx/) run exported models with it, and pngjs, which docs/onnx.md's deployment example
# (run by test_onnx_export) reads PNGs with. --ignore-scripts: the package's install script
# downloads GPU execution providers from outside the npm registry; its CPU runtime ships inside
# the package itself. Idempotent.
#   usage: scripts/install_onnx_tools.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=1.20.1 pngjs_version=7.0.0
m=$here/build/tools/node_modules
if grep -qs "\"version\": \"$version\"" "$m/onnxruntime-node/package.json" &&
   grep -qs "\"version\": \"$pngjs_version\"" "$m/pngjs/package.json"; then
  exit 0
fi
command -v npm > /dev/null || { echo "install_onnx_tools.sh: needs npm (apt-get install npm)" >&2; exit 2; }
mkdir -p "$here/build/tools"
npm install --no-audit --no-fund --ignore-scripts --prefix "$here/build/tools" \
  "onnxruntime-node@$version" "pngjs@$pngjs_version" > /dev/null
