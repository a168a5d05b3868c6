"""Plan B playbooks: the policy's fixed offers for a declared incident, loaded and refused like any key; a case of
the incident is offered its playbook unless the normal rules give more (amounts worked out from policy.toml)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from recovery.events.v1 import events_pb2

from services.common.wire import time_to_proto
from services.compensation.adapters import texts, wire
from services.compensation.domain.errors import InvalidEvent, PolicyError
from services.compensation.domain.model import (
    Avoidability,
    Category,
    CostKind,
    CustomerHistory,
    Money,
    RemedyKind,
    RequestOutcome,
)
from services.compensation.domain.policy import load_policy
from tests.unit.compensation.compensation_builders import (
    NOW,
    POLICY,
    POLICY_TEXT,
    cost,
    eur,
    facts,
    granted,
    offer,
    request,
    words,
)

STATUTORY, VOUCHER, REIMBURSEMENT = (
    RemedyKind.STATUTORY_COMPENSATION,
    RemedyKind.VOUCHER,
    RemedyKind.REIMBURSEMENT,
)
ACCOUNT_CREDIT, APOLOGY = RemedyKind.ACCOUNT_CREDIT, RemedyKind.APOLOGY_NOTE


def cancelled(**changes):
    """An avoidable, moderate cancellation of a 100 EUR order in incident storm-1, declared with cancelled_flight.

    Normally: statutory 250 EUR (first band) and a voucher of 15 EUR + 30% = 19.50, rounded up to 20 EUR.
    """
    base = facts(
        category=Category.CANCELLATION,
        avoidability=Avoidability.AVOIDABLE,
        incident_id="storm-1",
        playbook_id="cancelled_flight",
    )
    return replace(base, **changes)


def money_lines(o):
    return [(line.kind, line.cost_kind, line.amount.amount_minor) for line in o.line_items if line.amount.amount_minor]


def refused(text: str) -> dict[str, str]:
    with pytest.raises(PolicyError) as error:
        load_policy(text)
    return {v.field: v.description for v in error.value.violations}


# ------------------------------------------------------------------------------------------ the policy


def test_the_shipped_playbooks_load_within_a_team_leads_limits():
    flight = POLICY.playbooks["cancelled_flight"]
    assert [(line.kind, line.cost_kind) for line in flight.lines] == [
        (VOUCHER, None),
        (REIMBURSEMENT, CostKind.HOTEL),
        (REIMBURSEMENT, CostKind.REBOOKING),
        (ACCOUNT_CREDIT, None),
    ]
    assert flight.lines[0].customer_text.template_id == "playbook.cancelled_flight.meal"
    assert set(POLICY.playbooks) == {"cancelled_flight", "double_billing"}
    for playbook in POLICY.playbooks.values():
        assert all(set(line.amounts) == set(POLICY.currencies) for line in playbook.lines)
        # A team lead (500 EUR per case) can pre-approve every playbook's own lines.
        assert playbook.total("EUR") <= 30_000
    assert "playbooks: cancelled_flight, double_billing" in POLICY.summary()


VOUCHER_LINE = '{ kind = "voucher", text = "playbook.cancelled_flight.meal"'
CREDIT_LINE = '{ kind = "account_credit", text = "playbook.cancelled_flight.trouble"'
MEAL_AMOUNT = "amount = { EUR = 1500, GBP = 1300, PLN = 6000 }"
LINES = "playbooks.cancelled_flight.lines"


@pytest.mark.parametrize(
    ("old", "new", "key", "why"),
    [
        (VOUCHER_LINE, VOUCHER_LINE.replace('"voucher"', '"vouchr"'), f"{LINES}[0].kind",
         f"must be one of {', '.join(k.value for k in RemedyKind)}, got 'vouchr'"),
        (VOUCHER_LINE, VOUCHER_LINE.replace('"voucher"', '"statutory_compensation"'), f"{LINES}[0].kind",
         "statutory_compensation is not a playbook kind (the law's amount and the apology are always added)"),
        (MEAL_AMOUNT, "amount = { EUR = 1500, GBP = 1300 }", f"{LINES}[0].amount.PLN", "is required"),
        (MEAL_AMOUNT, "amount = { EUR = 1500, GBP = 1300, PLN = 6000, USD = 1600 }", f"{LINES}[0].amount.USD",
         "unknown key"),
        (MEAL_AMOUNT, "amount = { EUR = -1500, GBP = 1300, PLN = 6000 }", f"{LINES}[0].amount.EUR",
         "must be at least 1, got -1500"),
        (MEAL_AMOUNT, "amount = { EUR = 0, GBP = 1300, PLN = 6000 }", f"{LINES}[0].amount.EUR",
         "must be at least 1, got 0"),
        (CREDIT_LINE, CREDIT_LINE.replace('",', '", cost_kind = "hotel",', 1), f"{LINES}[3].cost_kind",
         "only a reimbursement has a cost kind"),
        ('cost_kind = "hotel", ', "", f"{LINES}[1].cost_kind",
         f"must be one of {', '.join(k.value for k in CostKind)}, got None"),
        (VOUCHER_LINE, VOUCHER_LINE.replace("text", "txt"), f"{LINES}[0].txt", "unknown key"),
        (VOUCHER_LINE, VOUCHER_LINE.replace("playbook.cancelled_flight.meal", "A meal voucher."), f"{LINES}[0].text",
         "must be a template id like 'offer.statutory.cancellation', got 'A meal voucher.'"),
        ("[playbooks.double_billing]", "[playbooks.Double-Billing]", "playbooks.Double-Billing",
         "playbook ids are lower-case snake_case (a letter, then letters, digits or _)"),
    ],
)  # fmt: skip
def test_a_bad_playbook_is_refused_naming_the_key(old, new, key, why):
    assert old in POLICY_TEXT
    assert refused(POLICY_TEXT.replace(old, new, 1))[key] == why


def test_a_text_that_is_no_template_of_the_catalogue_is_refused():
    text = POLICY_TEXT.replace("playbook.cancelled_flight.meal", "playbook.cancelled_flight.mael", 1)
    with pytest.raises(PolicyError) as error:
        load_policy(text, texts.catalogue().template_ids())
    assert {v.field: v.description for v in error.value.violations} == {
        f"{LINES}[0].text": "'playbook.cancelled_flight.mael' is not a template of compensation's catalogue"
    }
    load_policy(POLICY_TEXT, texts.catalogue().template_ids())  # every shipped text is one


def test_a_version_before_the_catalogues_keeps_its_english_words():
    old = POLICY_TEXT.replace('text = "playbook.cancelled_flight.meal"', 'explanation = "A meal voucher."', 1)
    line = load_policy(old, texts.catalogue().template_ids()).playbooks["cancelled_flight"].lines[0]
    assert texts.catalogue().render(line.customer_text, "pl").text == "A meal voucher."


def test_a_playbook_without_lines_is_refused():
    text = POLICY_TEXT + '\n[playbooks.empty]\nexplanation = "nothing"\n'
    assert refused(text)["playbooks.empty.lines"].startswith("is required: a non-empty list")


# ------------------------------------------------------------------------------------------ the offer


def test_a_declared_incidents_case_gets_the_statutory_lines_the_playbook_and_the_apology():
    o = offer(cancelled())
    assert o.playbook_id == "cancelled_flight"
    assert money_lines(o) == [
        (STATUTORY, None, 25_000),  # the law's amount is never replaced
        (VOUCHER, None, 1_500),
        (REIMBURSEMENT, CostKind.HOTEL, 12_000),
        (REIMBURSEMENT, CostKind.REBOOKING, 8_000),
        (ACCOUNT_CREDIT, None, 5_000),
    ]
    assert o.line_items[-1].kind is APOLOGY
    assert [line.rule_id for line in o.line_items[1:5]] == [f"playbook.cancelled_flight.{i}" for i in (1, 2, 3, 4)]
    assert words(o.line_items[2]) == "A night at a hotel, paid by us."
    assert words(o.line_items[2], "pl") == "Nocleg w hotelu na nasz koszt."
    assert o.line_items[2].internal_reason.startswith("incident storm-1 playbook cancelled_flight: a fixed amount")
    assert "the normal reimbursement and goodwill 2000" in o.line_items[2].internal_reason
    assert not any(line.needs_receipt for line in o.line_items)
    assert o.total == eur(51_500) and not o.needs_review and o.request_outcome is None


def test_the_playbook_pays_fixed_amounts_so_the_abuse_and_repeat_guards_do_not_hold_it():
    history = CustomerHistory(unverified_claims_in_window=9, repeat_reference_cases=("case-0",))
    assert not offer(cancelled(), history=history).needs_review
    codes = [r.code for r in offer(cancelled(playbook_id=""), history=history).review_reasons]
    assert codes == ["unverified_claims", "repeat_reference"]


def test_a_case_that_needs_more_than_the_playbook_gets_the_normal_offer():
    # A hotel at the cap (300 EUR) and a taxi (150 EUR) with receipts: 450 + 20 EUR goodwill > the playbook's 265.
    costs = (cost(CostKind.HOTEL, 30_000, receipt=True), cost(CostKind.TAXI, 15_000, receipt=True))
    o = offer(cancelled(reported_costs=costs))
    assert o.playbook_id == ""
    assert money_lines(o) == [
        (REIMBURSEMENT, CostKind.HOTEL, 30_000),
        (REIMBURSEMENT, CostKind.TAXI, 15_000),
        (STATUTORY, None, 25_000),
        (VOUCHER, None, 2_000),
    ]
    # Costs just below the playbook's total: the playbook still gives at least as much.
    assert offer(cancelled(reported_costs=(cost(CostKind.HOTEL, 24_500, receipt=True),))).playbook_id


def test_a_request_is_answered_by_the_playbook_as_an_alternative():
    o = offer(cancelled(customer_request=request(RemedyKind.REFUND, 3_000)))
    assert o.playbook_id == "cancelled_flight" and o.request_outcome is RequestOutcome.ALTERNATIVE_OFFERED
    assert RemedyKind.REFUND not in {line.kind for line in o.line_items}


def test_an_unknown_playbook_gives_the_normal_offer_for_review():
    o = offer(cancelled(playbook_id="volcano"))
    assert o.playbook_id == "" and o.needs_review
    assert money_lines(o) == [(STATUTORY, None, 25_000), (VOUCHER, None, 2_000)]
    (reason,) = o.review_reasons
    assert reason.code == "playbook_unknown"
    assert "'volcano'" in reason.detail and "policy 2026.4" in reason.detail and "storm-1" in reason.detail


def test_a_case_in_a_currency_the_policy_does_not_price_gets_no_playbook():
    o = offer(cancelled(order_value=Money(10_000, "USD"), customer_value=None))
    assert o.playbook_id == "" and [r.code for r in o.review_reasons] == ["currency_not_priced"]


def test_a_requote_onto_the_playbook_pays_the_difference_from_what_was_granted():
    # The first (normal) offer was authorised: statutory 250 EUR and the 20 EUR voucher.
    given = (granted(STATUTORY, 25_000), granted(VOUCHER, 2_000))
    o = offer(cancelled(), given=given)
    assert o.playbook_id == "cancelled_flight"
    # The voucher bucket was granted more than the playbook's 15 EUR: nothing new there, nothing clawed back.
    assert money_lines(o) == [
        (REIMBURSEMENT, CostKind.HOTEL, 12_000),
        (REIMBURSEMENT, CostKind.REBOOKING, 8_000),
        (ACCOUNT_CREDIT, None, 5_000),
    ]
    assert o.total == eur(25_000) and o.granted_before_total == eur(27_000)


def test_the_playbook_offer_recomputes_from_its_stored_facts():
    f = cancelled(reported_costs=(cost(CostKind.MEAL, 900),))
    stored = wire.facts_from_proto(wire.facts_to_proto(f, at=NOW), at=NOW, case_id=f.case_id)
    assert (stored.incident_id, stored.playbook_id) == ("storm-1", "cancelled_flight")
    assert offer(stored) == offer(f)
    o = replace(offer(f), offer_id="offer-1", version=1)
    assert wire.offer_from_proto(wire.offer_to_proto(o)) == o
    assert wire.offer_to_event(o).playbook_id == "cancelled_flight"


# ------------------------------------------------------------------------------------------ the event


def test_a_declaration_becomes_its_command():
    message = events_pb2.IncidentDeclared(
        customer_id="incident:storm-1",
        incident_id="storm-1",
        playbook_id="cancelled_flight",
        declared_by="e-9",
        declared_by_role="team_lead",
        declared_at=time_to_proto(NOW),
    )
    command = wire.declaration_command(message, at=NOW.replace(year=2025))
    assert (command.incident_id, command.playbook_id, command.declared_by, command.declared_at) == (
        "storm-1",
        "cancelled_flight",
        "e-9",
        NOW,
    )


def test_a_declaration_without_its_incident_or_playbook_is_refused_naming_them():
    with pytest.raises(InvalidEvent) as error:
        wire.declaration_command(events_pb2.IncidentDeclared(customer_id="incident:"), at=NOW)
    assert [(v.field, v.description) for v in error.value.violations] == [
        ("incident_id", "is required"),
        ("playbook_id", "is required"),
    ]


def test_a_case_opened_in_an_incident_carries_it():
    opened = events_pb2.CaseOpened(customer_id="cust-1", case_id="case-1", incident_id="storm-1")
    assert wire.open_command(opened, at=NOW).facts.incident_id == "storm-1"
