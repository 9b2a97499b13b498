#!/usr/bin/env bash
# The GPU training benchmark: one table of training-step time and peak torch.cuda.max_memory_allocated at 640 px,
# eager vs compiled (torch.compile, inductor), fp16 vs bf16 autocast, IBRA-LIF vs the ANN twin, at the m scale with the
# recipe's per-GPU batch (40 over 4 GPUs = 10) and at the n scale. Prepared to finish in under 5 minutes on one H200:
# groups (scale x precision) that would start after 270 s are listed as "not run (time budget)".
#
# Usage (from the repository root): bash benchmarks/gpu.sh [--dry-run] [OUT_DIR]
#   --dry-run   every code path on the CPU with a tiny model at 64 px (no GPU needed)
set -euo pipefail
args=(--matrix --device 0)
limit=295 # seconds: the GPU run's hard stop
if [[ "${1:-}" == "--dry-run" ]]; then
  args=(--matrix --dry-run)
  limit=3600 # compiling on a CPU takes minutes per cell
  shift
fi
out="${1:-${OUT:-.}}"
mkdir -p "$out"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$(mktemp -d)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # this checkout, whether or not the package is installed
python -c "import torch, ultralytics; print('torch', torch.__version__, '· ultralytics', ultralytics.__version__)"
if [[ "${args[1]}" != "--dry-run" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
timeout "$limit" python -m benchmarks.compiled "${args[@]}" --json "$out/gpu_train.json" | tee "$out/gpu_train.md"
