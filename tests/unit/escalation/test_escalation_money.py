"""Escalation's money rules: limits in any configured currency, only the excess goes up, statutory stays."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.money import Money
from services.escalation.domain import authority
from services.escalation.domain.errors import InvalidCommand, PolicyError
from services.escalation.domain.model import Limits, Offer, OfferLine, RemedyKind, Usage
from services.escalation.domain.policy import load_policy
from services.escalation.domain.rates import Rate, limits_in, usage_in
from tests.unit.escalation.escalation_builders import POLICY_TEXT, eur, offer, policy

V, R, S, C = RemedyKind.VOUCHER, RemedyKind.REIMBURSEMENT, RemedyKind.STATUTORY_COMPENSATION, RemedyKind.ACCOUNT_CREDIT
GBP = Rate("GBP", "EUR", Fraction("1.17"), "1.17", "r-1")


def money_offer(currency: str, *lines: tuple[RemedyKind, int], **changes) -> Offer:
    items = tuple(OfferLine(kind=k, amount=Money(a, currency)) for k, a in lines)
    return Offer("o-1", 1, Money(sum(a for _, a in lines), currency), items, **changes)


# ------------------------------------------------------------------------------------------------ rates


def test_amounts_count_in_full_and_limits_give_no_extra_room():
    assert GBP.to_base(100) == 117
    assert GBP.to_base(1) == 2  # 1.17 cents counts as 2: rounding favours the limit
    assert GBP.from_base(5000) == 4273  # 50 EUR is 42.73 GBP of room, not 42.74


def test_minor_digits_differ_between_currencies():
    yen = Rate("JPY", "EUR", Fraction("0.0062"), "0.0062", "r-1")
    assert yen.to_base(1000) == 620  # 1,000 JPY (no minor unit) is 6.20 EUR


@given(base_limit=st.integers(0, 10**8), used=st.integers(0, 10**8), amount=st.integers(0, 10**8))
def test_a_check_in_the_offer_currency_never_lets_more_through_than_the_base_limit(base_limit, used, amount):
    limits = limits_in(authority_limits(base_limit), GBP)
    usage = usage_in(Usage(today=used), GBP)
    if amount + usage.today <= limits.per_day:
        assert used + GBP.to_base(amount) <= base_limit


def authority_limits(per_day: int) -> Limits:
    return Limits(role="agent", currency="EUR", per_case=per_day, per_day=per_day, per_month=per_day)


def test_the_shipped_policy_prices_gbp_and_pln():
    p = policy()
    assert p.currencies == {"EUR", "GBP", "PLN"}
    assert p.rate_for("PLN").text == "0.235"
    assert p.rate_for("EUR").value == 1
    assert p.rate_for("USD") is None


@pytest.mark.parametrize(
    ("table", "bad"),
    [
        ('[rates]\nversion = "r"\nXXX = "1.2"\n', "rates.XXX"),
        ('[rates]\nversion = "r"\nGBP = 1.17\n', "rates.GBP"),
        ('[rates]\nversion = "r"\nGBP = "-1"\n', "rates.GBP"),
        ('[rates]\nversion = "r"\nEUR = "1"\n', "rates.EUR"),
        ('[rates]\nGBP = "1.17"\n', "rates.version"),
    ],
)
def test_a_bad_rates_table_is_refused_naming_the_key(table, bad):
    start = POLICY_TEXT.index("[rates]")
    end = POLICY_TEXT.index("[roles.agent]")
    with pytest.raises(PolicyError, match=bad.replace(".", r"\.")):
        load_policy(POLICY_TEXT[:start] + table + POLICY_TEXT[end:])


def test_gbp_offers_are_checked_against_the_converted_limits():
    p = policy()
    agent = p.roles["agent"]  # 50 EUR per case
    limits, usage = authority.in_currency(p, agent, Usage(), "GBP")
    assert limits.currency == "GBP" and limits.per_case == 4273
    assert authority.owner_covers(limits, offer=money_offer("GBP", (V, 4273)), usage=usage)
    assert not authority.owner_covers(limits, offer=money_offer("GBP", (V, 4274)), usage=usage)


def test_an_offer_in_a_currency_without_a_rate_is_covered_by_nobody_and_says_why():
    p = policy()
    limits, _ = authority.in_currency(p, p.roles["director"], Usage(), "USD")
    missing = authority.case_shortfalls(limits, Money(100, "USD"), ())
    assert "no exchange rate from USD to EUR" in missing[0].detail


def test_the_automation_limit_holds_in_every_currency():
    p = policy()  # 30 EUR
    assert authority.system_may_authorise(p, system_detected=True, offer=money_offer("PLN", (V, 12765)))
    assert not authority.system_may_authorise(p, system_detected=True, offer=money_offer("PLN", (V, 12766)))
    assert not authority.system_may_authorise(p, system_detected=True, offer=money_offer("USD", (V, 100)))


# ------------------------------------------------------------------------------------------------ split


def test_the_owner_grants_what_her_limits_cover_and_only_the_rest_goes_up():
    agent = policy().roles["agent"]  # 50 EUR per case, vouchers up to 50, refunds up to 20
    split = authority.split(agent, Usage(), offer((R, 3000), (RemedyKind.REFUND, 4000)))
    assert [line.amount.amount_minor for line in split.owner] == [3000, 2000]
    assert [line.amount.amount_minor for line in split.remainder] == [0, 2000]


def test_a_kind_the_owner_may_not_grant_goes_up_whole():
    agent = policy().roles["agent"]
    split = authority.split(agent, Usage(), offer((S, 25000), (RemedyKind.APOLOGY_NOTE, 0), (V, 1000)))
    assert [line.amount.amount_minor for line in split.owner] == [0, 0, 1000]
    assert split.remainder_total == eur(25000)


def test_a_flagged_offer_goes_up_whole():
    agent = policy().roles["agent"]
    split = authority.split(agent, Usage(), offer((V, 1000), budget_exceeded=True))
    assert split.owner_total == eur(0) and split.remainder_total == eur(1000)


def test_what_the_owner_used_today_leaves_less_room():
    agent = policy().roles["agent"]  # 200 EUR per day
    split = authority.split(agent, Usage(today=19000), offer((V, 4000)))
    assert split.owner_total == eur(1000) and split.remainder_total == eur(3000)


kinds = st.sampled_from([V, R, S, C, RemedyKind.REFUND, RemedyKind.GIFT, RemedyKind.APOLOGY_NOTE, None])


@given(
    lines=st.lists(st.tuples(kinds, st.integers(0, 100_000)), min_size=1, max_size=6),
    role=st.sampled_from(["agent", "senior_agent", "team_lead", "manager"]),
    today=st.integers(0, 300_000),
)
def test_owner_part_and_remainder_make_the_offer_and_the_owner_part_is_within_her_authority(lines, role, today):
    limits = policy().roles[role]
    o = offer(*lines)
    usage = Usage(today=today, this_month=today)
    split = authority.split(limits, usage, o)
    for whole, mine, rest in zip(o.lines, split.owner, split.remainder, strict=True):
        assert mine.amount.amount_minor + rest.amount.amount_minor == whole.amount.amount_minor
        assert mine.amount.amount_minor >= 0 and rest.amount.amount_minor >= 0
    owned = tuple(line for line in split.owner if line.amount.amount_minor)
    if owned:
        authority.check_within(limits, subject="owner", total=split.owner_total, lines=owned, usage=usage)


# ------------------------------------------------------------------------------------ statutory is statutory


def test_modify_and_approve_reduces_goodwill_only():
    lines = offer((S, 25000), (R, 3000), (V, 4000), (C, 2000)).lines
    reduced = authority.reduce_lines(lines, eur(31000))
    assert [line.amount.amount_minor for line in reduced] == [25000, 3000, 2000, 1000]


def test_an_approved_amount_below_the_protected_lines_is_refused():
    lines = offer((S, 25000), (V, 4000)).lines
    with pytest.raises(InvalidCommand, match="approved_amount"):
        authority.reduce_lines(lines, eur(20000))


@given(
    lines=st.lists(st.tuples(kinds, st.integers(0, 100_000)), min_size=1, max_size=6),
    share=st.integers(0, 10_000),
)
def test_no_reduction_ever_touches_a_statutory_or_reimbursement_line(lines, share):
    o = offer(*lines)
    protected = sum(a for k, a in lines if k in authority.PROTECTED_KINDS)
    approved = protected + (o.total.amount_minor - protected) * share // 10_000
    reduced = authority.reduce_lines(o.lines, eur(approved))
    assert sum(line.amount.amount_minor for line in reduced) == approved
    for before, after in zip(o.lines, reduced, strict=True):
        if before.kind in authority.PROTECTED_KINDS:
            assert after.amount == before.amount
        assert 0 <= after.amount.amount_minor <= before.amount.amount_minor


# ------------------------------------------------------------------------------------------ room and tiers


def test_a_moved_approval_never_goes_back_down_a_tier():
    p = policy()
    assert authority.higher_tier(p, "manager", "senior_agent") == "manager"
    assert authority.higher_tier(p, "team_lead", "director") == "director"


def test_the_room_left_is_what_the_limits_leave_after_usage_and_on_an_offer_what_the_split_gives():
    agent = policy().roles["agent"]  # 50 per case, 200 a day, 2,000 a month
    room = authority.room(agent, Usage(today=18000, this_month=190000), offer((V, 4000)))
    assert (room.today, room.this_month, room.for_offer) == (2000, 10000, 2000)
    assert authority.room(agent, Usage(today=25000)).today == 0  # never negative
