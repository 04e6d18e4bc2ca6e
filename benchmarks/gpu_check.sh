#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU, within about 8 minutes:
#
#     bash benchmarks/gpu_check.sh [--wheels DIR] [--out REPORT] [--dry_run]
#
# Uses the PyTorch already installed there (torch >= 2.11) and installs nothing from the network: missing packages
# come from --wheels DIR, a local folder of wheels (default: .whl/ when it exists; `make gpu-wheels` fills it with
# tensorboard_logger and the protobuf < 4 it needs, which a PyTorch image usually lacks). It runs the CUDA-marked tests,
# the loss benchmark and the training-step benchmark (every method at ResNet-50, 224 px, batch 64, against a bare
# PyTorch loop, and JPEG against HDF5 loading) on the GPU, the statistics pass's share of the epoch (FDS, VIR, SRL,
# with and without --stats_from_training), a bf16 vs float32 training-step comparison, and a short synthetic AgeDB-DIR run with
# ConR + LDS + FDS + RankSim + SRL, and writes one report (GPU model, torch version, every figure). Without a CUDA
# GPU it says so and exits 0. --dry_run runs every section on the CPU at toy sizes, to check the script itself
# (tests/common/test_cuda.py does, so that it still works on the day a GPU is there).
set -uo pipefail
REPO=$(realpath -m "$(dirname "$0")/..")
PY=${PYTHON:-python3}
WHEELS=""
[ -d "$REPO/.whl" ] && WHEELS="$REPO/.whl"
OUT="$REPO/gpu_check_report.txt"
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=$(realpath -m "$2"); shift 2 ;;
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        --dry_run) DRY=1; shift ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --wheels DIR, --out REPORT, --dry_run)" >&2; exit 2 ;;
    esac
done
[[ "$PY" == */* ]] && PY=$(realpath -ms "$PY")      # paths given relative to where the script was called from
cd "$REPO"
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PY has no PyTorch; point PYTHON= at one that has (torch >= 2.11): nothing to check."
    [ "$DRY" = 1 ] && exit 2 || exit 0
fi
if [ "$DRY" = 1 ]; then
    # The same sections on the CPU at toy sizes: a check of this script, not of a GPU.
    export DEVICE=cpu MODEL=resnet18 IMG=32 BATCH=8 STEP_ARGS="--blocks 1 --steps 1 --stored_size 48"
    export REPEATS=1 RUN_ARGS="--epoch 1 --img_size 32 --width 16 --batch_size 32 --workers 0"
    export SYNTH_ARGS="--n 200 --img_size 32"
    export STATS_ARGS="--n 200 --img_size 16 --width 4 --epochs 1 --workers 0 --methods FDS"
    export TMPROOT="${TMPDIR:-/tmp}/gpu_check_dry_$$"
else
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check: no CUDA GPU visible to $PY: nothing to check."
        exit 0
    fi
    export DEVICE=cuda MODEL=resnet50 IMG=224 BATCH=64 STEP_ARGS="--blocks 5 --steps 3" REPEATS=20
    export RUN_ARGS="--epoch 3 --img_size 64 --batch_size 128 --workers 8" SYNTH_ARGS="--n 3000 --img_size 64"
    export STATS_ARGS="--n 2000 --img_size 64 --width 64 --batch_size 128 --epochs 2 --workers 8"
    export TMPROOT=/tmp/gpu_check
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # the repo's `common`, without an install step
if [ -n "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$TMPROOT/site" "$WHEELS"/*.whl \
        && export PYTHONPATH="$PYTHONPATH:$TMPROOT/site"
fi
section() { printf '\n## %s\n' "$1" | tee -a "$OUT"; }
: > "$OUT"
{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ)$( [ "$DRY" = 1 ] && echo ' (dry run on the CPU)')"
    "$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|',
              torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} | tee -a "$OUT"

section "CUDA tests (pytest -m cuda)"
timeout 180 "$PY" -m pytest -q -m cuda tests 2>&1 | tail -15 | tee -a "$OUT"

section "loss benchmark (benchmarks/losses.py --device $DEVICE)"
timeout 120 "$PY" benchmarks/losses.py --device "$DEVICE" --repeats "$REPEATS" 2>&1 | tail -20 | tee -a "$OUT"

section "training step per method, and loading (benchmarks/train_step.py, $MODEL, $IMG px, batch $BATCH)"
timeout 240 "$PY" benchmarks/train_step.py --device "$DEVICE" --model "$MODEL" --img_size "$IMG" --batch_size "$BATCH" \
    $STEP_ARGS --loading 2>&1 | tail -40 | tee -a "$OUT"

section "statistics pass of FDS, VIR and SRL, share of the epoch (benchmarks/statistics_pass.py, $STATS_ARGS)"
timeout 240 "$PY" benchmarks/statistics_pass.py --device "$DEVICE" $STATS_ARGS 2>&1 | tail -12 | tee -a "$OUT"

section "bf16 vs float32 training step ($MODEL, $IMG px, batch $BATCH, ConR + FDS)"
timeout 120 "$PY" benchmarks/train_step.py --device "$DEVICE" --model "$MODEL" --img_size "$IMG" --batch_size "$BATCH" \
    --compare_bf16 2>&1 | tail -3 | tee -a "$OUT"

section "synthetic AgeDB-DIR: ConR + LDS + FDS + RankSim + SRL, bf16, on $DEVICE ($RUN_ARGS)"
DATA="$TMPROOT/agedb"
[ -f "$DATA/agedb.csv" ] || timeout 120 "$PY" -m common.synthetic agedb --out "$DATA" $SYNTH_ARGS >/dev/null
start=$(date +%s)
(cd agedb-dir && timeout 240 "$PY" train.py --data_dir "$DATA" --store_root "$TMPROOT/runs" --store_name stack \
    --overwrite stack --device "$DEVICE" --amp bf16 --model resnet18 $RUN_ARGS \
    --reweight sqrt_inv --lds --fds --conr --regularization_weight 100 --interpolation_lambda 2 --srl \
    --many_shot_thr 25 --low_shot_thr 5 2>&1 | tail -8) | tee -a "$OUT"
echo "wall: $(( $(date +%s) - start )) s" | tee -a "$OUT"
[ "$DRY" = 1 ] && rm -rf "$TMPROOT"
echo "report: $OUT"
