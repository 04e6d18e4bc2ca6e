#!/usr/bin/env bash
# One prepared check for a machine with a CUDA GPU, within about 8 minutes:
#
#     bash benchmarks/gpu_check.sh [--wheels DIR] [--out REPORT]
#
# Uses the PyTorch already installed there (torch >= 2.11) and installs nothing from the network: missing packages
# (tensorboard_logger, pytest, ...) come from --wheels DIR, a local folder of wheels. It runs the CUDA-marked tests,
# the loss benchmark on the GPU, a bf16 vs float32 training-step comparison, and a short synthetic AgeDB-DIR run
# with ConR + LDS + FDS + RankSim + SRL, and writes one report (GPU model, torch version, every figure). Without a
# CUDA GPU it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=""
OUT="gpu_check_report.txt"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --wheels DIR, --out REPORT)" >&2; exit 2 ;;
    esac
done
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to $PY (or no PyTorch): nothing to check."
    exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # the repo's `common`, without an install step
if [ -n "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site "$WHEELS"/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/gpu_check_site"
fi
section() { printf '\n## %s\n' "$1" | tee -a "$OUT"; }
: > "$OUT"
{
    echo "# gpu_check $(date -u +%Y-%m-%dT%H:%MZ)"
    "$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0))"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} | tee -a "$OUT"

section "CUDA tests (pytest -m cuda)"
timeout 180 "$PY" -m pytest -q -m cuda tests 2>&1 | tail -15 | tee -a "$OUT"

section "loss benchmark on the GPU (benchmarks/losses.py --device cuda)"
timeout 120 "$PY" benchmarks/losses.py --device cuda --repeats 20 2>&1 | tail -20 | tee -a "$OUT"

section "bf16 vs float32 training step (ResNet-50, 224 px, batch 64, ConR + FDS)"
timeout 120 "$PY" - <<'PY' 2>&1 | tee -a "$OUT"
import time, torch
from common.fds import FDS
from common.models.resnet import ResNetRegressor
from common.objective import build_objective
device = torch.device("cuda")
def steps(dtype, n=10):
    torch.manual_seed(0)
    model = ResNetRegressor("resnet50", fds=FDS(2048, 100, 3)).to(device).train()
    objective = build_objective(loss="l1", conr_weight=4.0).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    x = torch.randn(64, 3, 224, 224, device=device)
    batch = {"input": x, "target": torch.randint(0, 100, (64, 1), device=device).float(),
             "weight": torch.ones(64, 1, device=device), "views": (x.flip(3), x.flip(2))}
    losses = []
    for i in range(n + 2):
        if i == 2:
            torch.cuda.synchronize(); start = time.time()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            total = sum(objective(model, batch, 0).values())
        optimizer.zero_grad(); total.backward(); optimizer.step()
        losses.append(total.item())
    torch.cuda.synchronize()
    return (time.time() - start) / n, losses
fp32, bf16 = steps(None), steps(torch.bfloat16)
print(f"float32 {fp32[0] * 1000:.1f} ms/step, bf16 {bf16[0] * 1000:.1f} ms/step, speed-up {fp32[0] / bf16[0]:.2f}x")
print("loss after 12 steps: float32 %.4f, bf16 %.4f (finite: %s)" % (fp32[1][-1], bf16[1][-1],
      all(v == v and abs(v) < float("inf") for v in bf16[1])))
PY

section "synthetic AgeDB-DIR: ConR + LDS + FDS + RankSim + SRL, 3 epochs on the GPU"
DATA=/tmp/gpu_check_agedb
[ -f "$DATA/agedb.csv" ] || timeout 120 "$PY" -m common.synthetic agedb --out "$DATA" --n 3000 --img_size 64 >/dev/null
start=$(date +%s)
(cd agedb-dir && timeout 240 "$PY" train.py --data_dir "$DATA" --store_root /tmp/gpu_check_runs --store_name stack \
    --overwrite --device cuda --amp bf16 --model resnet18 --img_size 64 --batch_size 128 --epoch 3 --workers 8 \
    --reweight sqrt_inv --lds --fds --conr --regularization_weight 100 --interpolation_lambda 2 --srl \
    --many_shot_thr 25 --low_shot_thr 5 2>&1 | tail -8) | tee -a "$OUT"
echo "wall: $(( $(date +%s) - start )) s" | tee -a "$OUT"
echo "report: $OUT"
