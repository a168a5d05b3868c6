"""TokenVerifier, bearer parsing and the per-method authorisation table; no infrastructure."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.auth import (
    ANY_EMPLOYEE,
    PUBLIC,
    JwtConfig,
    Principal,
    TokenVerifier,
    allow,
    authorize,
    bearer_token,
    is_public,
    issue_token,
)
from services.common.errors import Forbidden, Unauthenticated

SECRET = "unit-test-secret-that-is-32-bytes-long!"
OTHER_SECRET = "another-secret-that-is-also-32-bytes-long"
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


def _hs256(**claims: object) -> str:
    return issue_token(secret_or_private_key=SECRET, algorithm="HS256", **claims)  # type: ignore[arg-type]


def _raw(claims: dict[str, object], *, key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tampered(token: str) -> str:
    header, _payload, signature = token.split(".")
    forged = _b64({"sub": "e-1", "role": "admin", "exp": int(FAR_FUTURE.timestamp())})
    return f"{header}.{forged}.{signature}"


def _alg_none() -> str:
    # Hand-built so the test does not depend on PyJWT being willing to sign with "none".
    header = _b64({"alg": "none", "typ": "JWT"})
    payload = _b64({"sub": "e-1", "role": "admin", "exp": int(FAR_FUTURE.timestamp())})
    return f"{header}.{payload}."


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[str, str]:
    """Return (private PEM, public PEM) generated for this module."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def hs256() -> TokenVerifier:
    return TokenVerifier(JwtConfig(algorithm="HS256", key=SECRET))


def test_valid_hs256_token_gives_principal(hs256: TokenVerifier) -> None:
    token = _hs256(sub="e-1", role="agent", team="north")
    assert hs256.verify(token) == Principal(employee_id="e-1", role="agent", team="north")


def test_team_claim_is_optional(hs256: TokenVerifier) -> None:
    token = _raw({"sub": "e-1", "role": "agent", "exp": FAR_FUTURE})
    assert hs256.verify(token).team == ""


def test_valid_rs256_token_gives_principal(rsa_pair: tuple[str, str]) -> None:
    private, public = rsa_pair
    verifier = TokenVerifier(JwtConfig(algorithm="RS256", key=public))
    token = issue_token(secret_or_private_key=private, algorithm="RS256", sub="e-2", role="supervisor")
    assert verifier.verify(token) == Principal(employee_id="e-2", role="supervisor", team="")


