#!/usr/bin/env bash
# The speed tables on a lent GPU (device tool), at 640 px with AMP; prepared to finish in under 5 minutes on an H200.
# Usage (from the repository root on the GPU machine): bash benchmarks/gpu.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-.}}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$(mktemp -d)}"
python -m pip install -q --no-deps -e . >/dev/null  # the package (torch/ultralytics come with the machine's image)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 280 python -m benchmarks.speed --device 0 --amp --train-imgsz 640 --train-batch 16 --infer-imgsz 640 \
  --reps 10 --warmup 3 --json "$out/speed_gpu.json" | tee "$out/speed_gpu.md"
