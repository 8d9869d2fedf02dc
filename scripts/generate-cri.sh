#!/usr/bin/env bash
# Regenerates the Python modules of the CRI v1 subset the project speaks, from
# src/nodeless/instances/providers/cri/runtime.proto. The output is committed:
# installing Nodeless needs no protoc. Needs grpcio-tools (the `test` extra).
#
# Only messages are generated (runtime_pb2.py and its typed runtime_pb2.pyi);
# the gRPC calls are declared, typed, in clients.py.
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
proto=nodeless/instances/providers/cri/runtime.proto

"$python" -m grpc_tools.protoc -I src --python_out=src --pyi_out=src "src/$proto"
echo "generated src/${proto%.proto}_pb2.py and src/${proto%.proto}_pb2.pyi"
