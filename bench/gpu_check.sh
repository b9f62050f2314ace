#!/usr/bin/env bash
# Every GPU test and benchmark in one go, in phases of falling priority, with one summary at the
# end (issue 22's check). GPU time comes in short windows: each phase says what it will cost, a
# phase that no longer fits the budget is skipped and named, and the summary says how to run the
# skipped ones next.
#
#   bench/gpu_check.sh                    build here (CUDA toolkit and the build dependencies
#                                         installed; MPI if present), then test and measure
#   bench/gpu_check.sh --bundle F.tar.xz  use binaries packed by scripts/gpu_bundle.sh on another
#                                         machine (a GPU machine without protobuf, OpenBLAS, ...)
#   bench/gpu_check.sh --build DIR        use the binaries of an existing build
#   bench/gpu_check.sh --dry-run ...      the whole check on the CPU, a few steps each: every
#                                         command and every line of the summary, before device
#                                         time is spent on them (tests/test_bench_scripts.cpp)
# Environment:
#   PHASES      the phases to run (default: all); they run in this order: tests table recipes
#               nets profile resnet resnet_torch ranks algos
#   BUDGET_S    seconds the whole check may take (default 480: with a machine's start, the
#               first of two calls in a 15-minute device window; the second, at once while the
#               machine is warm, runs what was skipped with BUDGET_S=240)
#   GPU_CHECK_DIR  where logs and JSON lines go (default: gpu-check-<time>)
#   QUICK=1     fewer benchmark steps
#   TRAIN_MATHS, FAST_MATHS, NET_MATHS  math modes of the book's recipe (default fp32), of the
#               fast recipe (fp32 tf32) and of ResNet-20 / GoogLeNet (fp32 bf16)
#   TEST_TIMEOUT, STEP_TIMEOUT  seconds a test binary / any other command may take (default
#               300 / 180; device time is scarce, so a hang must not eat it)
#   PYTHON      the Python with PyTorch (default: python3, else /usr/bin/python3)
#   DATA_DIR    where mnist/ and fashion_mnist/ are (default: data)
#
# The phases, each against PyTorch eager on the same GPU in the same run where it has a peer:
#   tests    the GPU test binaries (every op and layer against the CPU, parity, training)
#   table    DeepConvNet's training and inference throughput, batch 100 and 1024, fp32, tf32,
#            bf16 and fp16; PyTorch's better layout (NCHW or channels_last) of each
#   recipes  the book's recipe and the fast recipe trained to the end: accuracy, wall time from
#            process start, and when the test accuracy first reached 99.3% and 99.4%
#   nets     ResNet-20 and GoogLeNet training throughput against their PyTorch twins
#   profile  where a step's time goes (deeptrain's per-layer profile, torch.profiler), and the
#            cuDNN algorithms deeptrain picks
#   resnet   ResNet-20's recipe trained to the end on the GPU (needs data/fashion_mnist)
#   resnet_torch  the same recipe in PyTorch on the same GPU (bench/pytorch_recipe.py)
#   ranks    2 ranks on the one GPU (NCCL, then through host memory and MPI), where mpirun and
#            an MPI build are at hand
#   algos    cuDNN's algorithms chosen by heuristics, by timing, and by timing without the
#            determinism requirement (PyTorch's default)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
repo=$PWD
build=build-gpu bundle="" prebuilt=0 dry=0
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) bundle=${2:?--bundle takes a file}; shift 2 ;;
    --build) build=${2:?--build takes a directory}; prebuilt=1; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
all_phases="tests table recipes nets profile resnet resnet_torch ranks algos"
phases=${PHASES:-$all_phases}
for p in $phases; do
  case " $all_phases " in *" $p "*) ;; *) echo "gpu_check.sh: PHASES: no phase '$p' (phases: $all_phases)" >&2; exit 2 ;; esac
