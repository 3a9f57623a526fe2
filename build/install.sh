#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install omniface with extras.
#   bash build/install.sh serve,demo        -> .venv with the embedded server and samples
# Used by build/demo.sh and tests/run.sh; safe to run again (pip skips what is there).
set -euo pipefail
EXTRAS="${1:-serve}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OMNIFACE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

# The python backend stub of the embedded Triton links the system's libpython3.11.
if [ ! -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] && [ ! -e /lib/x86_64-linux-gnu/libpython3.11.so.1.0 ]; then
  echo "omniface: installing libpython3.11 (needed by Triton's python backend stub)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libpython3.11
fi

# perf_analyzer (in tritonclient's wheel, for the 'bench' extra) links the system's libb64.so.0d.
if [ ! -e /usr/lib/x86_64-linux-gnu/libb64.so.0d ] && [ ! -e /lib/x86_64-linux-gnu/libb64.so.0d ]; then
  echo "omniface: installing libb64-0d (needed by perf_analyzer)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libb64-0d
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "omniface: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "omniface: installing omniface[$EXTRAS] into $VENV"
# torch is pinned in the 'train' extra to the CPU wheel (a bare 'torch' pulls CUDA builds).
"$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
