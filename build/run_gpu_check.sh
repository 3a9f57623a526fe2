#!/usr/bin/env bash
# Run tests/gpu on a bare GPU machine, from the kit that build/pack_gpu_check.py packed.
#
#   bash build/run_gpu_check.sh               # on the GPU machine, in the checkout
#   bash build/run_gpu_check.sh --rehearse    # here, on the CPU: the same script, device cpu
#
# Why one script: GPU machines are lent for minutes, with torch CUDA and Python 3.12 but
# no network, Triton, tritonclient, perf_analyzer or training data. The kit brings those;
# this script unpacks it, records the machine, and runs the GPU tests with the numbers
# written to $OUT (the device tool's output folder) or runs/gpu-check/.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REHEARSE=0
[[ "${1:-}" == "--rehearse" ]] && { REHEARSE=1; shift; }
ARCHIVE="${1:-$ROOT/.gpu-check/kit.tar.xz}"
RESULTS_DIR="${OUT:-$ROOT/runs/gpu-check}"
KIT="${OMNIFACE_GPU_KIT:-/tmp/omniface-gpu-kit}"
PYTHON="${PYTHON:-python3}"
[[ $REHEARSE == 1 && -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"

if [[ ! -f "$ARCHIVE" ]]; then
  echo "no kit at $ARCHIVE: run 'python build/pack_gpu_check.py' first (on a machine with the 'serve,bench' extras)" >&2
  exit 2
fi
mkdir -p "$KIT" "$RESULTS_DIR"
tar -xJf "$ARCHIVE" -C "$KIT" || exit 2

# The kit's server, client and perf_analyzer libraries come first; torch, numpy, onnx and
# onnxruntime are the machine's own.
export PYTHONPATH="$ROOT/client:$KIT/site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$KIT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The python backend stub links libpython3.X.so: point the loader at this Python's.
LIBDIR="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
[[ -n "$LIBDIR" ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$LIBDIR"
export OMNIFACE_PERF_ANALYZER="$KIT/bin/perf_analyzer"
export OMNIFACE_DATA="$KIT/data"
export OMNIFACE_CACHE="${OMNIFACE_CACHE:-/tmp/omniface-cache}"
export OMNIFACE_GPU_RESULTS="$RESULTS_DIR/gpu-results.json"
export PYTHONUNBUFFERED=1
if [[ $REHEARSE == 1 ]]; then
  export OMNIFACE_GPU_REHEARSAL=1
  export OMNIFACE_GPU_RESULTS="$RESULTS_DIR/gpu-rehearsal.json"
fi

{
  date -u
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PYTHON" - <<'EOF'
import importlib, sys, sysconfig
print("python", sys.version.split()[0], sysconfig.get_config_var("LDLIBRARY"), sysconfig.get_config_var("LIBDIR"))
for name in ("numpy", "torch", "onnx", "onnxruntime", "tritonclient", "grpc", "google.protobuf", "pytriton"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), getattr(module, "__file__", ""))
    except Exception as exc:  # report, do not stop: the tests skip what is missing
        print(name, "MISSING", type(exc).__name__, exc)
try:
    import torch
    print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as exc:
    print("torch cuda check failed:", exc)
import onnxruntime
print("onnxruntime providers", onnxruntime.get_available_providers())
EOF
  "$KIT/bin/perf_analyzer" --version 2>&1 | head -1
} 2>&1 | tee "$RESULTS_DIR/machine.txt"

cd "$ROOT"
"$PYTHON" -m pytest tests/gpu -v -s -rA -p no:cacheprovider \
  --junitxml="$RESULTS_DIR/junit.xml" 2>&1 | tee "$RESULTS_DIR/pytest.log"
status=${PIPESTATUS[0]}
echo "tests/gpu exit status: $status; results in $RESULTS_DIR"
exit "$status"
