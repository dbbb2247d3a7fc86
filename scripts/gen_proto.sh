#!/usr/bin/env bash
# Regenerate the gRPC code from src/stratafl/proto/stratafl.proto (needs the dev extras).
set -euo pipefail
cd "$(dirname "$0")/../src"
../.venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
  stratafl/proto/stratafl.proto
