#!/usr/bin/env bash
# Lints docker/Dockerfile.* with dockerfilelint (npm; hadolint is not packaged for Debian 12) and
# the shell scripts of launch/, docker/ and scripts/build_image.sh with shellcheck.
# dockerfilelint is installed once into build/tools (npm install --prefix) unless it is on PATH.
#   usage: scripts/lint_docker.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lint=$(command -v dockerfilelint || true)
if [[ -z $lint ]]; then
  lint=$here/build/tools/node_modules/.bin/dockerfilelint
  if [[ ! -x $lint ]]; then
    command -v npm > /dev/null || { echo "lint_docker.sh: needs npm (apt-get install npm)" >&2; exit 2; }
    mkdir -p "$here/build/tools"
    npm install --no-audit --no-fund --prefix "$here/build/tools" dockerfilelint@1.8.0 > /dev/null
  fi
fi
status=0
"$lint" "$here"/docker/Dockerfile.* || status=1
if command -v shellcheck > /dev/null; then
  shellcheck "$here/launch/deeptrain-launch" "$here/launch/slurm/deeptrain.sbatch" \
    "$here/docker/entrypoint.sh" "$here/scripts/build_image.sh" "$here/scripts/lint_docker.sh" \
    "$here/scripts/run_multi_container.sh" "$here/docker/cluster-node.sh" || status=1
else
  echo "lint_docker.sh: no shellcheck (apt-get install shellcheck): shell scripts not checked" >&2
fi
exit "$status"
