"""A real GrpcServer on 127.0.0.1:0 called through real grpc.aio channels (no broker or database needed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.wrappers_pb2 import StringValue
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from services.common.auth import ANY_EMPLOYEE, JwtConfig, TokenVerifier, allow, issue_token
from services.common.errors import FailedPrecondition, FieldViolation, InvalidInput, PreconditionViolation
from services.common.grpc_server import LIVENESS, GrpcServer, GrpcSettings, principal, watch_health
from services.common.metrics import KitMetrics

SECRET = "integration-test-secret-32-bytes-or-more"
SERVICE = "test.v1.Echo"
MAX_MESSAGE_BYTES = 1024
DEADLINE_CAP = 0.2
TEST_SETTINGS = GrpcSettings(max_message_bytes=MAX_MESSAGE_BYTES, deadline_cap_seconds=DEADLINE_CAP, grace_seconds=1.0)
RULES = {
    f"/{SERVICE}/Say": allow("agent", "supervisor"),
    f"/{SERVICE}/Approve": allow("supervisor"),
    f"/{SERVICE}/Invalid": ANY_EMPLOYEE,
    f"/{SERVICE}/Precondition": ANY_EMPLOYEE,
    f"/{SERVICE}/Boom": ANY_EMPLOYEE,
    f"/{SERVICE}/Slow": ANY_EMPLOYEE,
    f"/{SERVICE}/SelfAbort": ANY_EMPLOYEE,
    f"/{SERVICE}/Count": ANY_EMPLOYEE,
    f"/{SERVICE}/Join": ANY_EMPLOYEE,
    f"/{SERVICE}/Chat": ANY_EMPLOYEE,
    # "/test.v1.Echo/Unruled" has a handler and deliberately no rule.
}


# ------------------------------------------------------------------------------------- the test service


async def say(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    return StringValue(value=f"{principal().employee_id}:{request.value}")


async def invalid(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    raise InvalidInput.of(FieldViolation("costs[0].amount.currency", "must be an ISO-4217 code"))


async def precondition(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    raise FailedPrecondition("case is closed", (PreconditionViolation("STATE", "case/42", "case is closed"),))


async def boom(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    raise RuntimeError("connection to postgres://admin:hunter2@db failed")


async def slow(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    await asyncio.Event().wait()  # never set: only the deadline cap ends this call
    raise AssertionError("unreachable")


async def self_abort(request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such case")
    raise AssertionError("unreachable")


async def count(request: StringValue, context: grpc.aio.ServicerContext) -> AsyncIterator[StringValue]:
    for n in range(int(request.value)):
        yield StringValue(value=str(n))


async def join(requests: AsyncIterator[StringValue], context: grpc.aio.ServicerContext) -> StringValue:
    return StringValue(value="".join([r.value async for r in requests]))


async def chat(requests: AsyncIterator[StringValue], context: grpc.aio.ServicerContext) -> AsyncIterator[StringValue]:
    async for r in requests:
        yield StringValue(value=f"{principal().role}:{r.value}")


SERVER_CODEC: dict[str, Any] = {
    "request_deserializer": StringValue.FromString,
    "response_serializer": StringValue.SerializeToString,
}
CLIENT_CODEC: dict[str, Any] = {
    "request_serializer": StringValue.SerializeToString,
    "response_deserializer": StringValue.FromString,
}


def _unary(behaviour: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour, **SERVER_CODEC)


ECHO = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Say": _unary(say),
        "Approve": _unary(say),
        "Unruled": _unary(say),
        "Invalid": _unary(invalid),
        "Precondition": _unary(precondition),
        "Boom": _unary(boom),
        "Slow": _unary(slow),
        "SelfAbort": _unary(self_abort),
        "Count": grpc.unary_stream_rpc_method_handler(count, **SERVER_CODEC),
        "Join": grpc.stream_unary_rpc_method_handler(join, **SERVER_CODEC),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, **SERVER_CODEC),
    },
)


def register_echo(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((ECHO,))


# ------------------------------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Running:
    server: GrpcServer
    registry: CollectorRegistry
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def handled(self, method: str, code: str) -> float:
        value = self.registry.get_sample_value(
            "recovery_grpc_server_handled_total", {"method": f"/{SERVICE}/{method}", "code": code}
        )
        return value or 0.0


@asynccontextmanager
async def running(settings: GrpcSettings = TEST_SETTINGS) -> AsyncIterator[Running]:
    registry = CollectorRegistry()
    server = GrpcServer(
        settings=settings,
        verifier=TokenVerifier(JwtConfig(algorithm="HS256", key=SECRET)),
        rules=RULES,
        metrics=KitMetrics(registry),
        register=[register_echo],
        service_names=[SERVICE],
    )
    port = await server.start()
    try:
        yield Running(server=server, registry=registry, port=port)
    finally:
        await server.stop()


@pytest.fixture
async def echo() -> AsyncIterator[Running]:
    async with running() as harness:
        yield harness


@pytest.fixture
async def channel(echo: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(echo.target) as chan:
        yield chan


def auth(role: str = "agent", *, sub: str = "e-1") -> tuple[tuple[str, str], ...]:
    token = issue_token(secret_or_private_key=SECRET, algorithm="HS256", sub=sub, role=role, team="north")
    return (("authorization", f"Bearer {token}"),)


def unary(chan: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return chan.unary_unary(f"/{SERVICE}/{method}", **CLIENT_CODEC)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# --------------------------------------------------------------------------------------------- tests


async def test_health_check_is_serving_without_a_token(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_authenticated_call_sees_its_principal(channel: grpc.aio.Channel) -> None:
    reply = await unary(channel, "Say")(StringValue(value="hi"), metadata=auth(sub="e-7"), timeout=5)
    assert reply.value == "e-7:hi"


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-token"),
        pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), id="wrong-scheme"),
        pytest.param((("authorization", "Bearer not.a.jwt"),), id="garbage-token"),
    ],
)
async def test_missing_or_bad_token_is_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    error = await rpc_error(unary(channel, "Say")(StringValue(value="hi"), metadata=metadata, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_expired_token_says_so(channel: grpc.aio.Channel) -> None:
    token = issue_token(secret_or_private_key=SECRET, algorithm="HS256", sub="e-1", role="agent", ttl_seconds=-600)
    metadata = (("authorization", f"Bearer {token}"),)
    error = await rpc_error(unary(channel, "Say")(StringValue(value="hi"), metadata=metadata, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()


async def test_role_not_allowed_is_permission_denied(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Approve")(StringValue(), metadata=auth("agent"), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_method_without_rule_is_denied_even_to_admins(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Unruled")(StringValue(), metadata=auth("admin"), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Nope")(StringValue(), metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_invalid_input_carries_bad_request_field_violations(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Invalid")(StringValue(), metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)  # after the ErrorInfo every error carries
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("costs[0].amount.currency", "must be an ISO-4217 code")
    ]


async def test_failed_precondition_carries_precondition_failure(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Precondition")(StringValue(), metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error)
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    assert status.details[1].Unpack(failure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [("STATE", "case/42", "case is closed")]


async def test_unexpected_exception_is_a_generic_internal(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="services.common.grpc_server"):
        error = await rpc_error(unary(channel, "Boom")(StringValue(), metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith("internal error (ref ")
    assert "hunter2" not in error.details() and "postgres" not in error.details()
    logged = [r for r in caplog.records if "/test.v1.Echo/Boom" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


async def test_servicer_abort_keeps_its_own_code(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "SelfAbort")(StringValue(), metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such case"


async def test_slow_handler_is_cut_off_by_the_server_cap(channel: grpc.aio.Channel) -> None:
    # The client allows far longer than the cap, so DEADLINE_EXCEEDED can only come from the server.
    error = await rpc_error(unary(channel, "Slow")(StringValue(), metadata=auth(), timeout=30))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.details() == "deadline exceeded"


async def test_client_deadline_shorter_than_cap_still_ends_the_call(channel: grpc.aio.Channel) -> None:
    error = await rpc_error(unary(channel, "Slow")(StringValue(), metadata=auth(), timeout=DEADLINE_CAP / 4))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_request_over_the_size_limit_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    big = StringValue(value="x" * (MAX_MESSAGE_BYTES + 1))
    error = await rpc_error(unary(channel, "Say")(big, metadata=auth(), timeout=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_all_four_cardinalities_pass_through(channel: grpc.aio.Channel) -> None:
    counted = channel.unary_stream(f"/{SERVICE}/Count", **CLIENT_CODEC)(
        StringValue(value="3"), metadata=auth(), timeout=5
    )
    assert [r.value async for r in counted] == ["0", "1", "2"]

    async def letters() -> AsyncIterator[StringValue]:
        for letter in "abc":
            yield StringValue(value=letter)

    join_call = channel.stream_unary(f"/{SERVICE}/Join", **CLIENT_CODEC)
    joined = await join_call(letters(), metadata=auth(), timeout=5)
    assert joined.value == "abc"
    chat_call = channel.stream_stream(f"/{SERVICE}/Chat", **CLIENT_CODEC)
    chatted = chat_call(letters(), metadata=auth("supervisor"), timeout=5)
    assert [r.value async for r in chatted] == ["supervisor:a", "supervisor:b", "supervisor:c"]


async def test_streaming_methods_are_guarded_too(channel: grpc.aio.Channel) -> None:
    async def one() -> AsyncIterator[StringValue]:
        yield StringValue(value="a")

    for call in (
        channel.unary_stream(f"/{SERVICE}/Count", **CLIENT_CODEC)(StringValue(value="3"), timeout=5),
        channel.stream_stream(f"/{SERVICE}/Chat", **CLIENT_CODEC)(one(), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [r async for r in call]
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(channel.stream_unary(f"/{SERVICE}/Join", **CLIENT_CODEC)(one(), timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_set_serving_false_reports_not_serving(echo: Running, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await echo.server.set_serving(False)
    for service in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    # Not ready is not dead: liveness says the process answers, so a database outage restarts nothing.
    alive = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
    assert alive.status == health_pb2.HealthCheckResponse.SERVING
    await echo.server.set_serving(True)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_watch_health_follows_the_probe(echo: Running, channel: grpc.aio.Channel) -> None:
    healthy = asyncio.Event()
    healthy.set()

    async def probe() -> bool:
        return healthy.is_set()

    watcher = asyncio.create_task(watch_health(echo.server, probe, interval=0.01))
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
    try:
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        healthy.clear()  # the database "goes away"
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        healthy.set()
        third = await watch.read()
        assert third.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        watch.cancel()
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


async def test_stop_reports_not_serving_then_drains() -> None:
    async with running() as harness, grpc.aio.insecure_channel(harness.target) as chan:
        watch = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(), timeout=5)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        live = health_pb2_grpc.HealthStub(chan).Watch(health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5)
        assert (await live.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(harness.server.stop())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await live.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING  # stopping: not alive
        watch.cancel()
        live.cancel()
        await stopping


async def test_metrics_count_every_call_by_method_and_code() -> None:
    async with running() as harness:
        async with grpc.aio.insecure_channel(harness.target) as chan:
            await unary(chan, "Say")(StringValue(value="a"), metadata=auth(), timeout=5)
            await unary(chan, "Say")(StringValue(value="b"), metadata=auth(), timeout=5)
            await rpc_error(unary(chan, "Say")(StringValue(), timeout=5))
            await rpc_error(unary(chan, "Invalid")(StringValue(), metadata=auth(), timeout=5))
            await rpc_error(unary(chan, "Unruled")(StringValue(), metadata=auth(), timeout=5))
            await rpc_error(unary(chan, "SelfAbort")(StringValue(), metadata=auth(), timeout=5))
        await harness.server.stop()  # drained: every server-side observation has been recorded
        assert harness.handled("Say", "OK") == 2
        assert harness.handled("Say", "UNAUTHENTICATED") == 1
        assert harness.handled("Invalid", "INVALID_ARGUMENT") == 1
        assert harness.handled("Unruled", "PERMISSION_DENIED") == 1
        assert harness.handled("SelfAbort", "NOT_FOUND") == 1
        histogram = harness.registry.get_sample_value(
            "recovery_grpc_server_handling_seconds_count", {"method": f"/{SERVICE}/Say"}
        )
        assert histogram == 3


async def test_reflection_is_off_unless_configured(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    call = stub.ServerReflectionInfo(requests, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [r async for r in call]
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_when_enabled_is_public() -> None:
    async with running(replace(TEST_SETTINGS, reflection=True)) as harness:
        async with grpc.aio.insecure_channel(harness.target) as chan:
            stub = reflection_pb2_grpc.ServerReflectionStub(chan)
            requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            replies = [r async for r in stub.ServerReflectionInfo(requests, timeout=5)]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


# ----------------------------------------------------------------------------------------------- TLS


def _certificate(
    tmp_path: Path, name: str, *, issuer: tuple[x509.Certificate, Any] | None = None
) -> tuple[Path, Path, x509.Certificate, Any]:
    """Write a certificate for 127.0.0.1/localhost (self-signed unless ``issuer`` is given) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert, key


