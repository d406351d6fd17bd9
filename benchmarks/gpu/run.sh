#!/usr/bin/env bash
# The GPU checks in one go, well under 10 minutes: the CUDA backend's tests (pytest -m cuda, the
# nvcc compile checks where nvcc exists), the Vulkan backend's tests where wgpu and a Vulkan
# driver are present, then the GPU benchmark (BERT-base seq 128 b1 and ResNet-50 b1, fp16 and
# fp32, step by step and replayed as CUDA graphs; onnxruntime-gpu in the same run when its wheel
# is in the wheelhouse).
#
#   benchmarks/gpu/run.sh            # results in $OUT (default /tmp/zg-gpu-out)
#
# A GPU machine may have no network: every wheel comes from benchmarks/gpu/wheelhouse (gitignored;
# fill it with the pip download command at the top of benchmarks/gpu/requirements.txt). If the
# machine's Python already imports cupy, nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/zg-gpu-out}
WHEELHOUSE=${WHEELHOUSE:-benchmarks/gpu/wheelhouse}
PY=${PYTHON:-python3}
VENV=${VENV:-/tmp/zg-gpu-venv}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"

if ! "$PY" -c "import cupy, onnx, onnxruntime, pytest" 2>/dev/null; then
    step "install from $WHEELHOUSE"
    if [ ! -d "$WHEELHOUSE" ]; then
        echo "no wheelhouse at $WHEELHOUSE: fill it (see benchmarks/gpu/requirements.txt)" >&2
        exit 2
    fi
    "$PY" -m venv --system-site-packages "$VENV" && PY="$VENV/bin/python"
    reqs="$OUT/requirements.txt"
    cp benchmarks/gpu/requirements.txt "$reqs"
    if ls "$WHEELHOUSE" | grep -qi '^onnxruntime_gpu-'; then  # it provides `onnxruntime` too
        sed -i 's/^onnxruntime>=.*/onnxruntime-gpu/' "$reqs"
    fi
    ls "$WHEELHOUSE" | grep -qi '^wgpu-' && echo wgpu >> "$reqs"
    timeout 240 "$PY" -m pip install -q --no-index --find-links "$WHEELHOUSE" -r "$reqs" || exit 3
fi
export PYTHONPATH="$PWD/src:$PWD"
"$PY" -c "import cupy; d = cupy.cuda.Device(0); print('cupy', cupy.__version__, 'devices',
cupy.cuda.runtime.getDeviceCount(), 'cc', d.compute_capability)" 2>&1 | tee -a "$OUT/gpu.txt"

step "CUDA tests"
timeout 240 "$PY" -m pytest -p no:cacheprovider -p no:randomly -q -rs \
    tests/backends/test_cuda.py tests/backends/test_cuda_compile.py 2>&1 | tee "$OUT/cuda_tests.txt"
cuda_rc=${PIPESTATUS[0]}

step "Vulkan tests"
if "$PY" -c "import sys; sys.path.insert(0, 'src'); from ziggurat.backends import device; \
raise SystemExit(0 if device.available('vulkan') else 1)" 2>/dev/null; then
    timeout 180 "$PY" -m pytest -p no:cacheprovider -p no:randomly -q -rs tests/backends/vulkan \
        2>&1 | tee "$OUT/vulkan_tests.txt"
else
    echo "skipped: no wgpu or no Vulkan driver" | tee "$OUT/vulkan_tests.txt"
fi

step "benchmark"
timeout 330 "$PY" benchmarks/gpu/bench.py --out "$OUT/gpu_bench.json" --runs 200 \
    2>&1 | tee "$OUT/gpu_bench.txt"
step "done: CUDA tests exit $cuda_rc; results in $OUT"
exit "$cuda_rc"
