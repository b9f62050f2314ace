#!/usr/bin/env bash
# Builds the GPU binaries on a machine with the CUDA toolkit but perhaps no GPU, and packs them
# with what they need for a GPU machine that has the CUDA libraries but no build dependencies
# (no protobuf, fmt, OpenBLAS, GoogleTest): a tarball that bench/gpu_check.sh --bundle unpacks.
#
#   scripts/gpu_bundle.sh [OUT.tar.xz]     (default: .gpu/bundle.tar.xz)
#
# It holds build-gpu/ (deeptrain, the GPU test binaries, and the schema's descriptor set for
# PyTorch's twins), the shared libraries those link other than glibc's and CUDA's own (cuBLAS,
# cuDNN and NCCL come from the GPU machine), MNIST and the book's reference archives. Built
# without MPI (the GPU machine has no MPI; NCCL still runs as a communicator of one) and without
# -march=native (another CPU runs it). Fashion-MNIST (gpu_check.sh's resnet phase) is already
# compressed: carry data/fashion_mnist beside the bundle rather than in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-.gpu/bundle.tar.xz}
build=build-gpu
cmake -S . -B "$build" -G Ninja -DDEEPTRAIN_CUDA=ON -DDEEPTRAIN_MPI=OFF -DDEEPTRAIN_DNNL=OFF \
  -DDEEPTRAIN_NATIVE=OFF -DDEEPTRAIN_REFERENCE_DIR="$PWD/../shared/reference" >/dev/null
targets=(deeptrain test_backend_ops_gpu test_gpu_layers test_gpu_train test_reference_parity)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
[ -f data/mnist/train-images-idx3-ubyte ] || scripts/fetch_data.sh

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/$build/tests" "$stage/data" "$stage/shared"
cp "$build/deeptrain" "$stage/$build/"
# The schema for PyTorch's twins (bench/pytorch_from_config.py) where there is no protoc.
protoc -I proto --descriptor_set_out="$stage/$build/deeptrain.desc" proto/deeptrain.proto
for t in "${targets[@]:1}"; do cp "$build/tests/$t" "$stage/$build/tests/"; done
# Every library the binaries load, except glibc's and the CUDA libraries of the GPU machine.
for bin in "$stage/$build/deeptrain" "$stage/$build"/tests/*; do
  ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so|/lib(cublas|cublasLt|cudnn[a-z_]*|nccl|cudart)\.so' \
  | while read -r lib; do cp -L "$lib" "$stage/lib/"; done
cp -r data/mnist "$stage/data/"
cp ../shared/reference/*.npz "$stage/shared/"
mkdir -p "$(dirname "$out")"
echo "$PWD" >"$stage/$build/BUILD_ROOT"
tar -C "$stage" -cJf "$out" .
echo "$out: $(du -h "$out" | cut -f1); libraries: $(ls "$stage/lib" | tr '\n' ' ')"
