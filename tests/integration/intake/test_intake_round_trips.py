"""ReportFailure on the real Postgres in a fixed, small number of statements: a new case, a merge and a retry.

The servicer is called directly (as the gRPC server would, with the caller set), on a pool whose connections
count what they send; BEGIN and COMMIT count too, they are round trips like any other.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from services.common import migrations
from services.common.auth import Principal
from services.common.db import Database, PooledConnection
from services.common.grpc_server import current_principal
from services.common.policy import PolicyStore
from services.common.unit_of_work import unit_of_work
from services.intake import bootstrap
from services.intake.adapters import repository, wire
from services.intake.adapters.metrics import IntakeMetrics
from services.intake.config import DEFAULT_POLICY
from services.intake.domain.policy import load_policy
from services.intake.entrypoints.grpc_api import IntakeApi
from services.intake.service_layer import handlers
from tests.integration.conftest import new_id
from tests.integration.intake.test_intake_api import report

pytestmark = pytest.mark.integration
STATEMENTS = ("fetch", "fetchrow", "fetchval", "execute", "executemany")
# Where statements are counted while a test counts: any task's (a group of reports runs in a task of its own).
_counting: list[list[str]] = []


@pytest.fixture
def counted(monkeypatch):
    """Count every statement a pooled connection sends while ``_counting`` holds a list."""
    for name in STATEMENTS:
        original = getattr(PooledConnection, name)

        async def counting(self, *args, _original=original, _name=name, **kwargs):
            if _counting:
                _counting[-1].append(f"{_name}: {' '.join(str(args[0]).split())[:110] if args else ''}")
            return await _original(self, *args, **kwargs)

        monkeypatch.setattr(PooledConnection, name, counting)


@pytest.fixture
async def api(settings, counted):
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=bootstrap.MIGRATIONS)
    db = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    policies = PolicyStore(DEFAULT_POLICY, load_policy, name="intake")
    deps = handlers.Deps(policy=lambda: policies.current, metrics=IntakeMetrics(CollectorRegistry()))
    yield IntakeApi(db=db, deps=deps)
    async with db.transaction() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await db.close()


async def statements_of(api: IntakeApi, request) -> list[str]:
    sent: list[str] = []
    token = current_principal.set(Principal(employee_id="e-17", role="agent", team="front-desk"))
    _counting.append(sent)
    try:
        await api.ReportFailure(request, None)
    finally:
        _counting.pop()
        current_principal.reset(token)
    return sent


async def test_report_failure_takes_a_fixed_small_number_of_round_trips(api):
    customer = new_id("cust")
    first = report(customer)
    opened = await statements_of(api, first)
    merged = await statements_of(api, report(customer, reference=first.reference))
    retried = await statements_of(api, first)
    print(f"\nReportFailure statements: new case {len(opened)}, merge {len(merged)}, retry {len(retried)}")
    print("\n".join(opened))
    # BEGIN, the request's claim (refused), its stored response, COMMIT.
    assert len(retried) == 4, retried
    # BEGIN, the request's claim, the customer's lock, the failures known by their event ids, all the
    # customer's state (one statement), every row written (one), the response stored, the outbox (one), COMMIT.
    assert len(opened) == 9, opened
    assert len(merged) == 9, merged


async def test_a_case_opened_and_merged_into_in_one_batch_is_stored_as_the_batch_left_it(api, settings):
    db = await Database.connect(settings.database_url, schema=settings.schema, max_size=1)
    customer = new_id("cust")
    first = wire.command_from_request(report(customer), reporter="e-17")
    # The same booking an hour earlier: it joins the case and moves its first failure back.
    earlier = report(customer, reference=first.reference)
    earlier.occurred_at.FromDatetime(first.occurred_at - timedelta(hours=1))
    second = wire.command_from_request(earlier, reporter="e-17")
    sent: list[str] = []
    _counting.append(sent)
    try:
        async with unit_of_work(db) as uow:
            opened, merged = await handlers.report_failures(uow, [first, second], deps=api._deps, channel="test")
    finally:
        _counting.pop()
        async with db.transaction() as conn:
            case = await repository.get_case(conn, opened.case_id)
        await db.close()
    assert merged.merged and merged.case_id == opened.case_id
    assert case.revision == 2 and case.first_failure_at == second.occurred_at
    assert len(sent) == 7, sent  # the same statements as one report, less the request's idempotency
