#!/usr/bin/env bash
# The prepared device check: what optqual promises on a GPU, verified in about 8 minutes on one GPU.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]            # default OUT_DIR: /tmp/gpu_check
#     DEVICE=cpu SMOKE=1 bash benchmarks/gpu_check.sh   # the script itself, in minutes on a CPU: sections 1 and 4
#                                                       # on tiny sizes, the CUDA-only sections 2 and 3 skipped
#
# Run it from the repository root, with optqual's dependencies importable (on a machine without
# network: pip install --no-index the wheels first, see docs/gpus.md). It makes its own data, a
# synthetic CIFAR-shaped npz, and prints:
#   1. repeatability: two identical runs bit-identical (weights and history) on CUDA in fp32,
#      tf32, bf16, fp16, with compile=true, and with SAM + RandAugment + CutMix + the quantizer;
#   2. host synchronizations per step of each setting (torch.cuda.set_sync_debug_mode);
#   3. the project's epoch against the bare step and the textbook pipeline (throughput.py),
#      ResNet-8 and ResNet-18-CIFAR;
#   4. a 16-job ResNet-8 seed sweep packed on the GPU against the same jobs one at a time.
# Every section's figures go to OUT_DIR as well; the script goes on after a failed section and
# exits non-zero if any failed.
set -uo pipefail
OUT=${1:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
if [ -n "${SMOKE:-}" ]; then REPEAT_IMAGES=500; SWEEP_IMAGES=500; SWEEP_JOBS=4; else REPEAT_IMAGES=10000; SWEEP_IMAGES=20000; SWEEP_JOBS=16; fi
DATA="$OUT/synthetic.npz"
failed=()
export PYTHONUNBUFFERED=1

section() { echo; echo "== $1 ($(date +%T))"; }

section "the machine"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"; fi
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version())"

section "data: 50,000 synthetic CIFAR-sized training images (45,000 after the validation split) and 10,000 test images"
$PY - "$DATA" <<'EOF'
import sys
import numpy as np
rng = np.random.default_rng(0)
np.savez(sys.argv[1], x_train=rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 50_000, dtype=np.uint8),
         x_test=rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 10_000, dtype=np.uint8))
EOF
COMMON=(data=npz "data.path=$DATA" trackio.enabled=false "device=$DEVICE")

section "1. repeatability: two runs of each setting, bit for bit"
same() {  # same NAME OVERRIDES...: train twice, compare final weights and the history without its timings
  local name=$1; shift
  for copy in a b; do
    $PY -m optqual train "${COMMON[@]}" epochs=2 eval_every=1 "data.train_size=$REPEAT_IMAGES" "$@" "hydra.run.dir=$OUT/repeat/$name/$copy" \
      > "$OUT/repeat/$name.$copy.log" 2>&1 || { echo "$name: run $copy failed (see $OUT/repeat/$name.$copy.log)"; return 1; }
  done
  $PY - "$OUT/repeat/$name" "$name" <<'EOF'
import csv, sys, torch
from pathlib import Path
root, name = Path(sys.argv[1]), sys.argv[2]
a, b = (torch.load(root / copy / "final_model.pt") for copy in "ab")
rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(root / copy / "history.csv"))] for copy in "ab"]
same = all(torch.equal(a[k], b[k]) for k in a) and rows[0] == rows[1]
print(f"{name:36s} {'bit-identical' if same else 'DIFFERENT'}")
sys.exit(0 if same else 1)
EOF
}
mkdir -p "$OUT/repeat"
for setting in "fp32:precision=fp32" "tf32:precision=tf32" "bf16:precision=bf16" "fp16:precision=fp16" "compile:compile=true" \
               "sam_randaugment_cutmix_quantizer:optimizer=sam augment=randaugment batch_mix=cutmix quantizer=deadzone"; do
  # shellcheck disable=SC2086
  same "${setting%%:*}" ${setting#*:} || failed+=("repeat ${setting%%:*}")
done

if [ "$DEVICE" = cuda ]; then
  section "2. host synchronizations per step"
  $PY benchmarks/sync_check.py --data-path "$DATA" | tee "$OUT/sync.txt" || failed+=("sync")

  section "3. the epoch against the bare step and the textbook (ResNet-8, ResNet-18-CIFAR)"
  for model in resnet8 resnet18_cifar; do
    $PY benchmarks/throughput.py --device cuda --model "$model" --precisions fp32,bf16 --repeats 3 --train-images 20480 \
      --workers 4,8 | tee "$OUT/throughput_$model.txt" || failed+=("throughput $model")
  done
fi

section "4. a $SWEEP_JOBS-job ResNet-8 seed sweep: packed on the GPU, then one job at a time"
sweep() {  # sweep NAME N_JOBS
  local started=$SECONDS
  $PY -m optqual train -m "${COMMON[@]}" epochs=3 eval_every=3 "data.train_size=$SWEEP_IMAGES" "seed=range($SWEEP_JOBS)" \
    hydra/launcher=joblib "hydra.launcher.n_jobs=$2" "hydra.sweep.dir=$OUT/sweep_$1" > "$OUT/sweep_$1.log" 2>&1 || return 1
  echo "$1: $SWEEP_JOBS jobs in $((SECONDS - started)) s" | tee -a "$OUT/sweep.txt"
}
sweep packed "$SWEEP_JOBS" || failed+=("packed sweep")
sweep one_at_a_time 1 || failed+=("sequential sweep")
$PY - "$OUT" <<'EOF' || failed+=("sweep record")
import json, sys
from pathlib import Path
for name in ("packed", "one_at_a_time"):
    runs = sorted(Path(sys.argv[1], f"sweep_{name}").glob("seed=*/metrics.json"))
    devices = sorted({json.loads(run.read_text())["device"] for run in runs})
    print(f"{name}: {len(runs)} runs finished, on {', '.join(devices)}")
EOF

section "verdict"
if [ ${#failed[@]} -eq 0 ]; then echo "gpu_check: every section passed"; else echo "gpu_check: FAILED: ${failed[*]}"; exit 1; fi
