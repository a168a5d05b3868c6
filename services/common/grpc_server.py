"""The grpc.aio server every service runs: auth, per-method rules, deadline cap, error mapping, health.

One interceptor wraps every method handler (all four cardinalities) so servicers only ever raise the
kit's errors (``services.common.errors``) and read ``principal()``; this module turns those into status
codes with ``google.rpc`` rich details, counts every call, and never leaks internals to the caller.

Servicers must be ``async``: the wrapper awaits them on the event loop. The deadline cap applies to
unary responses; streaming responses (health ``Watch``) end with the client's deadline or at ``stop()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.common import tracing
from services.common.auth import PUBLIC, Principal, Rule, TokenVerifier, authorize, bearer_token, is_public
from services.common.db import is_transient
from services.common.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    FieldViolation,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    RecoveryError,
    Unauthenticated,
)
from services.common.metrics import KitMetrics
from services.common.wire import nul_fields

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The health name liveness probes ask: SERVING while the process answers at all, whatever its dependencies do
# (readiness asks the server, ""; that drops while the database is down, and restarting would not bring it back).
LIVENESS = "liveness"
REFLECTION_SERVICE = reflection.SERVICE_NAME

# The one piece of module state: the caller of the RPC running in this task (each RPC has its own context).
current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


def principal() -> Principal:
    """Return the authenticated caller of the current RPC; raises Unauthenticated when there is none."""
    caller = current_principal.get()
    if caller is None:
        raise Unauthenticated("no authenticated caller for this call")
    return caller


def method_path(service: str, method: str) -> str:
    """Return the full method path (``/pkg.Service/Method``) the rules table is keyed by."""
    return f"/{service}/{method}"


# --------------------------------------------------------------------------------------------- errors

# The one table of what a caller is told: each error of the tree, and the transient outage of a dependency,
# with its status code and the ErrorInfo reason (UPPER_SNAKE_CASE, stable: a UI translates it). Siblings in the
# error tree, so order does not matter; subclasses (UndecodableRecord) inherit their parent's row. A failed
# precondition's reason names its violation type (PRECONDITION_LIMIT, PRECONDITION_STATE, ...).
TRANSIENT = "DEPENDENCY_UNAVAILABLE"
ERRORS: tuple[tuple[type[RecoveryError], grpc.StatusCode, str], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT"),
    (NotFound, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED"),
    (Conflict, grpc.StatusCode.ABORTED, "CONFLICT"),
)
# A database or broker outage (``services.common.db.is_transient``): retrying after this helps.
UNAVAILABLE_RETRY_SECONDS = 1


def _packed(message: Any) -> any_pb2.Any:
    """Return ``message`` packed into a protobuf Any."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _details(exc: RecoveryError) -> list[any_pb2.Any]:
    """Return the google.rpc detail messages that explain ``exc`` field by field."""
    if isinstance(exc, InvalidInput) and exc.violations:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ]
        return [_packed(error_details_pb2.BadRequest(field_violations=violations))]
    if isinstance(exc, FailedPrecondition) and exc.violations:
        violations = [
            error_details_pb2.PreconditionFailure.Violation(type=v.type, subject=v.subject, description=v.description)
            for v in exc.violations
        ]
        return [_packed(error_details_pb2.PreconditionFailure(violations=violations))]
    return []


def error_domain(method: str) -> str:
    """Return the ErrorInfo domain of ``method`` (``/recovery.escalation.v1.CaseService/GetCase`` ->
    ``recovery.escalation.v1``): the API whose reasons these are."""
    service = method.strip("/").split("/")[0]
    return service.rpartition(".")[0] or service


def _error_info(reason: str, method: str, **metadata: str) -> any_pb2.Any:
    return _packed(error_details_pb2.ErrorInfo(reason=reason, domain=error_domain(method), metadata=metadata))


def _reason(exc: RecoveryError, reason: str) -> str:
    if isinstance(exc, FailedPrecondition) and exc.violations and exc.violations[0].type:
        return f"PRECONDITION_{exc.violations[0].type.upper()}"
    return reason


def _rich_status(code: grpc.StatusCode, message: str, details: list[any_pb2.Any]) -> grpc.Status:
    """Return a grpc.Status carrying a google.rpc.Status in the trailing metadata."""
    proto = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(proto)


