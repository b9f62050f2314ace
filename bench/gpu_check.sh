#!/usr/bin/env bash
# Every GPU test and benchmark in one go, with one summary at the end (issue 5's check).
#
#   bench/gpu_check.sh                  build here (CUDA toolkit and the build dependencies
#                                       installed), then test and measure
#   bench/gpu_check.sh --bundle F.tar.xz  use binaries packed by scripts/gpu_bundle.sh on another
#                                       machine (a GPU machine without protobuf, OpenBLAS, ...)
#   GPU_CHECK_DIR=dir                   where logs and JSON lines go (default: gpu-check-<time>)
#   QUICK=1                             fewer benchmark steps
#   TRAIN_MATHS, FAST_MATHS             math modes of the book's recipe and of the fast recipe
#                                       (default: fp32, and fp32 tf32)
#   TEST_TIMEOUT, STEP_TIMEOUT          seconds a test binary / any other command may take
#                                       (default 300 / 180; device time is scarce, so a hang
#                                       must not eat it)
#
# Measures, on GPU 0: deeptrain's training and inference throughput against PyTorch eager on the
# same GPU in the same run (batch 100 and 1024; fp32, tf32, bf16), and the book's recipe trained
# to the end with its wall time and test accuracy.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
out=${GPU_CHECK_DIR:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }
build=build-gpu

if [ "${1:-}" = "--bundle" ]; then
  # The binaries carry the paths of the machine that built them (the test data, the reference
  # archives): recreate those paths as links to this checkout.
  tar -C "$repo" -xJf "$2"
  root=$(cat "$repo/$build/BUILD_ROOT")
  if [ "$root" != "$repo" ]; then
    mkdir -p "$(dirname "$root")"
    [ -e "$root" ] || ln -s "$repo" "$root"
  fi
  mkdir -p "$(dirname "$root")/shared"
  [ -e "$(dirname "$root")/shared/reference" ] || ln -s "$repo/shared" "$(dirname "$root")/shared/reference"
  sp=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)
  cuda_libs=""
  for d in "$sp"/nvidia/{cublas,cudnn,nccl,cuda_runtime,cu13}/lib /usr/local/cuda/lib64; do
    [ -d "$d" ] && cuda_libs="$cuda_libs:$d"
  done
  export LD_LIBRARY_PATH="$repo/lib$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  if ldd "$build/deeptrain" | grep "not found"; then echo "missing libraries (above)"; exit 1; fi
else
  cmake -S . -B "$build" -G Ninja -DDEEPTRAIN_CUDA=ON -DDEEPTRAIN_MPI=OFF >"$out/cmake.log" &&
    cmake --build "$build" -j"$(nproc)" >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