done
data=${DATA_DIR:-data}
# A dry run's phases take seconds, not their GPU estimates: no budget unless one is set.
budget=${BUDGET_S:-$([ $dry = 1 ] && echo 100000 || echo 480)}
out=${GPU_CHECK_DIR:-gpu-check-$(date +%Y%m%d-%H%M%S)}
if [ -e "$out/summary.txt" ]; then
  echo "gpu_check.sh: $out already holds a check; give a new GPU_CHECK_DIR" >&2; exit 2
fi
mkdir -p "$out"
: >"$out/summary.txt"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

if [ -n "$bundle" ]; then
  # The binaries carry the paths of the machine that built them (the test data, the reference
  # archives): recreate those paths as links to this checkout.
  tar -C "$repo" -xJf "$bundle" || { echo "gpu_check.sh: $bundle: cannot unpack" >&2; exit 1; }
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
  # PyTorch's twins read the schema the binaries were built with, from its packed descriptor
  # set (a GPU machine may have no protoc).
  export DEEPTRAIN_SCHEMA_DESCRIPTOR=$repo/$build/deeptrain.desc
  # The packed Open MPI (the one deeptrain-mpi was built against, whatever the machine has),
  # relocated to mpi/: its own libraries and plugins first; it stays quiet about plugins for
  # network fabrics this machine lacks.
  if [ -x "$repo/mpi/usr/bin/orterun" ]; then
    m=$repo/mpi/usr a=x86_64-linux-gnu
    export OPAL_PREFIX=$m PMIX_INSTALL_PREFIX=$m/lib/$a/pmix2 PATH=$m/bin:$PATH
    export LD_LIBRARY_PATH=$m/lib/$a:$m/lib/$a/openmpi/lib:$m/lib/$a/pmix2/lib:$repo/mpi/lib:$LD_LIBRARY_PATH
    export OMPI_MCA_mca_base_component_show_load_errors=0
  fi
elif [ $prebuilt = 0 ]; then
  if ! { cmake -S . -B "$build" -G Ninja -DDEEPTRAIN_CUDA=ON >"$out/cmake.log" &&
         cmake --build "$build" -j"$(nproc)" >"$out/build.log" 2>&1; }; then
    tail -30 "$out/cmake.log" "$out/build.log" 2>/dev/null; exit 1
  fi
fi
bin=$build/deeptrain
[ -x "$bin" ] || { echo "gpu_check.sh: no $bin" >&2; exit 1; }
# The ranks phase's deeptrain: the bundle's second one, built with MPI, else the same.
mpi_bin=$bin
[ -x "$build/deeptrain-mpi" ] && mpi_bin=$build/deeptrain-mpi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for p in python3 /usr/bin/python3; do "$p" -c 'import torch' 2>/dev/null && { PY=$p; break; }; done
fi
[ -n "$PY" ] || log "no Python with PyTorch: the PyTorch columns stay empty"

# A dry run is the same check on the CPU: deeptrain on its CPU backend, PyTorch on the CPU,
# fp32 wherever the GPU would take another math, a few steps, small batches and data sets.
if [ $dry = 1 ]; then
  backend=cpu pydevice=cpu steps=2 warmup=1 netwarm=1 batches="16 32"
  dmath() { echo fp32; }
  limits=(--epochs 1 --train-limit 512 --test-limit 200)
  log "DRY RUN on the CPU: no figure below is a GPU's"
else
  backend=cuda pydevice=cuda steps=200 warmup=30 netwarm=10 batches="100 1024"
  [ "${QUICK:-0}" = 1 ] && steps=60
  dmath() { echo "$1"; }
  limits=()
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
  log "GPU: $(cat "$out/gpu.txt")"
fi
log "deeptrain: $($bin --version 2>&1 | head -1); $(ldd "$bin" | grep -Eo 'lib(cudnn|cublas|nccl)[^ ]* => [^ ]*' | tr '\n' ' ')"
[ -n "$PY" ] && log "PyTorch: $("$PY" -c 'import torch; print(torch.__version__, "cuDNN", torch.backends.cudnn.version())' 2>&1 | tail -1)"