def to_grpc_status(exc: Exception, *, method: str) -> grpc.Status:
    """Return the status to send for ``exc`` (the ``ERRORS`` table; UNAVAILABLE with RetryInfo for a transient
    outage of a dependency); anything else becomes a generic INTERNAL. Every status carries an ErrorInfo."""
    if isinstance(exc, RecoveryError):
        for kind, code, reason in ERRORS:
            if isinstance(exc, kind):
                info = _error_info(_reason(exc, reason), method)
                return _rich_status(code, exc.message, [info, *_details(exc)])
    if is_transient(exc):
        log.warning("%s: a dependency is unavailable (%s); the caller is told to retry", method, type(exc).__name__)
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromSeconds(UNAVAILABLE_RETRY_SECONDS)
        message = "a service this call needs is unavailable for now; retry shortly"
        return _rich_status(grpc.StatusCode.UNAVAILABLE, message, [_error_info(TRANSIENT, method), _packed(retry)])
    # Unknown failure: log the traceback under a reference the caller can quote, tell them nothing else.
    reference = uuid.uuid4().hex[:12]
    log.error("unhandled error in %s (ref %s)", method, reference, exc_info=exc)
    info = _error_info("INTERNAL", method, reference=reference)
    return _rich_status(grpc.StatusCode.INTERNAL, f"internal error (ref {reference})", [info])


# ------------------------------------------------------------------------------------------- the guard


def _final_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Return the code the RPC ends with as the context records it (OK unless set or aborted)."""
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK  # grpc.aio reports None until someone sets a code
    if isinstance(code, grpc.StatusCode):
        return code
    # Some grpc versions hand back the integer value; map it back to the enum.
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


def _cancel_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Return DEADLINE_EXCEEDED when the client's deadline ran out, otherwise CANCELLED."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


@dataclass(frozen=True)
class _Guard:
    """Runs one call of one method: principal, error mapping and metrics around the servicer."""

    method: str
    caller: Principal | None
    metrics: KitMetrics
    deadline_cap: float

    async def serve(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Any]]) -> Any:
        """Return what ``work`` returns; raises the abort that carries the mapped status on failure."""
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        token = current_principal.set(self.caller)
        try:
            result = await work()
            code = _final_code(context)
            return result
        except grpc.aio.AbortError:
            # Already aborted (by the servicer or by us): the status is sent; re-raise the same object,
            # grpc.aio insists on getting its own AbortError back.
            code = _final_code(context)
            raise
        except asyncio.CancelledError:
            code = _cancel_code(context)
            raise
        except Exception as exc:
            status = to_grpc_status(exc, method=self.method)
            code = status.code
            await context.abort_with_status(status)
        finally:
            current_principal.reset(token)
            self.metrics.observe_rpc(self.method, code.name, time.perf_counter() - started)

    async def capped(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[Any]]) -> Any:
        """Return what ``work`` returns within the deadline cap; aborts with DEADLINE_EXCEEDED past it."""
        remaining = context.time_remaining()
        limit = self.deadline_cap if remaining is None else min(self.deadline_cap, remaining)
        try:
            async with asyncio.timeout(limit) as scope:
                return await work()
        except TimeoutError:
            if not scope.expired():
                raise  # the servicer's own timeout, not ours: an internal error like any other
            info = _error_info("DEADLINE_EXCEEDED", self.method)
            await context.abort_with_status(
                _rich_status(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", [info])
            )


def _refuse_nul(request: Any) -> None:
    """Raise InvalidInput naming every string field of ``request`` that holds a NUL (no text column can)."""
    if isinstance(request, Message) and (bad := nul_fields(request)):
        raise InvalidInput.of(*(FieldViolation(path, "must not contain a NUL character") for path in bad))


async def _call_unary(behaviour: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> Any:
    """Return the servicer's single response."""
    _refuse_nul(request)
    result = behaviour(request, context)
    return await result if inspect.isawaitable(result) else result


