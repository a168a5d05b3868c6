"""Intake's report handler over an in-memory store: what a set of reports writes, stages and counts."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

from intake_builders import NOW, policy, raw_report
from prometheus_client import CollectorRegistry
from recovery.events.v1 import events_pb2

from services.common.money import Money
from services.intake.adapters.metrics import IntakeMetrics
from services.intake.domain.acceptance import Amended, CustomerState, Granted, KnownCase, KnownFailure, Opened
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import CostItem, CostKind
from services.intake.service_layer import handlers
from tests.support.fakes import FakeUnitOfWork


class FakeFailureStore:
    """FailureStore in memory: the states it is seeded with, the decisions it is given."""

    def __init__(self, states: dict[str, CustomerState] | None = None) -> None:
        self.states = states or {}
        self.failures: dict[tuple[str, str], KnownFailure] = {}
        self.saved: list[Opened | Amended] = []
        self.locked: list[str] = []

    async def lock_customers(self, customer_ids) -> None:
        self.locked.extend(sorted(set(customer_ids)))

    async def accepted_under(self, keys):
        return {key: self.failures[key] for key in keys if key in self.failures}

    async def customer_states(self, customer_ids, **_windows):
        return {c: self.states.setdefault(c, CustomerState(customer_id=c)) for c in customer_ids}

    async def save_decisions(self, decisions) -> None:
        self.saved.extend(decision for decision, _ in decisions)


def deps(registry: CollectorRegistry) -> handlers.Deps:
    counter = itertools.count(1)
    return handlers.Deps(
        policy=policy, metrics=IntakeMetrics(registry), clock=lambda: NOW, new_id=lambda: f"id-{next(counter)}"
    )


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0


async def test_a_set_of_reports_is_decided_in_order_written_once_and_staged_together():
    registry = CollectorRegistry()
    store = FakeFailureStore()
    uow = FakeUnitOfWork(store=store)
    reports = [
        raw_report(),
        raw_report(source_event_id="evt-2", occurred_at=NOW - timedelta(hours=2)),  # same order: joins the case
        raw_report(customer_id="cust-2", source_event_id="evt-3", reference="order-9"),
    ]
    results = await handlers.report_failures(uow, reports, deps=deps(registry), channel="kafka")
    assert [(r.merged, r.duplicate) for r in results] == [(False, False), (True, False), (False, False)]
    assert results[0].case_id == results[1].case_id != results[2].case_id
    assert store.locked == ["cust-1", "cust-2"]
    assert [type(d).__name__ for d in store.saved] == ["Opened", "Amended", "Opened"]
    topics = [r.topic for r in uow.staged]
    assert topics == ["recovery.case-opened.v1", "recovery.case-amended.v1", "recovery.case-opened.v1"]
    amended = events_pb2.CaseAmended.FromString(uow.staged[1].value)
    assert amended.revision == 2 and list(amended.failure_ids) == [results[1].failure_id, results[0].failure_id]


async def test_a_refused_report_is_returned_with_its_reason_and_changes_nothing_for_the_others():
    registry = CollectorRegistry()
    store = FakeFailureStore()
    uow = FakeUnitOfWork(store=store)
    bad = replace(raw_report(source_event_id="evt-bad"), customer_id="")
    results = await handlers.report_failures(uow, [bad, raw_report()], deps=deps(registry), channel="kafka")
    assert isinstance(results[0], InvalidFailureReport) and "customer_id" in str(results[0])
    assert len(store.saved) == 1 and len(uow.staged) == 1


async def test_metrics_are_counted_after_commit_only():
    registry = CollectorRegistry()
    uow = FakeUnitOfWork(store=FakeFailureStore())
    bad = replace(raw_report(source_event_id="evt-bad"), customer_id="")
    await handlers.report_failures(uow, [raw_report(), bad], deps=deps(registry), channel="kafka")
    opened = ("recovery_intake_cases_opened_total", {"severity": "minor", "outlook": "recoverable"})
    assert sample(registry, opened[0], **opened[1]) == 0  # not committed (yet): nothing counted
    uow.commit()
    assert sample(registry, opened[0], **opened[1]) == 1
    assert sample(registry, "recovery_intake_reports_refused_total", channel="kafka", field="customer_id") == 1


async def test_a_report_already_accepted_is_a_counted_duplicate_with_no_write():
    registry = CollectorRegistry()
    store = FakeFailureStore()
    store.failures[("delivery_tracking", "evt-1")] = KnownFailure("f-0", "case-0", "cust-1", NOW, NOW)
    uow = FakeUnitOfWork(store=store)
    [result] = await handlers.report_failures(uow, [raw_report()], deps=deps(registry), channel="kafka")
    assert (result.duplicate, result.case_id, result.failure_id) == (True, "case-0", "f-0")
    assert store.saved == [] and uow.staged == ()
    uow.commit()
    assert sample(registry, "recovery_intake_duplicates_dropped_total", source="delivery_tracking") == 1


async def test_receipt_references_reach_both_case_events_and_costs_with_the_same_one_are_all_kept():
    uow = FakeUnitOfWork(store=FakeFailureStore())
    hotel = CostItem(CostKind.HOTEL, Money(12900, "EUR"), "one night", True, "HTL-991")
    taxi = CostItem(CostKind.TAXI, Money(4200, "EUR"), "to the hotel", True, "TX-17")
    reports = [
        raw_report(reported_costs=(hotel,)),
        # The same hotel receipt again, on a second report of the order: compensation pays it once, intake keeps both.
        raw_report(source_event_id="evt-2", occurred_at=NOW - timedelta(hours=1), reported_costs=(hotel, taxi)),
    ]
    await handlers.report_failures(uow, reports, deps=deps(CollectorRegistry()), channel="kafka")
    opened = events_pb2.CaseOpened.FromString(uow.staged[0].value)
    amended = events_pb2.CaseAmended.FromString(uow.staged[1].value)
    assert [c.receipt_reference for c in opened.reported_costs] == ["HTL-991"]
    assert [c.receipt_reference for c in amended.merged_failure.reported_costs] == ["HTL-991", "TX-17"]
    assert sorted(c.receipt_reference for c in amended.reported_costs) == ["HTL-991", "HTL-991", "TX-17"]


async def test_a_customer_s_next_case_sees_what_their_cases_were_granted_added_up():
    # The store sums a case's authorisations (its owner share, the approved remainder, a re-quote's difference)
    # into one grant per case and currency; the history adds the cases up.
    earlier = NOW - timedelta(days=3)
    state = CustomerState(
        customer_id="cust-1",
        cases={
            c: KnownCase(c, "cust-1", ref, True, earlier, earlier, 1)
            for c, ref in (("case-a", "order-a"), ("case-b", "order-b"))
        },
        granted=[
            Granted("case-a", Money(5000 + 3000 + 1500, "EUR"), earlier),
            Granted("case-b", Money(2000, "EUR"), earlier),
            Granted("case-b", Money(700, "USD"), earlier),
        ],
    )
    uow = FakeUnitOfWork(store=FakeFailureStore({"cust-1": state}))
    await handlers.report_failures(uow, [raw_report()], deps=deps(CollectorRegistry()), channel="kafka")
    history = events_pb2.CaseOpened.FromString(uow.staged[0].value).history
    assert [(m.amount_minor, m.currency) for m in history.compensation_received] == [(11500, "EUR"), (700, "USD")]
    assert history.prior_case_count == 2
