#!/usr/bin/env bash
# Every GPU figure of cuvae in one run, for a machine with a CUDA device (within 8 minutes on an H100/H200):
#   1. env        nvidia-smi, versions, and whether PyTorch can use CUDA (the benchmark's reference)
#   2. doctor     cuvae-doctor --device gpu --gradcheck: each kernel against its twin on the device, a
#                 captured step against the NumPy step, graph against no graph, the gradients
#   3. tests      tests/test_gpu.py and tests/test_gpu_conv_step.py (GPU tests and the CPU ones they rest
#                 on), as JUnit XML
#   4. bench      batch 100/1000/10000, k = 1, 4, 16 models, cuvae vs PyTorch eager (fused Adam) and
#                 PyTorch's whole step in a CUDA graph, fp32 (and no graph for k = 1)
#   4b. bench_conv the conv VAE (1x28x28, 32-64-128, z 8) at batch 100/1000: cuvae's device step vs PyTorch
#                 eager and PyTorch's whole step in a CUDA graph, fp32, examples/s
#   5. train      python -m cuvae.train --latent 8 --device gpu --recipe chapter --epochs 10, timed
#   6. bench_tf32 the benchmark again with TF32 GEMMs, k = 1
#   then scripts/gpu_report.py gathers every figure into OUT/figures.json, with the speed targets as ratios.
# Each step has its own time limit, cut to what is left of the 8 minutes; a failing step is recorded
# (OUT/steps.jsonl) and the next one runs. Never needs a network: data come from --data, else
# .devdata/mnist (full MNIST, git-ignored), else the 10k/2k subset bundled with cuvae.
#
#   bash scripts/gpu_checks.sh [--out DIR] [--data DIR] [--python PY] [--budget SECONDS] [--dry-run]
#   OUT=/somewhere bash scripts/gpu_checks.sh            # $OUT is the default output folder
# --dry-run writes OUT/plan.json (every step's command and limit) and runs nothing.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
OUTDIR="${OUT:-$PWD/gpu-results}"
DATA="${MNIST_DIR:-}"
PY="${PYTHON:-python3}"
BUDGET=470           # seconds for all steps; the report and start-up fit in the rest of 8 minutes
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUTDIR="${2:?--out needs a folder}"; shift 2 ;;
        --data) DATA="${2:?--data needs a folder}"; shift 2 ;;
        --python) PY="${2:?--python needs an interpreter}"; shift 2 ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "error: --budget takes whole seconds, got $BUDGET" >&2; exit 2 ;; esac
if [ -z "$DATA" ]; then
    DATA=cuvae/data/datasets/mnist-subset                     # bundled with cuvae: no download
    [ -f .devdata/mnist/train-images-idx3-ubyte.gz ] && DATA=.devdata/mnist
fi
[ -d "$DATA" ] || { echo "error: no data folder $DATA (pass --data DIR with MNIST's four IDX files)" >&2; exit 2; }
mkdir -p "$OUTDIR" || { echo "error: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUVAE_MIRRORS="http://127.0.0.1:9/"                  # any download attempt fails at once: no network
rm -f "$OUTDIR/steps.jsonl" "$OUTDIR/plan.json"
DEADLINE=$((SECONDS + BUDGET))
PLAN=()

# step NAME LIMIT OUTFILE CMD...: run CMD (stdout to OUT/OUTFILE, stderr to OUT/NAME.log) within
# min(LIMIT, seconds left); one line to steps.jsonl whatever happens
step() {
    local name="$1" limit="$2" asked="$2" outfile="$3"; shift 3
    local left=$((DEADLINE - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$DRY" = 1 ]; then
        PLAN+=("$("$PY" -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "limit_s": int(sys.argv[2]), "stdout": sys.argv[3], "command": sys.argv[4:]}))' "$name" "$asked" "$outfile" "$@")")
        return 0
    fi
    if [ "$limit" -lt 10 ]; then
        echo "{\"name\": \"$name\", \"rc\": null, \"seconds\": 0, \"skipped\": \"out of time\"}" >> "$OUTDIR/steps.jsonl"
        echo "== $name: skipped, out of time" >&2
        return 0
    fi
    echo "== $name (limit ${limit} s): $*" >&2
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" > "$OUTDIR/$outfile" 2> "$OUTDIR/$name.log"
    local rc=$?
    echo "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"limit_s\": $limit}" >> "$OUTDIR/steps.jsonl"
    echo "   rc=$rc in $((SECONDS - t0)) s" >&2
}

step env 30 env.json "$PY" - <<'PY'
import json, subprocess, sys
sys.path.insert(0, "scripts")
import bench
from cuvae.backends import cuda_env
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired) as err:
    smi = f"nvidia-smi: {err}"
tr, torch_desc = bench.torch_cuda_probe()
print(json.dumps({"nvidia_smi": smi, "cuda": cuda_env.probe(), "torch": torch_desc, "torch_cuda": tr is not None,
                  "python": sys.version.split()[0]}))
PY
step doctor 90 doctor.json "$PY" -m cuvae.doctor --device gpu --gradcheck --json
step tests 150 tests.txt "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUTDIR/tests.xml" tests/test_gpu.py \
    tests/test_gpu_conv_step.py
step bench 150 bench_fp32.jsonl "$PY" scripts/bench.py --device gpu --data-dir "$DATA" --batches 100 1000 10000 \
    --models 1 4 16 --no-graph --rounds 2 --json
step bench_conv 60 bench_conv.jsonl "$PY" scripts/bench_conv_gpu.py --data-dir "$DATA" --batches 100 1000 \
    --rounds 2 --json
rm -rf "$OUTDIR/train-run"
T0=$SECONDS
step train 120 train.jsonl "$PY" -m cuvae.train --latent 8 --device gpu --recipe chapter --epochs 10 \
    --data-dir "$DATA" --json --out "$OUTDIR/train-run"
[ "$DRY" = 1 ] || echo "{\"seconds\": $((SECONDS - T0)), \"data\": \"$DATA\"}" > "$OUTDIR/train_time.json"
step bench_tf32 60 bench_tf32.jsonl "$PY" scripts/bench.py --device gpu --data-dir "$DATA" --batches 100 1000 10000 \
    --models 1 --tf32 --rounds 2 --json

if [ "$DRY" = 1 ]; then
    printf '%s\n' "${PLAN[@]}" | "$PY" -c 'import json,sys; json.dump({"data": sys.argv[1], "out": sys.argv[2], "budget_s": int(sys.argv[3]), "steps": [json.loads(l) for l in sys.stdin]}, open(sys.argv[2] + "/plan.json", "w"), indent=1)' "$DATA" "$OUTDIR" "$BUDGET"
    echo "dry run: plan in $OUTDIR/plan.json"
    exit 0
fi
"$PY" scripts/gpu_report.py "$OUTDIR" | tee "$OUTDIR/summary.txt"
