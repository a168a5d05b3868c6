"""Policy versions: the file in force (through the kit's PolicyStore) and every version ever loaded, in Postgres.

An offer records its policy version; recomputing it needs that version's exact text even after restarts
and edits, so every version in force is written to ``policy_versions`` (in the same transaction as the
first offer that uses it, and by a background loop right after a reload). A version string reused for
different content would make "the same version" mean two things: the parser refuses it like any bad key.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import asyncpg

from services.common.db import Database
from services.common.errors import FieldViolation
from services.common.metrics import KitMetrics
from services.common.policy import Loaded, PolicyStore
from services.compensation.adapters import repository, texts
from services.compensation.domain.errors import PolicyError, UnknownPolicyVersion
from services.compensation.domain.policy import Policy, load_policy

log = logging.getLogger(__name__)


class PolicyBook:
    """The compensation policy in force plus every stored version, parsed on demand and cached."""

    def __init__(self, path: Path, *, known: dict[str, str], metrics: KitMetrics | None = None) -> None:
        # known: version -> sha256 of every version already stored; guards against a reused version string.
        self._known = dict(known)
        self._parsed: dict[str, Policy] = {}
        self._saved: set[str] = set()
        self.store: PolicyStore[Policy] = PolicyStore(path, self._parse, name="compensation", metrics=metrics)

    @classmethod
    async def open(cls, path: Path, *, db: Database, metrics: KitMetrics | None = None) -> PolicyBook:
        """Return the book for ``path``; raises PolicyError when the file is bad (the service must not start)."""
        async with db.transaction() as conn:
            known = await repository.policy_checksums(conn)
        book = cls(path, known=known, metrics=metrics)
        async with db.transaction() as conn:
            await book.save_current(conn)
        return book

    def _parse(self, text: str) -> Policy:
        policy = load_policy(text, texts.catalogue().template_ids())
        sha = hashlib.sha256(text.encode()).hexdigest()
        if self._known.get(policy.version, sha) != sha:
            raise PolicyError.of(
                FieldViolation("version", f"{policy.version!r} was already used for other content; bump the version")
            )
        return policy

    @property
    def loaded(self) -> Loaded[Policy]:
        """Return the policy in force with its text and checksum."""
        return self.store.loaded

    async def save_current(self, conn: asyncpg.Connection) -> Loaded[Policy]:
        """Store the version in force (once per version per process) and return it."""
        loaded = self.store.loaded
        if loaded.version not in self._saved:
            await repository.save_policy(
                conn, version=loaded.version, sha256=loaded.sha256, text=loaded.text, loaded_at=loaded.loaded_at
            )
            self._known[loaded.version] = loaded.sha256
            self._parsed[loaded.version] = loaded.policy
            self._saved.add(loaded.version)
        return loaded

    async def version(self, conn: asyncpg.Connection, version: str) -> tuple[Policy, repository.StoredPolicy]:
        """Return a stored version parsed, with its stored text; raises UnknownPolicyVersion."""
        stored = await repository.get_policy(conn, version)
        if stored is None:
            raise UnknownPolicyVersion(f"compensation policy version {version!r} was never loaded here")
        if version not in self._parsed:
            self._parsed[version] = load_policy(stored.text, texts.catalogue().template_ids())
        return self._parsed[version], stored

    async def keep_saved(self, db: Database, interval_seconds) -> None:
        """Store each new version soon after a reload puts it in force, until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            if self.store.loaded.version in self._saved:
                continue
            try:
                async with db.transaction() as conn:
                    await self.save_current(conn)
            except Exception:
                log.exception("could not store compensation policy version %s; will retry", self.store.loaded.version)