async def _say_over(target: str, credentials: grpc.ChannelCredentials) -> StringValue:
    async with grpc.aio.secure_channel(target, credentials) as chan:
        return await unary(chan, "Say")(StringValue(value="tls"), metadata=auth(), timeout=5)


async def test_tls_trusting_client_succeeds_and_untrusting_client_fails(tmp_path: Path) -> None:
    cert, key, _, _ = _certificate(tmp_path, "server")
    async with running(replace(TEST_SETTINGS, tls_cert_file=str(cert), tls_key_file=str(key))) as harness:
        trusted = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        reply = await _say_over(harness.target, trusted)
        assert reply.value == "e-1:tls"

        other, _, _, _ = _certificate(tmp_path, "stranger")
        untrusting = grpc.ssl_channel_credentials(root_certificates=other.read_bytes())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _say_over(harness.target, untrusting)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

        async with grpc.aio.insecure_channel(harness.target) as plain:
            error = await rpc_error(unary(plain, "Say")(StringValue(), metadata=auth(), timeout=5))
        assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    server_cert, server_key, _, _ = _certificate(tmp_path, "server")
    ca_path, _, ca_cert, ca_key = _certificate(tmp_path, "client-ca")
    client_cert, client_key, _, _ = _certificate(tmp_path, "client", issuer=(ca_cert, ca_key))
    settings = replace(
        TEST_SETTINGS,
        tls_cert_file=str(server_cert),
        tls_key_file=str(server_key),
        tls_client_ca_file=str(ca_path),
    )
    async with running(settings) as harness:
        roots = server_cert.read_bytes()
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=client_key.read_bytes(),
            certificate_chain=client_cert.read_bytes(),
        )
        assert (await _say_over(harness.target, with_cert)).value == "e-1:tls"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _say_over(harness.target, grpc.ssl_channel_credentials(root_certificates=roots))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_settings_refuse_half_configured_tls() -> None:
    with pytest.raises(ValueError):
        GrpcSettings(tls_cert_file="server.crt")
    with pytest.raises(ValueError):
        GrpcSettings(tls_client_ca_file="ca.crt")
    assert not GrpcSettings(tls_cert_file="", tls_key_file="", tls_client_ca_file="").tls
