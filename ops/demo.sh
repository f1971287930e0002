#!/usr/bin/env bash
# The main job: install, then run the demo borough (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
./ops/install.sh
exec "${PYTHON:-python3}" -m gateway.cli demo "$@"