def test_rs256_verifier_refuses_hs256_token_signed_with_the_public_key(rsa_pair: tuple[str, str]) -> None:
    # The classic algorithm-confusion attack: HMAC "signed" with the (public) RSA key.
    _private, public = rsa_pair
    verifier = TokenVerifier(JwtConfig(algorithm="RS256", key=public))
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "e-1", "role": "admin", "exp": int(FAR_FUTURE.timestamp())})
    forged = f"{header}.{payload}.c2lnbmF0dXJl"
    with pytest.raises(Unauthenticated, match="algorithm"):
        verifier.verify(forged)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = TokenVerifier(JwtConfig(algorithm="HS256", key=SECRET, issuer="recovery", audience="intake"))
    good = _hs256(sub="e-1", role="agent", iss="recovery", aud="intake")
    assert verifier.verify(good).employee_id == "e-1"
    with pytest.raises(Unauthenticated, match="issuer"):
        verifier.verify(_hs256(sub="e-1", role="agent", iss="elsewhere", aud="intake"))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.verify(_hs256(sub="e-1", role="agent", iss="recovery", aud="billing"))
    with pytest.raises(Unauthenticated, match="'aud'"):
        verifier.verify(_hs256(sub="e-1", role="agent", iss="recovery"))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(
            _hs256(sub="e-1", role="agent", now=datetime.now(UTC) - timedelta(hours=2)),
            "expired",
            id="expired",
        ),
        pytest.param(
            issue_token(secret_or_private_key=OTHER_SECRET, algorithm="HS256", sub="e-1", role="agent"),
            "signature",
            id="wrong-secret",
        ),
        pytest.param(_alg_none(), "algorithm", id="alg-none"),
        pytest.param(_tampered(_hs256(sub="e-1", role="agent")), "signature", id="tampered-payload"),
        pytest.param(_raw({"role": "agent", "exp": FAR_FUTURE}), "'sub'", id="missing-sub"),
        pytest.param(_raw({"sub": "e-1", "exp": FAR_FUTURE}), "'role'", id="missing-role"),
        pytest.param(_raw({"sub": "e-1", "role": "agent"}), "'exp'", id="missing-exp"),
        pytest.param(_raw({"sub": "e-1", "role": "", "exp": FAR_FUTURE}), "'role'", id="empty-role"),
        pytest.param(_raw({"sub": "e-1", "role": ["x"], "exp": FAR_FUTURE}), "'role'", id="role-not-text"),
        pytest.param(_raw({"sub": 7, "role": "agent", "exp": FAR_FUTURE}), "'sub'", id="sub-not-text"),
        pytest.param("not-a-jwt", "malformed", id="malformed"),
        pytest.param("a.b.c", "malformed", id="garbage-segments"),
    ],
)
def test_bad_tokens_are_unauthenticated_with_a_reason(hs256: TokenVerifier, token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        hs256.verify(token)


def test_leeway_accepts_a_token_just_past_expiry() -> None:
    verifier = TokenVerifier(JwtConfig(algorithm="HS256", key=SECRET, leeway_seconds=60))
    token = _hs256(sub="e-1", role="agent", ttl_seconds=-10)
    assert verifier.verify(token).employee_id == "e-1"


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"algorithm": "none", "key": SECRET}, id="alg-none"),
        pytest.param({"algorithm": "HS512", "key": SECRET}, id="unsupported-alg"),
        pytest.param({"algorithm": "HS256", "key": ""}, id="empty-key"),
        pytest.param({"algorithm": "HS256", "key": "short"}, id="short-secret"),
        pytest.param({"algorithm": "HS256", "key": SECRET, "leeway_seconds": -1}, id="negative-leeway"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        JwtConfig(**config)  # type: ignore[arg-type]


def test_rs256_needs_a_public_key_pem(rsa_pair: tuple[str, str]) -> None:
    private, _public = rsa_pair
    with pytest.raises(ValueError, match="PEM"):
        TokenVerifier(JwtConfig(algorithm="RS256", key=SECRET))
    with pytest.raises(ValueError):
        TokenVerifier(JwtConfig(algorithm="RS256", key=private))


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("Bearer a-b_c+/=", "a-b_c+/="),
    ],
)
def test_bearer_token_parses_the_token(value: str, token: str) -> None:
    assert bearer_token(value) == token


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Basic dXNlcjpwYXNz", id="wrong-scheme"),
        pytest.param("Bearer", id="no-token"),
        pytest.param("Bearer ", id="blank-token"),
        pytest.param("Bearer  abc", id="two-spaces"),
        pytest.param("Bearer abc def", id="two-tokens"),
        pytest.param("abc.def.ghi", id="no-scheme"),
        pytest.param("Bearer abc\n", id="trailing-newline"),
    ],
)
def test_bearer_token_rejects_anything_else(value: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer_token(value)


# ------------------------------------------------------------------------------------------ authorize

RULES = {
    "/test.v1.Cases/Approve": allow("supervisor", "admin"),
    "/test.v1.Cases/Get": ANY_EMPLOYEE,
    "/grpc.health.v1.Health/Check": PUBLIC,
}
AGENT = Principal(employee_id="e-1", role="agent", team="north")
SUPERVISOR = Principal(employee_id="e-2", role="supervisor", team="north")
ADMIN = Principal(employee_id="e-3", role="admin", team="")


@pytest.mark.parametrize(
    ("method", "caller"),
    [
        pytest.param("/test.v1.Cases/Approve", SUPERVISOR, id="allowed-role"),
        pytest.param("/test.v1.Cases/Approve", ADMIN, id="another-allowed-role"),
        pytest.param("/test.v1.Cases/Get", AGENT, id="any-employee"),
        pytest.param("/grpc.health.v1.Health/Check", None, id="public-without-caller"),
        pytest.param("/grpc.health.v1.Health/Check", AGENT, id="public-with-caller"),
    ],
)
def test_authorize_allows(method: str, caller: Principal | None) -> None:
    authorize(RULES, method, caller)


@pytest.mark.parametrize(
    ("method", "caller", "error"),
    [
        pytest.param("/test.v1.Cases/Approve", AGENT, Forbidden, id="denied-role"),
        pytest.param("/test.v1.Cases/Delete", ADMIN, Forbidden, id="no-rule-denies-admin"),
        pytest.param("/test.v1.Cases/Delete", AGENT, Forbidden, id="no-rule-denies-everyone"),
        pytest.param("/test.v1.Cases/Get", None, Unauthenticated, id="no-caller-for-private-method"),
    ],
)
def test_authorize_denies(method: str, caller: Principal | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        authorize(RULES, method, caller)


def test_is_public_only_for_public_rules() -> None:
    assert is_public(RULES, "/grpc.health.v1.Health/Check")
    assert not is_public(RULES, "/test.v1.Cases/Get")
    assert not is_public(RULES, "/test.v1.Cases/Delete")


def test_allow_without_roles_is_a_wiring_error() -> None:
    with pytest.raises(ValueError):
        allow()