# Device time is scarce: nothing may hang the check. Every command has a time limit.
dt() { timeout "${STEP_TIMEOUT:-180}" "$bin" "$@"; }
pyt() { [ -n "$PY" ] && timeout "${STEP_TIMEOUT:-180}" "$PY" "$@"; }
field() { "${PY:-python3}" -c 'import json,sys
try: print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])
except Exception: print(0)' "$1"; }
status=0 skipped=""
fail() { log "FAIL $*"; status=1; }
# phase NAME SECONDS: true when NAME is asked for and its estimated cost fits what is left.
phase() {
  case " $phases " in *" $1 "*) ;; *) return 1 ;; esac
  if [ $((SECONDS + $2)) -gt "$budget" ]; then
    log "SKIPPED phase $1: about $2 s, $((budget - SECONDS)) s of the budget left"
    skipped="$skipped $1"
    return 1
  fi
  log "---- phase $1 (about $2 s on the GPU; at $SECONDS s)"
}

if phase tests 120; then
  run_test() {  # name, then the command
    local name=$1 t0=$SECONDS; shift
    if timeout "${TEST_TIMEOUT:-300}" "$@" >"$out/$name.log" 2>&1; then log "PASS $name ($((SECONDS - t0)) s)"
    else fail "$name ($((SECONDS - t0)) s): see $out/$name.log"; tail -25 "$out/$name.log"; fi
    # The failed and skipped tests by name (gtest lists each twice: as it runs, and at the end).
    grep -E '^\[  (SKIPPED|FAILED)  ?\] [A-Za-z]' "$out/$name.log" | grep -v ' ms)$' | sort -u |
      head -40 >>"$out/summary.txt"
    # On a GPU machine a skipped GPU test is an untested one.
    local n; n=$(grep '^\[  SKIPPED \] [A-Za-z]' "$out/$name.log" | grep -v ' ms)$' | sort -u | wc -l)
    [ $dry = 0 ] && [ "$n" -gt 0 ] && fail "$name: $n tests skipped on a GPU machine"
  }
  # (CudaBackendNoDevice checks the message of a machine without a GPU: it skips on this one.)
  run_test ops "$build/tests/test_backend_ops_gpu" --gtest_filter=-CudaBackendNoDevice.*
  run_test layers "$build/tests/test_gpu_layers"
  run_test parity "$build/tests/test_reference_parity"
  run_test train "$build/tests/test_gpu_train"
fi

# ratio_table TITLE DEEPTRAIN_JSONL PYTORCH_JSONL LABELS...: a row per label; PyTorch's lines come
# in pairs (NCHW, channels_last) in the labels' order, and the better of each pair is the peer.
ratio_table() {
  "${PY:-python3}" - "$@" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
title, dfile, pfile, labels = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def lines(path):
    try:
        return [json.loads(l) if l.strip().startswith("{") else {} for l in open(path)]
    except OSError:
        return []
d, p = lines(dfile), lines(pfile)
print(title)
print("| %s | deeptrain img/s | PyTorch img/s (layout) | ratio |" % " | ".join(labels[0].split("|")))
print("|" + "---|" * (len(labels[0].split("|")) + 3))
for i, label in enumerate(labels[1:]):
    dips = (d[i] if i < len(d) else {}).get("images_per_sec", 0)
    pair = [x for x in p[2 * i:2 * i + 2] if x.get("images_per_sec")]
    best = max(pair, key=lambda x: x["images_per_sec"]) if pair else {}
    pips = best.get("images_per_sec", 0)
    layout = "channels_last" if best.get("channels_last") else "NCHW"
    print("| %s | %s | %s | %s |" % (" | ".join(label.split("|")), dips or "failed",
          "%s (%s)" % (pips, layout) if pips else "-", "%.2fx" % (dips / pips) if dips and pips else "-"))
EOF
}

