"""Tokens from an identity provider with rotating keys: the verifier fetches its JWKS over HTTP, picks the key by
the token's kid, and picks up a rotated key without a restart."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.common.auth import JwtConfig, TokenVerifier
from services.common.errors import Unauthenticated


class Provider:
    """A JWKS endpoint whose key set a test can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"keys": [provider.jwk(kid) for kid in provider.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"

    def jwk(self, kid: str) -> dict:
        return json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key())) | {"kid": kid, "use": "sig", "alg": "RS256"}

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, kid: str, **claims) -> str:
        body = {"sub": "e-1", "role": "agent", "exp": datetime.now(UTC) + timedelta(minutes=5)} | claims
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider():
    idp = Provider()
    yield idp
    idp.server.shutdown()


def test_a_token_is_verified_with_the_key_its_kid_names_and_a_rotated_key_is_fetched(provider):
    provider.add("2026-11")
    config = JwtConfig(algorithm="RS256", key="", jwks_url=provider.url, issuer="https://idp", jwks_refetch_seconds=0)
    verifier = TokenVerifier(config)
    assert verifier.verify(provider.token("2026-11", iss="https://idp")).employee_id == "e-1"
    provider.add("2026-12")  # the provider rotates: a token signed with the new key names it
    assert verifier.verify(provider.token("2026-12", iss="https://idp", sub="e-2")).employee_id == "e-2"
    with pytest.raises(Unauthenticated, match="issuer"):
        verifier.verify(provider.token("2026-12", iss="https://elsewhere"))


def test_a_key_the_provider_does_not_publish_is_refused(provider):
    provider.add("known")
    verifier = TokenVerifier(JwtConfig(algorithm="RS256", key="", jwks_url=provider.url))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"sub": "e-1", "role": "director", "exp": datetime.now(UTC) + timedelta(minutes=5)},
        stranger,
        algorithm="RS256",
        headers={"kid": "unknown"},
    )
    with pytest.raises(Unauthenticated, match="signing key not found"):
        verifier.verify(forged)
    signed_by_stranger = jwt.encode(
        {"sub": "e-1", "role": "director", "exp": datetime.now(UTC) + timedelta(minutes=5)},
        stranger,
        algorithm="RS256",
        headers={"kid": "known"},
    )
    with pytest.raises(Unauthenticated):
        verifier.verify(signed_by_stranger)
