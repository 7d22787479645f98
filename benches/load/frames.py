"""Writes the gRPC request bodies that scripts/bench.sh sends with h2load.

Each file is one gRPC message as it travels in a request body: a 1-byte
compressed flag (0), a 4-byte big-endian length, then the protobuf encoding of
the request. The messages are built from proto/storagegrants/v1/grants.proto,
compiled at run time with grpcio-tools (no generated code is kept), and
grpc.health.v1's HealthCheckRequest from grpcio-health-checking.

Usage: python frames.py REPO_ROOT OUT_DIR BUCKET
Writes OUT_DIR/{health,grant_read,grant_write_put,grant_write_put_type_length,
assume_scoped}.bin and prints
each file's name and size.
"""

import base64
import hashlib
import importlib
import os
import struct
import sys
import tempfile

from grpc_tools import protoc
import grpc_tools
from grpc_health.v1 import health_pb2


def frame(message) -> bytes:
    payload = message.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def compile_proto(repo: str, out: str):
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{os.path.join(repo, 'proto')}",
            f"-I{include}",
            f"--python_out={out}",
            "storagegrants/v1/grants.proto",
        ]
    )
    if rc != 0:
        sys.exit(f"frames.py: protoc failed on grants.proto (exit {rc})")
    sys.path.insert(0, out)
    return importlib.import_module("storagegrants.v1.grants_pb2")


def main() -> None:
    repo, out_dir, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as gen:
        pb = compile_proto(repo, gen)
        body = b"x" * 1024
        frames = {
            "health": health_pb2.HealthCheckRequest(service=""),
            "grant_read": pb.GrantReadRequest(bucket=bucket, key="public/hello.txt"),
            # Every pin a PUT can carry: type, exact length, checksum, metadata,
            # create-only.
            "grant_write_put": pb.GrantWriteRequest(
                bucket=bucket,
                key="public/uploads/bench.bin",
                content_type="application/octet-stream",
                content_length=len(body),
                checksum_sha256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                metadata={"owner": "bench", "purpose": "load"},
                create_only=True,
            ),
            # The pins a browser upload usually carries: its type and exact length.
            "grant_write_put_type_length": pb.GrantWriteRequest(
                bucket=bucket,
                key="public/uploads/bench.bin",
                content_type="application/octet-stream",
                content_length=len(body),
            ),
            "assume_scoped": pb.AssumeScopedRequest(
                bucket=bucket, prefix="public/", access=pb.ACCESS_READ
            ),
        }
        for name, message in frames.items():
            path = os.path.join(out_dir, f"{name}.bin")
            data = frame(message)
            with open(path, "wb") as f:
                f.write(data)
            print(f"{name}.bin {len(data)} bytes")


if __name__ == "__main__":
    main()
