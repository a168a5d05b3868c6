"""The image's health check (python -m services.common.healthcheck): plain gRPC health, TLS and mutual TLS."""

from __future__ import annotations

import datetime
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.embedded import free_port
from services.common.healthcheck import main

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def serve(credentials: grpc.ServerCredentials | None = None):
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = free_port()
    if credentials is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    return server, servicer, port


@pytest.fixture
def plain():
    server, servicer, port = serve()
    yield servicer, port
    server.stop(None)


def test_serving_is_healthy_and_everything_else_is_not(plain, capsys):
    servicer, port = plain
    servicer.set("", SERVING)
    assert main(["--port", str(port)], environ={}) == 0
    servicer.set("", NOT_SERVING)
    assert main(["--port", str(port)], environ={}) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    assert main(["--port", str(port), "--service", "no.such.Service"], environ={}) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_the_port_comes_from_the_services_own_setting(plain):
    servicer, port = plain
    servicer.set("", SERVING)
    assert main([], environ={"GRPC_PORT": str(port)}) == 0


def test_nothing_listening_is_unhealthy_within_the_timeout(capsys):
    assert main(["--port", str(free_port()), "--timeout", "0.5"], environ={}) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(subject: str, issuer_name: x509.Name, signing_key, public_key, *, ca: bool, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path) -> dict[str, Path]:
    """A CA and a server certificate for `intake` (as cert-manager would write tls.crt, tls.key, ca.crt)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recovery-ca")])
    ca = _certificate("recovery-ca", ca_name, ca_key, ca_key.public_key(), ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("intake", ca_name, ca_key, key.public_key(), ca=False, names=["intake", "intake.svc"])
    files = {"ca": tmp_path / "ca.crt", "cert": tmp_path / "tls.crt", "key": tmp_path / "tls.key"}
    files["ca"].write_bytes(_pem(ca))
    files["cert"].write_bytes(_pem(cert))
    files["key"].write_bytes(_key_pem(key))
    return files


def test_tls_checks_the_server_certificate_against_the_ca_and_the_service_name(pki):
    credentials = grpc.ssl_server_credentials([(pki["key"].read_bytes(), pki["cert"].read_bytes())])
    server, servicer, port = serve(credentials)
    try:
        servicer.set("", SERVING)
        env = {"GRPC_TLS_CERT_FILE": str(pki["cert"]), "GRPC_TLS_KEY_FILE": str(pki["key"])}
        args = ["--port", str(port), "--tls-ca", str(pki["ca"]), "--timeout", "2"]
        assert main([*args, "--tls-server-name", "intake"], environ=env) == 0
        assert main([*args, "--tls-server-name", "escalation"], environ=env) == 1, "another service's name"
        assert main(["--port", str(port), "--timeout", "1"], environ={}) == 1, "plaintext to a TLS port"
    finally:
        server.stop(None)


def test_mutual_tls_presents_the_pods_own_certificate(pki):
    credentials = grpc.ssl_server_credentials(
        [(pki["key"].read_bytes(), pki["cert"].read_bytes())],
        root_certificates=pki["ca"].read_bytes(),
        require_client_auth=True,
    )
    server, servicer, port = serve(credentials)
    try:
        servicer.set("", SERVING)
        env = {"GRPC_TLS_CERT_FILE": str(pki["cert"]), "GRPC_TLS_KEY_FILE": str(pki["key"])}
        args = ["--port", str(port), "--tls-ca", str(pki["ca"]), "--tls-server-name", "intake", "--timeout", "2"]
        assert main(args, environ=env) == 1, "without GRPC_TLS_CLIENT_CA_FILE no client certificate is sent"
        assert main(args, environ=env | {"GRPC_TLS_CLIENT_CA_FILE": str(pki["ca"])}) == 0
    finally:
        server.stop(None)
