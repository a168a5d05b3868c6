"""``python -m services.common.healthcheck``: ask a running service's gRPC health service if it is SERVING.

The container image's HEALTHCHECK and the Kubernetes exec probes (when gRPC runs with TLS, which the
kubelet's native ``grpc`` probe cannot speak) run this. It reads the same settings as the service: the
port from ``GRPC_PORT``, TLS from ``GRPC_TLS_CERT_FILE`` (and, for mTLS, presents that certificate and key
as its client certificate when ``GRPC_TLS_CLIENT_CA_FILE`` is set). Exit code 0 means SERVING; anything
else (NOT_SERVING, unknown service, unreachable, timeout, bad TLS) is 1, with the reason on stderr.

    python -m services.common.healthcheck [--port N] [--service NAME] [--timeout S]
                                          [--tls-ca FILE] [--tls-server-name NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.common.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to ask (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=int(environ.get("GRPC_PORT") or 50051), help="gRPC port (default $GRPC_PORT)"
    )
    parser.add_argument("--service", default="", help="health service name ('' is the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    parser.add_argument(
        "--tls-ca",
        default="",
        help="CA bundle that signed the server certificate; TLS is used when this or $GRPC_TLS_CERT_FILE is set",
    )
    parser.add_argument(
        "--tls-server-name", default="", help="name to check the server certificate against (e.g. the Service DNS)"
    )
    return parser


def _channel(args: argparse.Namespace, environ: Mapping[str, str]) -> grpc.Channel:
    target = f"{args.host}:{args.port}"
    cert_file = environ.get("GRPC_TLS_CERT_FILE", "")
    if not (args.tls_ca or cert_file):
        return grpc.insecure_channel(target)
    # Without --tls-ca the server's own certificate is the trust root (a self-signed or pinned certificate).
    root = Path(args.tls_ca or cert_file).read_bytes()
    key = chain = None
    if environ.get("GRPC_TLS_CLIENT_CA_FILE") and cert_file:
        # mTLS: the server wants a client certificate; the pod's own one is signed by the same CA.
        key = Path(environ["GRPC_TLS_KEY_FILE"]).read_bytes()
        chain = Path(cert_file).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def check(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Return (serving, what was seen)."""
    try:
        with _channel(args, environ) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        return False, f"{exc.code().name}: {exc.details()}"
    except OSError as exc:  # an unreadable certificate file
        return False, str(exc)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Return 0 when the service reports SERVING, 1 otherwise."""
    environ = os.environ if environ is None else environ
    args = _parser(environ).parse_args(argv)
    serving, seen = check(args, environ)
    print(f"{args.host}:{args.port} {args.service or '(server)'}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