fi
bin=$build/deeptrain
# Device time is scarce: nothing may hang the check. Every command has a time limit.
dt() { timeout "${STEP_TIMEOUT:-180}" "$bin" "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
log "deeptrain: $($bin --version 2>&1 | head -1); $(ldd $bin | grep -Eo 'lib(cudnn|cublas|nccl)[^ ]* => [^ ]*' | tr '\n' ' ')"

status=0
run_test() {  # name, then the command
  local name=$1; shift
  local t0=$SECONDS
  if timeout "${TEST_TIMEOUT:-300}" "$@" >"$out/$name.log" 2>&1; then log "PASS $name ($((SECONDS - t0)) s)"
  else log "FAIL $name ($((SECONDS - t0)) s): see $out/$name.log"; tail -25 "$out/$name.log"; status=1; fi
  grep -hE '^\[ .* \]|^\[  (SKIPPED|FAILED) ' "$out/$name.log" | head -60 >>"$out/summary.txt"
}
run_test ops "$build/tests/test_backend_ops_gpu"
run_test layers "$build/tests/test_gpu_layers"
run_test parity "$build/tests/test_reference_parity"
run_test train "$build/tests/test_gpu_train"

# ---- throughput: deeptrain and PyTorch alternate, each config in the same run ----
steps=200; [ "${QUICK:-0}" = 1 ] && steps=60
ips() { python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"])' 2>/dev/null || echo 0; }
declare -A heuristic  # deeptrain's training img/s per "batch math": the algorithm table reuses them
printf '%-6s %-5s %-5s %12s %12s %7s\n' mode batch math deeptrain pytorch ratio | tee -a "$out/summary.txt"
for mode in train infer; do
  for batch in 100 1024; do
    for math in fp32 tf32 bf16; do
      d=$(dt bench --backend cuda --math $math --mode $mode --batch $batch --steps $steps \
            --warmup 30 --json 2>>"$out/bench.err" | tail -1)
      p=$(timeout "${STEP_TIMEOUT:-180}" python3 bench/pytorch_deepconvnet.py --device cuda --math $math --mode $mode \
            --batch $batch --steps $steps --warmup 30 --data data/mnist --threads 4 \
            2>>"$out/bench.err" | tail -1)
      echo "$d" >>"$out/bench.jsonl"; echo "$p" >>"$out/bench.jsonl"
      di=$(echo "$d" | ips); pi=$(echo "$p" | ips)
      [ $mode = train ] && heuristic["$batch $math"]=$di
      ratio=$(python3 -c "print(f'{$di/$pi:.2f}x' if $pi else '-')")
      printf '%-6s %-5s %-5s %12s %12s %7s\n' $mode $batch $math "$di" "$pi" "$ratio" | tee -a "$out/summary.txt"
    done
  done
done

# ---- where a step's time goes (each phase waits for the GPU): the 10 largest phases ----
for batch in 100 1024; do
  for math in fp32 tf32; do
    dt bench --backend cuda --math $math --batch $batch --steps 30 --warmup 10 --profile \
      >"$out/profile-train-$batch-$math.txt" 2>>"$out/bench.err" || status=1
    head -12 "$out/profile-train-$batch-$math.txt" | tee -a "$out/summary.txt"
  done
done

# ---- the same step on PyTorch's side (torch.profiler: its kernels by time), and the cuDNN
# algorithms deeptrain picks (heuristics, and timed), at batch 1024 fp32: to set beside the
# profiles above ----
timeout "${STEP_TIMEOUT:-180}" python3 bench/pytorch_deepconvnet.py --device cuda --math fp32 \
  --mode train --batch 1024 --steps 20 --warmup 10 --data data/mnist --threads 4 \
  --profile "$out/pytorch-profile-train-1024-fp32.txt" >/dev/null 2>>"$out/bench.err" || status=1
DEEPTRAIN_CUDA_LOG=1 dt bench --backend cuda --math fp32 --batch 1024 --steps 3 --warmup 1 \
  >/dev/null 2>"$out/cudnn-algorithms-1024-fp32.txt" || status=1
DEEPTRAIN_CUDA_LOG=1 DEEPTRAIN_CUDNN_FIND=1 dt bench --backend cuda --math fp32 --batch 1024 \
  --steps 3 --warmup 1 >/dev/null 2>"$out/cudnn-algorithms-1024-fp32-find.txt" || status=1
log "PyTorch's profile: $out/pytorch-profile-train-1024-fp32.txt; cuDNN's algorithms: $out/cudnn-algorithms-1024-fp32*.txt"

# ---- cuDNN's algorithms timed (cudnnFind*) instead of chosen by heuristics, and also allowed
# to be non-deterministic (as PyTorch's defaults): training only. The heuristic column is the
# first table's deeptrain figure (the same command): device time is not spent on it twice ----
printf '%-6s %-5s %-5s %12s %12s %14s\n' train batch math heuristic find find+nondet | tee -a "$out/summary.txt"
for batch in 100 1024; do
  for math in fp32 tf32; do
    args="bench --backend cuda --math $math --batch $batch --steps $steps --warmup 30 --json"
    f=$(DEEPTRAIN_CUDNN_FIND=1 dt $args 2>>"$out/bench.err" | tail -1)
    fn=$(DEEPTRAIN_CUDNN_FIND=1 DEEPTRAIN_CUDNN_NONDETERMINISTIC=1 dt $args 2>>"$out/bench.err" | tail -1)
    printf '%s\n%s\n' "$f" "$fn" >>"$out/bench-find.jsonl"
    printf '%-6s %-5s %-5s %12s %12s %14s\n' train $batch $math "${heuristic["$batch $math"]:-0}" \
      "$(echo "$f" | ips)" "$(echo "$fn" | ips)" | tee -a "$out/summary.txt"
  done
done

# ---- ResNet-20 (BatchNorm, add, global pooling on the GPU): training throughput ----
for math in fp32 tf32; do
  r=$(dt bench --config examples/resnet20_fashion_mnist.prototxt --backend cuda --math "$math" \
        --steps 50 --warmup 10 --json 2>>"$out/bench.err" | tail -1)
  echo "$r" >>"$out/bench-resnet.jsonl"
  log "resnet20 train batch 128 $math on the GPU: $(echo "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"], "img/s")' 2>/dev/null || echo "failed (see bench.err)")"
done

# ---- the book's recipe to the end, on the GPU: wall time and accuracy ----
for math in ${TRAIN_MATHS:-fp32}; do
  t0=$(date +%s.%N)
  dt train examples/deep_convnet_mnist.prototxt --backend cuda --math $math --json \
    --data-dir data/mnist --run-dir "$out/run-$math" >"$out/train-$math.jsonl" 2>&1 || status=1
  t1=$(date +%s.%N)
  acc=$(tail -1 "$out/train-$math.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["test_accuracy"])' 2>/dev/null || echo "?")
  log "book recipe (20 epochs, batch 100, Adam 1e-3) on the GPU, $math: test accuracy $acc, wall $(python3 -c "print(f'{$t1-$t0:.1f}')") s (process start to exit)"
done
# ---- issue 5's target: 99.3% in under 30 s (batch 512, one-cycle, 10 epochs) ----
for math in ${FAST_MATHS:-fp32 tf32}; do
  t0=$(date +%s.%N)
  dt train examples/deep_convnet_mnist_fast.prototxt --backend cuda --math "$math" --json \
    --data-dir data/mnist --run-dir "$out/fast-$math" >"$out/fast-$math.jsonl" 2>&1 || status=1
  t1=$(date +%s.%N)
  acc=$(tail -1 "$out/fast-$math.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["test_accuracy"])' 2>/dev/null || echo "?")
  log "fast recipe (10 epochs, batch 512, one-cycle Adam) on the GPU, $math: test accuracy $acc, wall $(python3 -c "print(f'{$t1-$t0:.1f}')") s (process start to exit)"
done
log "status: $([ $status = 0 ] && echo all passed || echo FAILURES); $SECONDS s in all"
exit $status
