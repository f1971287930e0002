#!/usr/bin/env bash
# The test command: install, lint, type-check, then the whole suite (real ffmpeg peers).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
PY="${PYTHON:-python3}"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy
"$PY" -m pytest -q "$@"
