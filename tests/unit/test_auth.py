"""TokenVerifier, bearer parsing and the per-method authorisation table; no infrastructure."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.__main__ import local_jwt_secret
from services.common import token as token_command
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
from services.common.errors import Forbidden, InvalidInput, Unauthenticated
from services.common.runtime import jwt_config
from services.common.settings import KitSettings

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


# ------------------------------------------------------------------------ configuration from the settings


def test_no_secret_is_built_in_and_hs256_without_one_is_refused_naming_the_setting() -> None:
    assert KitSettings().jwt_secret == ""
    with pytest.raises(InvalidInput) as caught:
        jwt_config(KitSettings())
    assert [v.field for v in caught.value.violations] == ["JWT_SECRET"]
    with pytest.raises(InvalidInput) as no_key:
        jwt_config(KitSettings(jwt_algorithm="ES256"))
    assert [v.field for v in no_key.value.violations] == ["JWT_PUBLIC_KEY_FILE"]


def test_issuer_and_audience_come_from_the_settings() -> None:
    config = jwt_config(KitSettings(jwt_secret=SECRET, jwt_issuer="https://idp.example", jwt_audience="recovery"))
    assert (config.issuer, config.audience) == ("https://idp.example", "recovery")
    verifier = TokenVerifier(config)
    good = _hs256(sub="e-1", role="agent", iss="https://idp.example", aud="recovery")
    assert verifier.verify(good).employee_id == "e-1"
    for bad in (_hs256(sub="e-1", role="agent", iss="https://evil", aud="recovery"), _hs256(sub="e-1", role="agent")):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad)


def test_es256_tokens_are_verified_with_a_p256_public_key(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "public.pem").write_bytes(public)
    verifier = TokenVerifier(
        jwt_config(KitSettings(jwt_algorithm="ES256", jwt_public_key_file=str(tmp_path / "public.pem")))
    )
    token = jwt.encode({"sub": "e-9", "role": "manager", "exp": FAR_FUTURE}, key, algorithm="ES256")
    assert verifier.verify(token).role == "manager"
    with pytest.raises(ValueError, match="P-256"):
        TokenVerifier(JwtConfig(algorithm="ES256", key=rsa_public_pem()))


def rsa_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_a_jwks_needs_an_asymmetric_algorithm() -> None:
    with pytest.raises(ValueError, match="RS256 or ES256"):
        JwtConfig(algorithm="HS256", key="", jwks_url="http://127.0.0.1:1/jwks.json")


# ------------------------------------------------------------------------------- the token command


def test_the_token_command_signs_with_the_secret_the_services_verify_with(tmp_path, capsys) -> None:
    (tmp_path / "jwt-secret").write_text(SECRET)
    assert (
        token_command.main(["--sub", "e-3", "--role", "team_lead", "--team", "care"], {"DATA_DIR": str(tmp_path)}) == 0
    )
    minted = capsys.readouterr().out.strip()
    principal = TokenVerifier(JwtConfig(algorithm="HS256", key=SECRET)).verify(minted)
    assert principal == Principal(employee_id="e-3", role="team_lead", team="care")
    env = {"JWT_SECRET": OTHER_SECRET, "JWT_ISSUER": "https://idp.example", "JWT_AUDIENCE": "recovery"}
    assert token_command.main(["--sub", "e-4", "--role", "agent"], env) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), OTHER_SECRET, algorithms=["HS256"], audience="recovery")
    assert (claims["iss"], claims["sub"]) == ("https://idp.example", "e-4")
    assert token_command.main(["--sub", "e-5", "--role", "agent"], {"DATA_DIR": str(tmp_path / "none")}) == 2
    assert "no key" in capsys.readouterr().err


def test_the_local_runner_makes_its_own_secret_once_readable_by_its_owner_only(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    first = local_jwt_secret(tmp_path / "data")
    assert len(first) >= 32 and local_jwt_secret(tmp_path / "data") == first  # kept: tokens survive a restart
    assert (tmp_path / "data" / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert local_jwt_secret(tmp_path / "other") != first
    monkeypatch.setenv("JWT_SECRET", OTHER_SECRET)
    assert local_jwt_secret(tmp_path / "data") == OTHER_SECRET
