#!/usr/bin/env bash
# The GPU check of the speed issue, for a GPU machine without network (under 6 minutes on one
# H200, the decisive phases first). From the repository root:
#     bash benchmarks/gpu_check.sh [CIFAR10_JPEG_TARBALL]
# The tarball defaults to ../shared/data/cifar10-jpeg.tar.gz (carry it along if the machine has
# no ../shared). Results: $OUT/gpu_check.{md,json} when $OUT is set, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=${1:-../shared/data/cifar10-jpeg.tar.gz}
if [ ! -f "$tarball" ]; then
    echo "gpu_check: $tarball not found; give the path of cifar10-jpeg.tar.gz." >&2
    exit 2
fi
data=/tmp/reslab-cifar10-jpeg
mkdir -p "$data" && tar -xzf "$tarball" -C "$data"
# Use the installed reslab if there is one, else this checkout (the GPU image has all of its needs).
python3 -c "import reslab" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONUNBUFFERED=1
timeout 330 python3 benchmarks/gpu_check.py --data "imagefolder:$data" --out "${OUT:-benchmarks/results}/gpu_check"