if phase table 150; then
  # deeptrain: one process a run. PyTorch: one process for all (its start and CUDA's
  # initialisation cost seconds a run), each run in both layouts.
  labels=("mode|batch|math") spec=""
  : >"$out/table-deeptrain.jsonl"
  for mode in train infer; do
    for batch in $batches; do
      for math in fp32 tf32 bf16 fp16; do
        labels+=("$mode|$batch|$math")
        pm=$math; [ $dry = 1 ] && pm=fp32
        spec="$spec,$mode:$batch:$pm,$mode:$batch:$pm:cl"
        dt bench --backend $backend --math "$(dmath $math)" --mode $mode --batch "$batch" \
          --steps $steps --warmup $warmup --json 2>>"$out/bench.err" | tail -1 >>"$out/table-deeptrain.jsonl"
      done
    done
  done
  pyt bench/pytorch_deepconvnet.py --device $pydevice --table "${spec#,}" --steps $steps \
    --warmup $warmup --data "$data/mnist" --threads 4 >"$out/table-pytorch.jsonl" 2>>"$out/bench.err" ||
    log "PyTorch's table failed: see $out/bench.err"
  ratio_table "DeepConvNet throughput, median of $steps steps after $warmup" \
    "$out/table-deeptrain.jsonl" "$out/table-pytorch.jsonl" "${labels[@]}"
fi

# recipe NAME CONFIG MATH: trained to the end; accuracy, wall time from process start, and the
# first epoch at 99.3% and 99.4% (its end, from process start: metrics_epochs.jsonl's wall_time).
recipe() {
  local name=$1 config=$2 math=$3 t0 t1
  t0=$(date +%s.%N)
  dt train "$config" --backend $backend --math "$(dmath "$math")" --json --data-dir "$data/mnist" \
    --run-dir "$out/$name-$math" "${limits[@]}" >"$out/$name-$math.jsonl" 2>&1 || fail "$name $math: see $out/$name-$math.jsonl"
  t1=$(date +%s.%N)
  "${PY:-python3}" - "$out/$name-$math/metrics_epochs.jsonl" "$t0" "$t1" "$name" "$math" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
path, t0, t1, name, math = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
try:
    epochs = [json.loads(l) for l in open(path) if l.strip()]
except OSError:
    epochs = []
def first(acc):
    e = next((e for e in epochs if e["test_accuracy"] >= acc), None)
    return "epoch %d at %.1f s" % (e["epoch"], e["wall_time"] - t0) if e else "never"
final = "%.4f" % epochs[-1]["test_accuracy"] if epochs else "?"
print("== %s %s: test accuracy %s after %d epochs, %.1f s from process start to exit; 99.3%%: %s; "
      "99.4%%: %s" % (name, math, final, len(epochs), t1 - t0, first(0.993), first(0.994)))
EOF
}

if phase recipes 90; then
  for math in ${TRAIN_MATHS:-fp32}; do recipe book-recipe examples/deep_convnet_mnist.prototxt "$math"; done
  for math in ${FAST_MATHS:-fp32 tf32}; do recipe fast-recipe examples/deep_convnet_mnist_fast.prototxt "$math"; done
fi

if phase nets 60; then
  for net in resnet20_fashion_mnist googlenet_mnist; do
    labels=("net|batch|math") spec=""
    batch=$(sed -n 's/.*batch_size: *\([0-9]*\).*/\1/p' "examples/$net.prototxt")
    : >"$out/nets-$net-deeptrain.jsonl"
    for math in ${NET_MATHS:-fp32 bf16}; do
      pm=$math; [ $dry = 1 ] && pm=fp32
      dt bench --config "examples/$net.prototxt" --backend $backend --math "$(dmath "$math")" \
        --no-augment --steps $((steps / 4 + 1)) --warmup $netwarm --json 2>>"$out/bench.err" |
        tail -1 >>"$out/nets-$net-deeptrain.jsonl"
      labels+=("$net|$batch|$math")
      spec="$spec,train:$batch:$pm,train:$batch:$pm:cl"
    done
    pyt bench/pytorch_deepconvnet.py --config "examples/$net.prototxt" --device $pydevice \
      --table "${spec#,}" --steps $((steps / 4 + 1)) --warmup $netwarm --threads 4 \
      >"$out/nets-$net-pytorch.jsonl" 2>>"$out/bench.err" || log "PyTorch's $net failed: see $out/bench.err"
    ratio_table "$net training throughput (no augmentation on either side)" \
      "$out/nets-$net-deeptrain.jsonl" "$out/nets-$net-pytorch.jsonl" "${labels[@]}"
  done
