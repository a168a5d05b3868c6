"""JSON logs, one object per line, carrying ``customer_id``, ``case_id`` and ``ce_id`` when known, and the
``trace_id`` and ``span_id`` of the span the line was written in.

The ids come from a context set around the work on one record or request (``record_context``), so a
handler's own log lines carry them without passing them around.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from services.common import tracing

CONTEXT_FIELDS = ("customer_id", "case_id", "ce_id")
# What must never reach a log line or a dead letter's reason, whatever quoted it (a parse error echoes the
# bad value): card numbers (13-19 digits, spaced or dashed), IBANs, and bearer tokens / JWTs.
_SECRETS = (
    re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,30}\b"),
    re.compile(r"\b\d(?:[ -]?\d){12,18}\b"),
    re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"),
    re.compile(r"(?i)\bbearer\s+\S+"),
)
_context: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)


def redact(text: str) -> str:
    """Return ``text`` with card numbers, IBANs and tokens replaced by ``[redacted]``."""
    for pattern in _SECRETS:
        text = pattern.sub("[redacted]", text)
    return text


@contextmanager
def record_context(**ids: str | bytes | None) -> Iterator[None]:
    """Attach ``ids`` (customer_id, case_id, ce_id) to every log line written inside the block."""
    current = dict(_context.get() or {})
    for name, value in ids.items():
        if value:
            current[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object with time, level, service, logger, message and ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_context.get() or {})
        if ids := tracing.current_ids():
            entry["trace_id"], entry["span_id"] = ids
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = str(value)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(*, service: str, level: str = "INFO") -> None:
    """Send every log line to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # faust and aiokafka are chatty at INFO about every rebalance step.
    for noisy in ("faust", "mode", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
