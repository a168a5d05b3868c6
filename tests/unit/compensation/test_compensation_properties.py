"""Property tests (hypothesis) of the offer function over the shipped policy, in each currency it prices."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.compensation.domain.model import (
    Avoidability,
    CaseFacts,
    Category,
    CostItem,
    CostKind,
    CustomerHistory,
    CustomerRequest,
    Money,
    RemedyKind,
    Severity,
)
from services.compensation.domain.offer import (
    case_currency,
    compute_offer,
    distinct_costs,
    goodwill_room,
    statutory_amount,
    statutory_applies,
)
from services.compensation.domain.policy import load_policy
from tests.unit.compensation.compensation_builders import NOW, POLICY, POLICY_TEXT, goodwill

amounts = st.integers(min_value=0, max_value=2_000_000)
SEVERITIES = st.sampled_from(list(Severity))
NO_HISTORY = CustomerHistory()


@st.composite
def case_facts(draw, severity=SEVERITIES) -> CaseFacts:
    currency = draw(st.sampled_from(POLICY.currencies))

    def money(strategy=amounts):
        return Money(draw(strategy), currency)

    costs = draw(
        st.lists(
            st.builds(
                CostItem,
                kind=st.none() | st.sampled_from(list(CostKind)),
                amount=st.builds(Money, amounts, st.just(currency)),
                has_receipt=st.booleans(),
                # A few references, so two reports of one receipt come up often.
                receipt_reference=st.sampled_from(["", "", "R-1", "r-1 ", "R-2"]),
            ),
            max_size=4,
        )
    )
    ask = draw(
        st.none()
        | st.builds(
            CustomerRequest,
            remedy_kind=st.none() | st.sampled_from(list(RemedyKind)),
            amount=st.none() | st.builds(Money, amounts, st.just(currency)),
        )
    )
    return CaseFacts(
        customer_id="cust",
        case_id="case",
        category=draw(st.none() | st.sampled_from(list(Category))),
        severity=draw(severity),
        failure_at=NOW - timedelta(hours=draw(st.integers(0, 1000))),
        avoidability=draw(st.none() | st.sampled_from(list(Avoidability))),
        reported_costs=tuple(costs),
        customer_request=ask,
        order_value=draw(st.none() | st.just(money())),
        customer_value=draw(st.none() | st.just(money(st.integers(0, 5_000_000)))),
        prior_failure_count=draw(st.integers(0, 10)),
        sla_breaches=draw(st.integers(0, 6)),
        reopen_count=draw(st.integers(0, 3)),
        owning_team=draw(st.sampled_from(["front-desk", "night-shift", ""])),
    )


histories = st.builds(CustomerHistory, unverified_claims_in_window=st.integers(0, 10))


def quote(f: CaseFacts, history: CustomerHistory = NO_HISTORY, policy=POLICY):
    return compute_offer(facts=f, history=history, policy=policy, now=NOW, team_spent_minor=0)


@given(case_facts(severity=st.none() | SEVERITIES), histories)
def test_never_above_any_cap(f, history):
    o = quote(f, history)
    currency = case_currency(f, POLICY)
    room, _ = goodwill_room(f, POLICY, currency)
    assert goodwill(o) <= room <= POLICY.case_cap[currency]
    caps = POLICY.reimbursement_caps[currency]
    reimbursed = [line for line in o.line_items if line.kind is RemedyKind.REIMBURSEMENT]
    for line in reimbursed:
        assert line.amount.amount_minor <= caps[line.cost_kind]
    assert len(reimbursed) == sum(1 for d in distinct_costs(f.reported_costs) if d.cost.amount.amount_minor > 0)


@given(case_facts(severity=SEVERITIES), histories)
def test_never_below_the_floor_for_a_real_failure(f, history):
    o = quote(f, history)
    assert goodwill(o) >= POLICY.floor[case_currency(f, POLICY)]
    assert all(line.amount.amount_minor >= 0 for line in o.line_items)


@given(case_facts(), st.sampled_from(list(Severity)))
def test_more_severe_never_pays_less_all_else_equal(f, other):
    low, high = sorted([f.severity, other])
    a, b = quote(replace(f, severity=low)), quote(replace(f, severity=high))
    assert b.total.amount_minor >= a.total.amount_minor
    assert goodwill(b) >= goodwill(a)


@given(case_facts(), st.integers(1, 5))
def test_a_repeat_failure_never_pays_less(f, more):
    first = quote(f)
    repeat = quote(replace(f, prior_failure_count=f.prior_failure_count + more))
    assert repeat.total.amount_minor >= first.total.amount_minor
    assert goodwill(repeat) >= goodwill(first)


@given(case_facts(), histories)
@settings(max_examples=50)
def test_deterministic_for_the_same_inputs_and_policy_version(f, history):
    again = load_policy(POLICY_TEXT)  # the same version parsed again, as a restart would
    assert quote(f, history) == quote(f, history) == quote(f, history, policy=again)


# The same policy with goodwill caps squeezed to almost nothing.
SQUEEZED = load_policy(
    POLICY_TEXT.replace("order_share_bp = 5000", "order_share_bp = 1").replace(
        "[caps.per_case]\nEUR = 30000\nGBP = 26000\nPLN = 120000", "[caps.per_case]\nEUR = 500\nGBP = 500\nPLN = 2000"
    )
)


@given(case_facts())
def test_statutory_lines_are_never_reduced(f):
    currency = case_currency(f, POLICY)
    expected = {
        rule.rule_id: statutory_amount(rule, f, currency)
        for rule in POLICY.statutory
        if statutory_applies(rule, f) and statutory_amount(rule, f, currency) > 0
    }
    for policy in (POLICY, SQUEEZED):
        o = quote(f, policy=policy)
        got = {
            line.rule_id: line.amount.amount_minor
            for line in o.line_items
            if line.kind is RemedyKind.STATUTORY_COMPENSATION
        }
        assert got == expected


@given(case_facts(), histories)
def test_the_total_is_the_sum_of_the_lines_in_one_currency(f, history):
    o = quote(f, history)
    assert {line.amount.currency for line in o.line_items} == {o.total.currency}
    assert o.total.amount_minor == sum(line.amount.amount_minor for line in o.line_items)
