"""In-memory stand-ins at the ports, for unit tests of handlers: no database, no broker."""

from __future__ import annotations

from collections.abc import Callable

from services.common.unit_of_work import UnitOfWork


class FakeUnitOfWork(UnitOfWork):
    """A unit of work over no connection: repositories are the fakes given, staged records stay in memory.

    ``commit()`` runs the after-commit hooks the way a committed transaction would; a test that never calls it
    sees what a rolled-back one leaves (nothing counted).
    """

    def __init__(self, **repositories: object) -> None:
        super().__init__(conn=None)  # type: ignore[arg-type]
        self._fakes = {type(fake).__name__.removeprefix("Fake"): fake for fake in repositories.values()}
        self.committed = False

    def repository(self, kind: Callable):  # type: ignore[override]
        return self._fakes[kind.__name__]

    async def flush(self) -> None:
        """Keep the staged records: the test reads them from ``staged``."""

    def commit(self) -> None:
        self.committed = True
        self._committed()
