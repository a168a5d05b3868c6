"""One frozen settings object per service, read from the environment once at start-up.

Defaults target the embedded local stack; production sets the variables (see the README's reference).
A service's own ``config.py`` subclasses :class:`KitSettings` and adds its fields with ``env(...)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidInput


def env(name: str, default: Any, *, doc: str) -> Any:
    """Declare a settings field read from environment variable ``name`` (its type is the annotation)."""
    return field(default=default, metadata={"env": name, "doc": doc})


def _parse(raw: str, kind: Any, name: str) -> Any:
    # Annotations are strings under `from __future__ import annotations`; compare by name.
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind in {"str", "str | None"}:
            return raw if raw != "" or kind == "str" else None
    except ValueError as exc:
        raise InvalidInput(f"environment variable {name}: {exc}") from exc
    raise TypeError(f"settings field {name} has unsupported type {kind}")


@dataclass(frozen=True)
class KitSettings:
    """Settings every service shares: where Kafka and Postgres are, ports, auth, batching."""

    service_name: str = env("SERVICE_NAME", "recovery", doc="Name used for the consumer group, schema and logs.")
    build_version: str = env(
        "BUILD_VERSION", "", doc="Release running, for recovery_build_info; empty: pyproject's version, if present."
    )
    build_revision: str = env("BUILD_REVISION", "", doc="Source revision running, for recovery_build_info.")
    kafka_bootstrap_servers: str = env(
        "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", doc="Comma-separated Kafka bootstrap servers."
    )
    kafka_security_protocol: str = env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", doc="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: str = env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", doc="SASL mechanism when SASL is on.")
    kafka_sasl_username: str = env("KAFKA_SASL_USERNAME", "", doc="SASL user name.")
    kafka_sasl_password: str = env("KAFKA_SASL_PASSWORD", "", doc="SASL password (from a secret).")
    kafka_ssl_cafile: str = env("KAFKA_SSL_CAFILE", "", doc="CA bundle for TLS to the brokers.")
    kafka_enable_idempotence: bool = env(
        "KAFKA_ENABLE_IDEMPOTENCE",
        False,
        doc="Idempotent producer; turn on for Apache Kafka (Tansu lacks it).",
    )
    dedupe_retention_days: int = env(
        "DEDUPE_RETENTION_DAYS",
        30,
        doc="Days inbox and request-log rows are kept (must exceed every topic's retention; checked at start).",
    )
    prune_interval_seconds: float = env(
        "PRUNE_INTERVAL_SECONDS", 3600.0, doc="How often rows older than the dedupe retention are pruned."
    )
    topic_partitions: int = env("TOPIC_PARTITIONS", 6, doc="Partition count of every topic (one count for all).")
    topic_replication: int = env("TOPIC_REPLICATION", 1, doc="Replication factor when creating topics.")
    database_url: str = env(
        "DATABASE_URL", "", doc="PostgreSQL URL; empty means the embedded server started by `make run`."
    )
    db_schema: str = env("DB_SCHEMA", "", doc="Schema owned by this service; defaults to the service name.")
    db_pool_min: int = env("DB_POOL_MIN", 1, doc="Minimum pool connections.")
    db_pool_max: int = env("DB_POOL_MAX", 10, doc="Maximum pool connections.")
    grpc_host: str = env("GRPC_HOST", "127.0.0.1", doc="Address the gRPC server binds.")
    grpc_port: int = env("GRPC_PORT", 0, doc="gRPC port (0 picks a free one).")
    grpc_reflection: bool = env(
        "GRPC_REFLECTION", False, doc="Serve gRPC reflection (off by default; the local runner, make run, turns it on)."
    )
    grpc_tls_cert_file: str = env("GRPC_TLS_CERT_FILE", "", doc="Server certificate; TLS is on when set.")
    grpc_tls_key_file: str = env("GRPC_TLS_KEY_FILE", "", doc="Server private key.")
    grpc_tls_client_ca_file: str = env("GRPC_TLS_CLIENT_CA_FILE", "", doc="CA for client certificates (mTLS).")
    grpc_max_message_bytes: int = env("GRPC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, doc="Largest gRPC message.")
    grpc_deadline_cap_seconds: float = env("GRPC_DEADLINE_CAP_SECONDS", 30.0, doc="Longest a unary call may run.")
    jwt_algorithm: str = env("JWT_ALGORITHM", "HS256", doc="HS256 (local), RS256 or ES256 (production).")
    jwt_secret: str = env(
        "JWT_SECRET", "", doc="HS256 shared secret, required with HS256 (none by default; make run makes one)."
    )
    jwt_public_key_file: str = env("JWT_PUBLIC_KEY_FILE", "", doc="RS256/ES256 public key (PEM).")
    jwt_jwks_url: str = env(
        "JWT_JWKS_URL", "", doc="RS256/ES256: the identity provider's JWKS (rotating keys, picked by kid)."
    )
    jwt_issuer: str = env("JWT_ISSUER", "", doc="When set, a token's iss must equal it.")
    jwt_audience: str = env("JWT_AUDIENCE", "", doc="When set, a token's aud must contain it.")
    metrics_host: str = env("METRICS_HOST", "127.0.0.1", doc="Address the Prometheus endpoint binds.")
    metrics_port: int = env("METRICS_PORT", 0, doc="Prometheus port (0 picks a free one).")
    batch_size: int = env(
        "CONSUMER_BATCH_SIZE",
        500,
        doc="Most records one consumer batch takes (a batch is what is waiting, up to this).",
    )
    consumer_fetch_wait_seconds: float = env(
        "CONSUMER_FETCH_WAIT_SECONDS",
        0.05,
        doc="Longest a consumer's fetch waits on the broker for records (Tansu holds it that long; Kafka: 0.5).",
    )
    consumer_session_timeout_seconds: float = env(
        "CONSUMER_SESSION_TIMEOUT_SECONDS", 10.0, doc="Consumer group session timeout (failover time)."
    )
    retry_max_seconds: float = env("RETRY_MAX_SECONDS", 10.0, doc="Cap of the transient-error backoff.")
    outbox_poll_seconds: float = env(
        "OUTBOX_POLL_SECONDS", 0.5, doc="Relay poll interval when idle (a safety net: each commit wakes it at once)."
    )
    outbox_batch_size: int = env("OUTBOX_BATCH_SIZE", 500, doc="Most rows the relay publishes per round.")
    log_level: str = env("LOG_LEVEL", "INFO", doc="Logging level.")
    data_dir: str = env("DATA_DIR", ".data", doc="Local state (faust tables' scratch files, embedded servers).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        """Return settings read from ``environ`` (default ``os.environ``); raises InvalidInput on a bad value."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            if name and name in environ:
                values[f.name] = _parse(environ[name], f.type, name)
        values.update(overrides)
        return cls(**values)

    @property
    def schema(self) -> str:
        """Postgres schema this service owns."""
        return self.db_schema or self.service_name.replace("-", "_")

    @classmethod
    def reference(cls) -> list[tuple[str, Any, str]]:
        """Every variable as (name, default, meaning), for the README's configuration table."""
        return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in dataclasses.fields(cls)]
