"""Generate the Python code for every .proto under proto/ into gen/.

Writes messages (``*_pb2.py``), type stubs (``*_pb2.pyi``) and gRPC stubs (``*_pb2_grpc.py``) with the
protoc bundled in grpcio-tools, so ``recovery.events.v1.events_pb2`` imports once gen/ is on sys.path
(the venv's .pth file puts it there). gen/ is wiped first so removed protos leave nothing behind.

    python scripts/gen_proto.py
"""

from __future__ import annotations

import importlib.resources
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"


def main() -> int:
    protos = sorted(PROTO_DIR.rglob("*.proto"))
    if not protos:
        print(f"error: no .proto files under {PROTO_DIR}", file=sys.stderr)
        return 1
    shutil.rmtree(GEN_DIR, ignore_errors=True)
    GEN_DIR.mkdir()
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = [
        "grpc_tools.protoc",  # argv[0], ignored
        f"--proto_path={PROTO_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={GEN_DIR}",
        f"--pyi_out={GEN_DIR}",
        f"--grpc_python_out={GEN_DIR}",
        *(str(p.relative_to(PROTO_DIR)) for p in protos),
    ]
    # protoc prints its own errors (file:line: message) to stderr.
    if (rc := protoc.main(args)) != 0:
        print(f"error: protoc failed (exit {rc}); gen/ is incomplete", file=sys.stderr)
        return rc
    generated = [p for p in GEN_DIR.rglob("*") if p.is_file()]
    print(f"generated {len(generated)} files from {len(protos)} protos into {GEN_DIR.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
