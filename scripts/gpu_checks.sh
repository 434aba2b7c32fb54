#!/usr/bin/env bash
# Every GPU check of cuvae in one go, for a machine with a CUDA device (about 5-8 minutes):
#   1. the GPU tests (each CUDA kernel against its NumPy twin, CuPy step vs NumPy step,
#      graph vs no graph, trainer resume) and the CPU tests they build on;
#   2. one real training epoch on the GPU (graph) and one uncaptured, with their test losses;
#   3. the benchmark: cuvae (k = 1, 4, 16 models) vs PyTorch eager / CUDA graph / GEMMs alone,
#      fp32, then the batch-100 line again with TF32.
# Results go to $OUT (or ./gpu-results): log.txt, tests.txt, train_*.txt, bench*.jsonl.
#
#   bash scripts/gpu_checks.sh                # MNIST from $MNIST_DIR, else data/mnist, else the bundled subset
#   PYTHON=/path/to/python bash scripts/gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA="${MNIST_DIR:-data/mnist}"
[ -d "$DATA" ] || DATA="cuvae/data/datasets/mnist-subset"   # 10k/2k images shipped with cuvae: no download
log() { echo "== $*" | tee -a "$OUT/log.txt"; }

log "$(date -u) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
"$PY" - <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import sys, numpy, cupy
print("python", sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__, "available", cupy.is_available())
from cuvae.backends.cuda_ops import find_cublas
print("libcublas candidates:", find_cublas()[:3])
try:
    import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch: not installed")
PY

log "1. tests (GPU + the CPU ones they rest on)"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_cpu_ops.py tests/test_gradients.py \
    2>&1 | tee "$OUT/tests.txt" | tail -25 | tee -a "$OUT/log.txt"

log "2. one training epoch, chapter recipe, graph and no graph"
for mode in graph no-graph; do
    flag=""; [ "$mode" = no-graph ] && flag="--no-graph"
    rm -rf "/tmp/cuvae-gpu-$mode"
    timeout 120 "$PY" -m cuvae.train --recipe chapter --epochs 1 --device gpu --data-dir "$DATA" $flag --json \
        --out "/tmp/cuvae-gpu-$mode" > "$OUT/train_$mode.txt" 2>&1
    echo "rc=$? $(grep -o '"test_loss": [0-9.]*\|"seconds": [0-9.]*' "$OUT/train_$mode.txt" | tr '\n' ' ')" \
        | tee -a "$OUT/log.txt"
done

log "3. benchmark, fp32 (TF32 off)"
timeout 300 "$PY" scripts/bench.py --device gpu --data-dir "$DATA" --batches 100 1000 10000 --models 1 4 16 \
    --no-graph --rounds 2 --json > "$OUT/bench.jsonl" 2> "$OUT/bench_err.txt"
echo "rc=$?" | tee -a "$OUT/log.txt"
"$PY" - "$OUT/bench.jsonl" <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import json, sys
sys.path.insert(0, "scripts")
from bench import fmt_line
for line in open(sys.argv[1]):
    if line.startswith("{"):
        print(fmt_line(json.loads(line)))
PY
tail -5 "$OUT/bench_err.txt" | tee -a "$OUT/log.txt"

log "4. benchmark, batch 100 with TF32"
timeout 90 "$PY" scripts/bench.py --device gpu --data-dir "$DATA" --batches 100 --models 1 --tf32 --rounds 2 \
    2>&1 | tee "$OUT/bench_tf32.txt" | tee -a "$OUT/log.txt"
log "done $(date -u)"
