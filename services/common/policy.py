"""Policy files: parsed and validated whole at load, refused with a clear error, reloaded without restart.

A service hands ``PolicyStore`` its file and its pure parser (``text -> policy``, raising an
``InvalidInput`` subclass that names every bad key). At start-up a bad file stops the service with that
error. Afterwards ``watch()`` polls the file and swaps in a new version only when it parses; a bad edit
is logged and counted, and the policy in force stays. Polling (not inotify) also sees the symlink swap a
Kubernetes ConfigMap update makes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from services.common.errors import InvalidInput
from services.common.metrics import KitMetrics

log = logging.getLogger(__name__)

P = TypeVar("P")


@dataclass(frozen=True)
class Loaded(Generic[P]):
    """A policy in force: the parsed value, its source text's SHA-256 and when it was loaded."""

    policy: P
    version: str
    text: str
    sha256: str
    loaded_at: datetime


class PolicyStore(Generic[P]):
    """Holds the policy in force for one file; ``reload`` swaps it only for a valid new version."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], P],
        *,
        name: str,
        version_of: Callable[[P], str] = lambda p: p.version,  # type: ignore[attr-defined]
        metrics: KitMetrics | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self._parse = parse
        self._version_of = version_of
        self._metrics = metrics
        self._loaded = self._load()  # raises: a service must not start on a bad policy
        self._observe("loaded")

    @property
    def current(self) -> P:
        """Return the policy in force."""
        return self._loaded.policy

    @property
    def loaded(self) -> Loaded[P]:
        """Return the policy in force with its text, checksum and load time."""
        return self._loaded

    def _load(self) -> Loaded[P]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise InvalidInput(f"{self.name} policy file {self.path}: cannot read it: {exc}") from exc
        try:
            policy = self._parse(text)
        except InvalidInput as exc:
            raise type(exc)(f"{self.name} policy file {self.path} refused: {exc.message}", exc.violations) from exc
        return Loaded(
            policy=policy,
            version=self._version_of(policy),
            text=text,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            loaded_at=datetime.now(UTC),
        )

    def reload(self) -> bool:
        """Load the file again; True when a new version is now in force.

        Raises the parser's InvalidInput when the file is bad; the previous policy stays in force.
        """
        try:
            fresh = self._load()
        except InvalidInput:
            self._observe("refused")
            raise
        if fresh.sha256 == self._loaded.sha256:
            return False
        self._loaded = fresh
        self._observe("loaded")
        log.info("%s policy version %s now in force (sha256 %s)", self.name, fresh.version, fresh.sha256[:12])
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever the file changes, until cancelled; a bad edit is logged and the old policy kept."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except InvalidInput as exc:
                log.error("%s; keeping version %s", exc.message, self._loaded.version)
            except Exception:
                log.exception("%s policy reload failed; keeping version %s", self.name, self._loaded.version)

    def _observe(self, outcome: str) -> None:
        if self._metrics is None:
            return
        self._metrics.policy_reloads.labels(policy=self.name, outcome=outcome).inc()
        if outcome == "loaded":
            self._metrics.policy_version.labels(policy=self.name).info({"version": self._loaded.version})
