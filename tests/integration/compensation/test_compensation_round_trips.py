"""Compensation's batch handlers on the real Postgres: as many statements for 30 records as for one, with the
repeat guard and the authorisation ledger in the path."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from services.common.unit_of_work import unit_of_work
from services.compensation.adapters import repository
from services.compensation.adapters.metrics import CompensationMetrics
from services.compensation.adapters.policies import PolicyBook
from services.compensation.config import DEFAULT_POLICY
from services.compensation.domain import commands
from services.compensation.domain.model import AuthorizationPart, LineItem, Money, RemedyKind
from services.compensation.service_layer import handlers
from tests.integration.conftest import new_id, now
from tests.unit.compensation.compensation_builders import facts

pytestmark = pytest.mark.integration
STATEMENTS = frozenset({"fetch", "fetchrow", "fetchval", "execute", "executemany"})


class Counting:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.statements = 0

    def __getattr__(self, name: str):
        attr = getattr(self._conn, name)
        if name not in STATEMENTS:
            return attr

        async def counted(*args, **kwargs):
            self.statements += 1
            return await attr(*args, **kwargs)

        return counted


@pytest.fixture
async def deps(db):
    book = await PolicyBook.open(DEFAULT_POLICY, db=db)
    return handlers.Deps(policies=book, metrics=CompensationMetrics(CollectorRegistry()))


def opening(customer: str, reference: str) -> commands.QuoteFirstOffer:
    case = facts(customer_id=customer, case_id=new_id("case"), reference=reference, failure_at=now())
    return commands.QuoteFirstOffer(facts=case, opened_at=now())


def authorisation(
    offer, *, part: AuthorizationPart = AuthorizationPart.WHOLE, team: str = ""
) -> commands.RecordAuthorization:
    return commands.RecordAuthorization(
        authorization_id=f"{offer.offer_id}:{part.value}",
        offer_id=offer.offer_id,
        case_id=offer.case_id,
        customer_id=offer.customer_id,
        team=team,
        amount=offer.total,
        line_items=offer.line_items,
        authorized_at=now(),
        part=part,
    )


async def _counted(db, handler, batch, deps):
    """Run ``handler`` on ``batch`` in a unit of work; returns the statements sent (the outbox write included)."""
    async with unit_of_work(db) as uow:
        uow.conn = counting = Counting(uow.conn)
        result = await handler(uow, batch, deps=deps)
    return counting.statements, result


async def test_opening_cases_and_recording_authorisations_take_as_many_statements_for_30_as_for_1(db, deps):
    # Earlier cases of ten customers, each on its own reference, all authorised: their next failures repeat them.
    customers = [new_id("cust") for _ in range(10)]
    references = {c: new_id("order") for c in customers}
    earlier_batch = [opening(c, references[c]) for c in customers]
    _, earlier = await _counted(db, handlers.open_cases, earlier_batch, deps)
    one_auth, _ = await _counted(db, handlers.record_authorizations, [authorisation(earlier[0])], deps)
    many_auth, refused = await _counted(
        db, handlers.record_authorizations, [authorisation(o) for o in earlier[1:]] * 3, deps
    )
    assert refused == [] and one_auth == many_auth

    one, (single,) = await _counted(db, handlers.open_cases, [opening(new_id("cust"), new_id("order"))], deps)
    batch = [opening(c, references[c]) for c in customers] + [opening(new_id("cust"), "") for _ in range(20)]
    many, offers = await _counted(db, handlers.open_cases, batch, deps)
    assert one == many
    assert not single.needs_review
    assert [o.needs_review for o in offers] == [True] * 10 + [False] * 20
    assert all(o.review_reasons[0].code == "repeat_reference" for o in offers[:10])

    async with db.transaction() as conn:
        spent = await conn.fetch("SELECT authorization_id, part FROM spend ORDER BY authorization_id")
    assert len(spent) == 10 and {row["part"] for row in spent} == {"whole"}


async def test_a_batch_with_cases_of_incidents_takes_two_statements_more_whatever_its_size(db, deps):
    # The incident lock and the playbooks; a batch without incidents takes neither.
    declared, undeclared = new_id("incident"), new_id("incident")
    async with db.transaction() as conn:
        await repository.record_playbook(
            conn, incident_id=declared, playbook_id="cancelled_flight", declared_by="e-90", declared_at=now(),
            recorded_at=now(),
        )  # fmt: skip

    def of(incident: str) -> commands.QuoteFirstOffer:
        command = opening(new_id("cust"), "")
        return replace(command, facts=replace(command.facts, incident_id=incident))

    plain, _ = await _counted(db, handlers.open_cases, [opening(new_id("cust"), "")], deps)
    one, (single,) = await _counted(db, handlers.open_cases, [of(declared)], deps)
    batch = [of(declared if i % 2 == 0 else undeclared) for i in range(30)]
    many, offers = await _counted(db, handlers.open_cases, batch, deps)
    assert one == many == plain + 2
    assert single.playbook_id == "cancelled_flight"
    assert [o.playbook_id for o in offers] == ["cancelled_flight", ""] * 15
    async with db.transaction() as conn:
        cases = await repository.cases_of_incident(conn, declared)
    assert cases[0] == single.case_id and set(cases[1:]) == {o.case_id for o in offers[::2]}


async def test_an_offers_owner_share_and_remainder_are_two_rows_of_one_batch(db, deps):
    _, (offer,) = await _counted(db, handlers.open_cases, [opening(new_id("cust"), "")], deps)
    voucher = LineItem(RemedyKind.VOUCHER, Money(1000, "EUR"), "r", "i", "c")
    owner = replace(
        authorisation(offer, part=AuthorizationPart.OWNER_SHARE), amount=Money(1000, "EUR"), line_items=(voucher,)
    )
    rest = replace(
        authorisation(offer, part=AuthorizationPart.REMAINDER),
        amount=Money(500, "EUR"),
        line_items=(replace(voucher, amount=Money(500, "EUR")),),
    )
    await _counted(db, handlers.record_authorizations, [owner, rest, owner], deps)
    async with db.transaction() as conn:
        granted = await repository.granted_lines(conn, offer.case_id)
        team = await conn.fetchval("SELECT DISTINCT team FROM spend WHERE case_id = $1", offer.case_id)
    assert sorted(g.amount.amount_minor for g in granted) == [500, 1000]
    assert team == "front-desk"  # the events named none: the case's owning team is charged
    assert deps.metrics.duplicates.labels(kind="offer_authorized")._value.get() == 1
