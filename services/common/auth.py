"""Who is calling and what they may call: JWT bearer tokens and the per-method authorisation table.

Transport-free on purpose: the gRPC kit (``grpc_server.py``) reads the ``authorization`` metadata and
calls in here; everything raises the kit's own ``Unauthenticated`` / ``Forbidden`` so the edge maps them
to status codes. Resource-level checks (own case, team case) belong to handlers, not to this table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from services.common.errors import Forbidden, Unauthenticated

# Symmetric for the local runner, asymmetric for an identity provider; "none" and everything else are refused at
# configuration time.
SUPPORTED_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})
ASYMMETRIC = frozenset({"RS256", "ES256"})
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048
REQUIRED_CLAIMS = ("sub", "role", "exp")

# RFC 6750 2.1 b64token; the scheme is case-insensitive (RFC 7235 2.1), exactly one space before the token.
_BEARER = re.compile(r"(?i:bearer) ([A-Za-z0-9\-._~+/]+=*)")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: employee id, role and team as the token states them."""

    employee_id: str
    role: str
    team: str


@dataclass(frozen=True)
class JwtConfig:
    """How tokens are verified: one pinned algorithm and its key, optional issuer/audience checks."""

    algorithm: str
    key: str  # shared secret for HS256, PEM public key for RS256/ES256; "" with a JWKS URL
    issuer: str | None = None
    audience: str | None = None
    leeway_seconds: int = 30
    jwks_url: str = ""  # the identity provider's key set: the token's kid picks the key
    # Least seconds between two fetches forced by an unknown kid (a flood of made-up kids must not flood the
    # provider); providers publish a new key before they sign with it.
    jwks_refetch_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            allowed = ", ".join(sorted(SUPPORTED_ALGORITHMS))
            raise ValueError(f"JWT algorithm must be one of {allowed}, not {self.algorithm!r}")
        if self.jwks_url and self.algorithm not in ASYMMETRIC:
            raise ValueError(f"a JWKS holds public keys: JWT algorithm must be RS256 or ES256, not {self.algorithm}")
        if not self.key and not self.jwks_url:
            raise ValueError("JWT key must not be empty")
        if self.algorithm == "HS256" and len(self.key.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"HS256 secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        if self.leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")


class TokenVerifier:
    """Verifies bearer JWTs against one ``JwtConfig``."""

    def __init__(self, config: JwtConfig) -> None:
        self._config = config
        self._key = None if config.jwks_url else _verification_key(config)
        # PyJWT's client caches the set for five minutes and refetches it for an unknown kid (a rotated key); a
        # fetch is a short blocking call (5 s at most), rare enough not to matter to the event loop.
        self._jwks = (
            jwt.PyJWKClient(
                config.jwks_url, cache_keys=True, lifespan=300, timeout=5, cooldown_duration=config.jwks_refetch_seconds
            )
            if config.jwks_url
            else None
        )

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(f"token signing key not found in the identity provider's key set: {exc}") from None
        except jwt.DecodeError:
            raise Unauthenticated("token is malformed") from None

    def verify(self, token: str) -> Principal:
        """Return the token's principal; raises Unauthenticated saying why the token is not acceptable."""
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                # Pinned to the configured algorithm only: defeats alg=none and HS/RS key confusion.
                algorithms=[self._config.algorithm],
                issuer=self._config.issuer,
                audience=self._config.audience,
                leeway=self._config.leeway_seconds,
                # PyJWT itself demands iss/aud when an issuer/audience is configured; a token carrying an
                # audience is only checked when we are configured with one.
                options={"require": list(REQUIRED_CLAIMS), "verify_aud": self._config.audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        return _principal(claims)


def _verification_key(config: JwtConfig) -> str | RSAPublicKey | EllipticCurvePublicKey:
    """Return the key PyJWT verifies with; raises ValueError when a public key does not fit the algorithm."""
    if config.algorithm == "HS256":
        return config.key
    try:
        key = load_pem_public_key(config.key.encode())
    except ValueError as exc:
        raise ValueError(f"{config.algorithm} key must be a PEM-encoded public key") from exc
    if config.algorithm == "ES256":
        if not isinstance(key, EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ValueError("ES256 key must be a P-256 elliptic-curve public key")
        return key
    if not isinstance(key, RSAPublicKey):
        raise ValueError("RS256 key must be an RSA public key")
    if key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(f"RS256 key must be at least {MIN_RSA_KEY_BITS} bits")
    return key


# Most specific first: several of these subclass each other (InvalidSignatureError is a DecodeError).
_REASONS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.exceptions.InvalidSubjectError, "token claim 'sub' must be a string"),
    (jwt.DecodeError, "token is malformed"),
)


def _reason(exc: jwt.InvalidTokenError) -> str:
    """Return a client-safe reason for a rejected token."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token is missing the {exc.claim!r} claim"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "token is invalid"


def _principal(claims: Mapping[str, Any]) -> Principal:
    """Return the principal named by verified claims; raises Unauthenticated when a claim has a bad value."""
    sub, role, team = claims["sub"], claims["role"], claims.get("team", "")
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("token claim 'sub' must be a non-empty string")
    if not isinstance(role, str) or not role:
        raise Unauthenticated("token claim 'role' must be a non-empty string")
    if not isinstance(team, str):
        raise Unauthenticated("token claim 'team' must be a string")
    return Principal(employee_id=sub, role=role, team=team)


def bearer_token(metadata_value: str | None) -> str:
    """Return the token from an ``authorization: Bearer <token>`` value; raises Unauthenticated otherwise."""
    if not metadata_value:
        raise Unauthenticated("missing bearer token")
    match = _BEARER.fullmatch(metadata_value)
    if match is None:
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return match.group(1)


def issue_token(
    *,
    secret_or_private_key: str,
    algorithm: str,
    sub: str,
    role: str,
    team: str = "",
    ttl_seconds: int = 3600,
    now: datetime | None = None,
    **extra: Any,
) -> str:
    """Return a signed JWT for tests and the local demo; ``extra`` claims are added and may override."""
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "role": role,
        "team": team,
        "iat": issued,
        "exp": issued + timedelta(seconds=ttl_seconds),
        **extra,
    }
    return jwt.encode(claims, secret_or_private_key, algorithm=algorithm)


@dataclass(frozen=True)
class Rule:
    """Who may call one method: ``public`` needs no token; ``roles=None`` admits any authenticated role."""

    roles: frozenset[str] | None
    public: bool = False


PUBLIC = Rule(roles=None, public=True)
ANY_EMPLOYEE = Rule(roles=None)


def allow(*roles: str) -> Rule:
    """Return a rule admitting exactly these roles; raises ValueError when none are given."""
    if not roles:
        # An empty role set would silently deny everyone; say so at wiring time instead.
        raise ValueError("allow() needs at least one role; omit the method to deny it")
    return Rule(roles=frozenset(roles))


def is_public(rules: Mapping[str, Rule], method: str) -> bool:
    """Return True when ``method`` may be called without a token."""
    rule = rules.get(method)
    return rule is not None and rule.public


def authorize(rules: Mapping[str, Rule], method: str, principal: Principal | None) -> None:
    """Return None when ``principal`` may call ``method``; raises Forbidden (or Unauthenticated) otherwise."""
    rule = rules.get(method)
    if rule is None:
        # Default deny: a method nobody wrote a rule for is closed to everyone, admins included.
        raise Forbidden(f"no access rule for {method}")
    if rule.public:
        return
    if principal is None:
        raise Unauthenticated("missing bearer token")
    if rule.roles is not None and principal.role not in rule.roles:
        raise Forbidden(f"role {principal.role!r} may not call {method}")