async def _call_streaming(behaviour: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> None:
    """Write every response the servicer produces (async generator, iterator or context.write)."""
    _refuse_nul(request)
    result = behaviour(request, context)
    if inspect.isawaitable(result):
        await result  # the servicer used context.write itself
    elif hasattr(result, "__aiter__"):
        try:
            async for response in result:
                await context.write(response)
        finally:
            # Close a generator we stopped early (abort, cancel) so its own cleanup runs now, in this task.
            if hasattr(result, "aclose"):
                await result.aclose()
    elif result is not None:
        for response in result:
            await context.write(response)


def _guarded(handler: grpc.RpcMethodHandler, guard: _Guard) -> grpc.RpcMethodHandler:
    """Return ``handler`` with the same cardinality and codecs, every call run through ``guard``."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        behaviour = handler.stream_stream if handler.request_streaming else handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> None:
            await guard.serve(context, lambda: _call_streaming(behaviour, request, context))

        factory = (
            grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        )
        return factory(streaming, **codecs)

    behaviour = handler.stream_unary if handler.request_streaming else handler.unary_unary

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await guard.serve(
            context, lambda: guard.capped(context, lambda: _call_unary(behaviour, request, context))
        )

    factory = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    return factory(unary, **codecs)


def _rejecting(handler: grpc.RpcMethodHandler, exc: Exception) -> grpc.RpcMethodHandler:
    """Return a handler of the same cardinality that fails with ``exc`` without decoding the request."""

    async def fail(_request: Any, _context: grpc.aio.ServicerContext) -> Any:
        raise exc

    # No deserializer: an unauthenticated caller's bytes are never parsed.
    kwargs = {"request_deserializer": None, "response_serializer": None}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(fail, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(fail, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(fail, **kwargs)
    return grpc.unary_unary_rpc_method_handler(fail, **kwargs)


def _authorization(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """Return the single ``authorization`` value; raises Unauthenticated when it is sent more than once."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if len(values) > 1:
        # Proxies and servers disagree on which duplicate wins; refuse rather than guess.
        raise Unauthenticated("more than one authorization header")
    if values and not isinstance(values[0], str):
        raise Unauthenticated("authorization must be text")
    return values[0] if values else None


class _KitInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorises and guards every call before its servicer runs."""

    def __init__(
        self, *, verifier: TokenVerifier, rules: Mapping[str, Rule], metrics: KitMetrics, deadline_cap: float
    ) -> None:
        self._verifier = verifier
        self._rules = rules
        self._metrics = metrics
        self._deadline_cap = deadline_cap

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED (and we keep metric labels bounded)
        method = handler_call_details.method
        try:
            caller = self._admit(method, handler_call_details.invocation_metadata)
        except Exception as exc:
            # Aborting needs a servicer context, which only a handler gets: hand back one that fails.
            guard = _Guard(method=method, caller=None, metrics=self._metrics, deadline_cap=self._deadline_cap)
            return _guarded(_rejecting(handler, exc), guard)
        guard = _Guard(method=method, caller=caller, metrics=self._metrics, deadline_cap=self._deadline_cap)
        return _guarded(handler, guard)

    def _admit(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Principal | None:
        """Return the caller (None for public methods); raises Unauthenticated or Forbidden."""
        if is_public(self._rules, method):
            return None
        caller = self._verifier.verify(bearer_token(_authorization(metadata)))
        authorize(self._rules, method, caller)
        return caller


# ------------------------------------------------------------------------------------------ the server


@dataclass(frozen=True)
class GrpcSettings:
    """Where and how the gRPC server listens; TLS is on when cert and key are set, mTLS with a client CA."""

    host: str = "127.0.0.1"
    port: int = 0
    max_message_bytes: int = 4 * 1024 * 1024
    deadline_cap_seconds: float = 30.0
    reflection: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # when set, clients must present a certificate it signed
    grace_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if self.max_message_bytes <= 0 or self.deadline_cap_seconds <= 0:
            raise ValueError("max_message_bytes and deadline_cap_seconds must be positive")
        if self.grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        # Empty strings count as unset: environment-driven settings use "" for "not configured".
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")

    @property
    def tls(self) -> bool:
        """Return True when the server listens with TLS."""
        return bool(self.tls_cert_file)


def _server_credentials(settings: GrpcSettings) -> grpc.ServerCredentials:
    """Return TLS credentials read from the configured files (client certs required with a client CA)."""
    assert settings.tls_cert_file and settings.tls_key_file
    chain = Path(settings.tls_cert_file).read_bytes()
    key = Path(settings.tls_key_file).read_bytes()
    client_ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _address(settings: GrpcSettings) -> str:
    """Return ``host:port``, bracketing IPv6 literals."""
    host = settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{settings.port}"


class GrpcServer:
    """A grpc.aio server with the kit's interceptor, health service and optional reflection."""

    def __init__(
        self,
        *,
        settings: GrpcSettings,
        verifier: TokenVerifier,
        rules: Mapping[str, Rule],
        metrics: KitMetrics,
        register: Sequence[Callable[[grpc.aio.Server], None]] = (),
        service_names: Sequence[str] = (),
    ) -> None:
        self._settings = settings
        self._verifier = verifier
        self._rules = {**self._kit_rules(settings), **rules}
        self._metrics = metrics
        self._register = tuple(register)
        self._service_names = tuple(service_names)
        self._server: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None
        self._port: int | None = None

    @staticmethod
    def _kit_rules(settings: GrpcSettings) -> dict[str, Rule]:
        """Return the public rules for the kit's own services (health, and reflection when enabled)."""
        rules = {method_path(HEALTH_SERVICE, "Check"): PUBLIC, method_path(HEALTH_SERVICE, "Watch"): PUBLIC}
        if settings.reflection:
            rules[method_path(REFLECTION_SERVICE, "ServerReflectionInfo")] = PUBLIC
        return rules

    @property
    def port(self) -> int:
        """Return the bound port; raises RuntimeError before start()."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    async def start(self) -> int:
        """Return the bound port once the server is accepting calls and reports SERVING."""
        if self._server is not None:
            raise RuntimeError("server already started")
        kit = _KitInterceptor(
            verifier=self._verifier,
            rules=self._rules,
            metrics=self._metrics,
            deadline_cap=self._settings.deadline_cap_seconds,
        )
        # The span interceptor sits inside the kit's: it wraps the servicer's own handlers (streams stay generators).
        server = grpc.aio.server(interceptors=[kit, *tracing.grpc_interceptors()], options=self._options())
        for add in self._register:
            add(server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        if self._settings.reflection:
            names = (*self._service_names, HEALTH_SERVICE, REFLECTION_SERVICE)
            reflection.enable_server_reflection(names, server)
        self._port = self._bind(server)
        await server.start()
        self._server, self._health = server, health
        await health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)  # alive until stop()
        await self.set_serving(True)
        log.info("gRPC listening on %s:%d (tls=%s)", self._settings.host, self._port, self._settings.tls)
        return self._port

    def _options(self) -> list[tuple[str, int]]:
        """Return the channel arguments: explicit message size limits, no silent port sharing."""
        limit = self._settings.max_message_bytes
        return [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
            # Two processes on one port would split traffic silently; fail the bind instead.
            ("grpc.so_reuseport", 0),
        ]

    def _bind(self, server: grpc.aio.Server) -> int:
        """Return the port bound (TLS when configured); raises RuntimeError when the bind fails."""
        address = _address(self._settings)
        if self._settings.tls:
            return server.add_secure_port(address, _server_credentials(self._settings))
        return server.add_insecure_port(address)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the server ("") and every named service (readiness; liveness
        stays SERVING); no-op after stop()."""
        if self._health is None:
            raise RuntimeError("server not started")
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._service_names):
            await self._health.set(name, status)

    async def stop(self) -> None:
        """Return once NOT_SERVING is reported and in-flight calls have drained (or the grace ran out)."""
        if self._server is None or self._health is None:
            return
        # Load balancers see NOT_SERVING first; later set_serving(True) calls are ignored by the servicer.
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self._settings.grace_seconds)
        log.info("gRPC server stopped")


async def _probe_once(probe: Callable[[], Awaitable[bool]], *, limit: float) -> bool:
    """Return the probe's verdict; a probe that raises or hangs past ``limit`` seconds counts as unhealthy."""
    try:
        async with asyncio.timeout(limit):
            return bool(await probe())
    except TimeoutError:
        log.warning("health probe timed out after %.1fs", limit)
    except Exception:
        log.warning("health probe failed", exc_info=True)
    return False


async def watch_health(server: GrpcServer, probe: Callable[[], Awaitable[bool]], *, interval: float = 2.0) -> None:
    """Never returns: probes every ``interval`` seconds and flips health on change until cancelled."""
    serving: bool | None = None
    while True:
        healthy = await _probe_once(probe, limit=interval)
        if healthy != serving:
            log.log(logging.INFO if healthy else logging.WARNING, "dependencies healthy=%s", healthy)
            await server.set_serving(healthy)
            serving = healthy
        await asyncio.sleep(interval)
