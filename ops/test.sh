#!/usr/bin/env bash
# The test command: install, lint, type-check, then the whole suite (real ffmpeg peers).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
PY="${PYTHON:-python3}"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy
# Three workers on two cores: most of the suite's time is spent waiting on its peers (ffmpeg,
# PostgreSQL, Chromium), not on the CPU. FEEDGATE_TEST_WORKERS=0 runs it in one process.
"$PY" -m pytest -q -n "${FEEDGATE_TEST_WORKERS:-3}" --dist loadgroup "$@"
