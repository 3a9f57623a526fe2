#!/usr/bin/env bash
# The demo: install, serve the default model on the embedded Triton server, analyse the
# sample images through the SDK, print per-face results and write annotated pictures.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/build/install.sh" serve,demo
exec "${OMNIFACE_VENV:-$ROOT/.venv}/bin/python" "$ROOT/build/demo.py" "$@"
