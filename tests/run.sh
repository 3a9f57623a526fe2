#!/usr/bin/env bash
# The tests: install everything the suite needs, then run all of it (unit, model and
# integration tests against a real tritonserver on loopback). Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/build/install.sh" serve,train,test,demo,bench,deploy
cd "$ROOT"
exec "${OMNIFACE_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
