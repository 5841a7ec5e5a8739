#!/usr/bin/env bash
# The speed suite's GPU figures (issue 18) in one short run: about 10 minutes on one H100/H200.
# From the repository root, with a Python whose torch has CUDA and the project installed
# (pip install --no-deps -e .), and the Omniglot zips where $OMNIGLOT says:
#
#   OMNIGLOT=/path/to/omniglot bash benchmarks/gpu_suite.sh [OUT]      # default OUT: results/gpu
#
# Writes compute_limit.json and pipeline_efficiency*.json under OUT (machine line first, as
# every speed script does). A smoke test on the CPU (figures meaningless, seconds each):
#   DEVICE=cpu ROW=0.5 LOOP=3 bash benchmarks/gpu_suite.sh /tmp/gpu-smoke
set -euo pipefail
OUT=${1:-benchmarks/results/gpu}
DEVICE=${DEVICE:-cuda}
ROW=${ROW:-10}    # seconds per compute-limit row
LOOP=${LOOP:-60}  # seconds per training loop
export PYTHONUNBUFFERED=1
python - "$DEVICE" <<'EOF'
import sys, torch
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device: run this where torch sees a GPU"
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
EOF
if [ "$DEVICE" = cuda ]; then
    CASES="conv4:28:1024 resnet18:64:512 resnet18:224:256"
    SSL="resnet18:64 resnet18:224"
    R64="resnet18:64"
else  # the smoke test: conv4 alone
    CASES="conv4:28:64"
    SSL="conv4:28"
    R64="conv4:28"
fi
# 1. the compute limit: bare forward+backward+Adam, eager, channels-last, bf16 autocast,
#    torch.compile and compile + bf16; inference plain and BatchNorm-folded
python benchmarks/compute_limit.py --device "$DEVICE" --seconds "$ROW" --cases $CASES \
    --out "$OUT"
# 2. the loops on the device (views are made on the device, after the copy): resnet18 SimCLR
#    at 64 and 224 px, conv4 ProtoNet 60-way (episodes/s = images/s / 360), float32, then bf16
#    (amp=auto: bf16 on GPUs that have it), then bf16 + compile
python benchmarks/pipeline_efficiency.py --device "$DEVICE" --seconds "$LOOP" \
    --bare-seconds "$ROW" --cases $SSL --loops simclr --out "$OUT/fp32"
python benchmarks/pipeline_efficiency.py --device "$DEVICE" --seconds "$LOOP" \
    --bare-seconds "$ROW" --cases $SSL --loops simclr --set amp=auto \
    --out "$OUT/bf16"
python benchmarks/pipeline_efficiency.py --device "$DEVICE" --seconds "$LOOP" \
    --bare-seconds "$ROW" --cases conv4:28 --loops protonet simclr --set amp=auto \
    --out "$OUT/conv4-bf16"
python benchmarks/pipeline_efficiency.py --device "$DEVICE" --seconds "$LOOP" \
    --bare-seconds "$ROW" --cases $R64 --loops simclr --set amp=auto compile=on \
    --out "$OUT/bf16-compile"
echo "figures under $OUT"