fi

if phase profile 45; then
  for batch in $batches; do
    for math in fp32 tf32; do
      dt bench --backend $backend --math "$(dmath $math)" --batch "$batch" --steps 30 --warmup 10 \
        --profile >"$out/profile-train-$batch-$math.txt" 2>>"$out/bench.err" || fail "profile $batch $math"
      head -14 "$out/profile-train-$batch-$math.txt" | tee -a "$out/summary.txt"
    done
  done
  big=${batches##* }
  pyt bench/pytorch_deepconvnet.py --device $pydevice --math fp32 --mode train --batch "$big" \
    --steps 20 --warmup 10 --data "$data/mnist" --threads 4 \
    --profile "$out/pytorch-profile-train-$big-fp32.txt" >/dev/null 2>>"$out/bench.err" || fail "PyTorch's profile"
  DEEPTRAIN_CUDA_LOG=1 dt bench --backend $backend --batch "$big" --steps 3 --warmup 1 \
    >/dev/null 2>"$out/cudnn-algorithms-$big-fp32.txt" || fail "cuDNN's algorithms (heuristics)"
  DEEPTRAIN_CUDA_LOG=1 DEEPTRAIN_CUDNN_FIND=1 dt bench --backend $backend --batch "$big" --steps 3 \
    --warmup 1 >/dev/null 2>"$out/cudnn-algorithms-$big-fp32-find.txt" || fail "cuDNN's algorithms (timed)"
  log "PyTorch's profile: $out/pytorch-profile-train-$big-fp32.txt; cuDNN's algorithms: $out/cudnn-algorithms-$big-fp32*.txt"
fi



if phase resnet 150; then
  if [ -d "$data/fashion_mnist" ]; then
    for math in ${RESNET_MATHS:-fp32}; do
      t0=$SECONDS
      timeout "${RESNET_TIMEOUT:-300}" "$bin" train examples/resnet20_fashion_mnist.prototxt \
        --backend $backend --math "$(dmath "$math")" --json --data-dir "$data/fashion_mnist" \
        --run-dir "$out/resnet20-$math" "${limits[@]}" >"$out/resnet20-$math.jsonl" 2>&1 ||
        fail "resnet20 $math: see $out/resnet20-$math.jsonl"
      log "resnet20 recipe (30 epochs, batch 128, SGD momentum, cosine) $math: test accuracy $(field test_accuracy <"$out/resnet20-$math.jsonl"), $((SECONDS - t0)) s"
    done
  else
    log "SKIPPED phase resnet: no $data/fashion_mnist (carry it beside the bundle)"
    skipped="$skipped resnet"
  fi
fi

# The same recipe in PyTorch on the same GPU (bench/pytorch_recipe.py: the twin network, its
# optimizer, schedule and augmentation, drawn alike), for the accuracy and wall time beside it.
if phase resnet_torch 180; then
  if [ -d "$data/fashion_mnist" ] && [ -n "$PY" ]; then
    for math in ${RESNET_MATHS:-fp32}; do
      pm=$math; [ $dry = 1 ] && pm=fp32
      dry_limits=(); [ $dry = 1 ] && dry_limits=(--epochs 1 --limit 512)
      timeout "${RESNET_TIMEOUT:-300}" "$PY" bench/pytorch_recipe.py \
        --config examples/resnet20_fashion_mnist.prototxt --data "$data/fashion_mnist" \
        --device $pydevice --math "$pm" --threads 4 "${dry_limits[@]}" \
        >"$out/resnet20-pytorch-$math.jsonl" 2>>"$out/bench.err" || fail "PyTorch's resnet20 $math: see $out/bench.err"
      log "resnet20 recipe in PyTorch $math: test accuracy $(field test_accuracy <"$out/resnet20-pytorch-$math.jsonl"), $(field wall_seconds <"$out/resnet20-pytorch-$math.jsonl") s from process start"
    done
  else
    log "SKIPPED phase resnet_torch: no $data/fashion_mnist or no PyTorch"
    skipped="$skipped resnet_torch"
  fi
fi

if phase ranks 60; then
  if ! command -v mpirun >/dev/null; then
    log "SKIPPED phase ranks: no mpirun on this machine"; skipped="$skipped ranks"
  elif ! ldd "$mpi_bin" | grep libmpi >/dev/null; then  # (grep -q would end ldd early: SIGPIPE)
    log "SKIPPED phase ranks: $mpi_bin was built without MPI"; skipped="$skipped ranks"
  else
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    big=${batches##* }
    # NCCL refuses two ranks on one GPU; through host memory and MPI they run (docs/distributed.md).
    for transport in nccl host-mpi; do
      r=$(timeout "${STEP_TIMEOUT:-180}" mpirun -np 2 "$mpi_bin" bench --backend $backend \
            --device-transport $transport --batch "$big" --steps $((steps / 4 + 1)) \
            --warmup $netwarm --json 2>"$out/ranks-$transport.err" | tail -1)
      if [ -n "$r" ]; then
        log "2 ranks on one GPU through $transport, batch $big (global) fp32: $(echo "$r" | field images_per_sec) img/s"
      else
        log "2 ranks on one GPU through $transport: failed: $(grep -m1 -iE 'error|duplicate' "$out/ranks-$transport.err")"
      fi
    done
    # A job of 2 ranks trained through host memory: the replicas' CRCs are compared every epoch.
    timeout "${STEP_TIMEOUT:-180}" mpirun -np 2 "$mpi_bin" train examples/deep_convnet_mnist_fast.prototxt \
      --backend $backend --device-transport host-mpi --json --data-dir "$data/mnist" \
      --run-dir "$out/ranks-train" "${limits[@]:---epochs 2}" >"$out/ranks-train.jsonl" 2>&1 ||
      fail "2 ranks training through host-mpi: see $out/ranks-train.jsonl"
    log "2 ranks, fast recipe through host-mpi: test accuracy $(field test_accuracy <"$out/ranks-train.jsonl") after $(field epochs <"$out/ranks-train.jsonl") epochs"
  fi
fi

if phase algos 70; then
  # Training only; heuristics run again here (beside the other two, not from the table).
  log "cuDNN's algorithms: heuristics / timed (cudnnFind) / timed, non-deterministic allowed (img/s)"
  for batch in $batches; do
    for math in fp32 tf32; do
      args=(bench --backend "$backend" --math "$(dmath $math)" --batch "$batch" --steps "$steps" --warmup "$warmup" --json)
      h=$(dt "${args[@]}" 2>>"$out/bench.err" | tail -1)
      f=$(DEEPTRAIN_CUDNN_FIND=1 dt "${args[@]}" 2>>"$out/bench.err" | tail -1)
      n=$(DEEPTRAIN_CUDNN_FIND=1 DEEPTRAIN_CUDNN_NONDETERMINISTIC=1 dt "${args[@]}" 2>>"$out/bench.err" | tail -1)
      printf '%s\n%s\n%s\n' "$h" "$f" "$n" >>"$out/algos.jsonl"
      log "train $batch $math: $(echo "$h" | field images_per_sec) / $(echo "$f" | field images_per_sec) / $(echo "$n" | field images_per_sec)"
    done
  done
fi

[ -n "$skipped" ] && log "skipped:$skipped (next: PHASES=\"${skipped# }\" bench/gpu_check.sh ...)"
log "status: $([ $status = 0 ] && echo all passed || echo FAILURES); $SECONDS s in all"
exit $status
