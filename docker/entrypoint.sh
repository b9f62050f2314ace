#!/usr/bin/env bash
# Entrypoint of the deeptrain images (run under tini, which reaps zombies and forwards signals).
#
#   (no arguments)            train the book's DeepConvNet on MNIST (the image's CMD)
#   train|eval|bench|doctor|plot|inspect|export ARGS...
#                             deeptrain ARGS (one process)
#   deeptrain-launch OPTIONS -- train CONFIG ...
#                             several ranks through the launcher (launch/deeptrain-launch)
#   mpirun ..., bash, any other command
#                             run as given
#
# Volumes (the working directory /workspace links data, runs and checkpoints to them):
#   /data         data sets, read-only: MNIST in /data/mnist (scripts/fetch_data.sh DIR on the
#                 host fetches it; mount DIR), Fashion-MNIST in /data/fashion_mnist
#   /runs         run directories: default runs/<config name>-<time> lands in /runs
#   /checkpoints  checkpoints (--checkpoint-dir /checkpoints)
# e.g. docker run --rm -v "$PWD/data:/data:ro" -v "$PWD/runs:/runs" deeptrain:cpu \
#        train /opt/deeptrain/examples/deep_convnet_mnist.prototxt --epochs 1
set -euo pipefail

deeptrain=${DEEPTRAIN_BINARY:-/opt/deeptrain/bin/deeptrain}

# A hint when the data volume is missing, for the commands that read data. deeptrain itself
# then names the missing file; the hint says how to mount it.
data_hint() {
  if [[ ! -e /data/mnist && ! -e /data/fashion_mnist ]]; then
    echo "deeptrain image: /data holds no data set (no /data/mnist); mount the directory that" \
      "scripts/fetch_data.sh filled, e.g. docker run -v \"\$PWD/data:/data:ro\" ..." >&2
  fi
}

if [[ $# -eq 0 ]]; then
  set -- train /opt/deeptrain/examples/deep_convnet_mnist.prototxt
fi

case "$1" in
  train | eval | doctor)
    data_hint
    exec "$deeptrain" "$@"
    ;;
  bench | plot | inspect | export | -h | --help | --version)
    exec "$deeptrain" "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
