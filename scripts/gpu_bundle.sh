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
# without MPI (NCCL still runs as a communicator of one) and without -march=native (another CPU
# runs it). For gpu_check.sh's ranks phase, a second deeptrain built with MPI
# (build-gpu/deeptrain-mpi) and Open MPI's runtime from this machine's packages (mpi/: mpirun,
# its libraries, plugins and help files, PMIx), since the GPU machine has no MPI; gpu_check.sh
# relocates it (OPAL_PREFIX, PMIX_INSTALL_PREFIX). Fashion-MNIST (the resnet phase) is already
# compressed: carry data/fashion_mnist beside the bundle rather than in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-.gpu/bundle.tar.xz}
build="build-gpu"
cmake -S . -B "$build" -G Ninja -DDEEPTRAIN_CUDA=ON -DDEEPTRAIN_MPI=OFF -DDEEPTRAIN_DNNL=OFF \
  -DDEEPTRAIN_NATIVE=OFF -DDEEPTRAIN_REFERENCE_DIR="$PWD/../shared/reference" >/dev/null
targets=(deeptrain test_backend_ops_gpu test_gpu_layers test_gpu_train test_reference_parity)
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
mpi_build="build-gpu-mpi"
cmake -S . -B "$mpi_build" -G Ninja -DDEEPTRAIN_CUDA=ON -DDEEPTRAIN_MPI=ON -DDEEPTRAIN_DNNL=OFF \
  -DDEEPTRAIN_NATIVE=OFF -DDEEPTRAIN_REFERENCE_DIR="$PWD/../shared/reference" >/dev/null
cmake --build "$mpi_build" -j"$(nproc)" --target deeptrain
[ -f data/mnist/train-images-idx3-ubyte ] || scripts/fetch_data.sh

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/$build/tests" "$stage/data" "$stage/shared" "$stage/mpi"
cp "$build/deeptrain" "$stage/$build/"
# The schema for PyTorch's twins (bench/pytorch_from_config.py) where there is no protoc.
protoc -I proto --descriptor_set_out="$stage/$build/deeptrain.desc" proto/deeptrain.proto
for t in "${targets[@]:1}"; do cp "$build/tests/$t" "$stage/$build/tests/"; done
cp "$mpi_build/deeptrain" "$stage/$build/deeptrain-mpi"
# Open MPI's runtime as its packages install it (no compilers, headers, Fortran, Java or
# OpenSHMEM), relative links kept.
mpi_packages=(openmpi-bin libopenmpi3 openmpi-common libpmix2)
for p in "${mpi_packages[@]}"; do dpkg -L "$p"; done | sort -u |
  grep -vE '/share/(doc|man|lintian)/|java|oshmem|/include/|fortran|mpifh|usempi' |
  while read -r f; do
    if [ -L "$f" ]; then case $(readlink "$f") in /*) continue ;; esac; fi
    # (From /: cp --parents with absolute paths fails on the parents' attributes.)
    if [ -f "$f" ]; then (cd / && cp -a --parents "${f#/}" "$stage/mpi"); fi
  done
ln -s orterun "$stage/mpi/usr/bin/mpirun"
# Every library a binary loads, except glibc's, the CUDA libraries of the GPU machine, and those
# packed with Open MPI above.
system_libs='/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so|/lib(cublas|cublasLt|cudnn[a-z_]*|nccl|cudart)\.so'
# (ldd fails on scripts, and grep on no lines: neither is an error here.)
libs_of() {
  for f in "$@"; do ldd "$f" 2>/dev/null | awk '/=> \//{print $3}' || true; done | sort -u |
    { grep -Ev "$system_libs" || true; }
}
libs_of "$stage/$build/deeptrain" "$stage/$build/deeptrain-mpi" "$stage/$build"/tests/* |
  grep -Ev '/lib(mpi|open-rte|open-pal|pmix)\.so' | while read -r lib; do cp -L "$lib" "$stage/lib/"; done
mkdir -p "$stage/mpi/lib"
mapfile -t mpi_binaries < <(find "$stage/mpi" -type f \( -name '*.so*' -o -path '*/bin/*' \))
libs_of "${mpi_binaries[@]}" | while read -r lib; do
  [ -n "$(find "$stage/mpi" -name "$(basename "$lib")" -print -quit)" ] || cp -L "$lib" "$stage/mpi/lib/"
done
cp -r data/mnist "$stage/data/"
cp ../shared/reference/*.npz "$stage/shared/"
mkdir -p "$(dirname "$out")"
echo "$PWD" >"$stage/$build/BUILD_ROOT"
tar -C "$stage" -cJf "$out" .
echo "$out: $(du -h "$out" | cut -f1); libraries: $(ls "$stage/lib" | tr '\n' ' ')"
