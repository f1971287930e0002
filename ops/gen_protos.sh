#!/usr/bin/env bash
# Regenerates the feedgate.v1 Python modules beside their .proto files (commit the output;
# tests/test_protos.py fails when they are stale).
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos --pyi_out=protos protos/feedgate/v1/*.proto
