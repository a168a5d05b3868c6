"""Due-time computation: customer time zones, quiet hours, the contact cap and DST changes (pure functions)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.texts import text
from services.followup.config import DEFAULT_POLICY
from services.followup.domain.model import FollowupKind, Outlook, ProgressStage, ResolvedCase, Severity
from services.followup.domain.policy import ContactCap, Delay, QuietHours, load_policy
from services.followup.domain.schedule import (
    DelayTuning,
    add_delay,
    after_quiet_hours,
    cap_allows,
    customer_zone,
    due_time,
    plan_notice,
    plan_progress,
    plan_resolution,
    postponed,
)

POLICY = load_policy(DEFAULT_POLICY.read_text())  # quiet 21:00-09:00, 3 contacts per 7 days
VILNIUS = ZoneInfo("Europe/Vilnius")  # DST 2026: 03:00 -> 04:00 on 29 March, 04:00 -> 03:00 on 25 October
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


def case(**changes) -> ResolvedCase:
    base = ResolvedCase(
        case_id="case-1",
        customer_id="cust-1",
        owner_employee_id="emp-1",
        team="care",
        severity=Severity.MODERATE,
        outlook=Outlook.RECOVERABLE,
        category=None,
        resolved_at=local(VILNIUS, 2026, 5, 4, 11, 0),  # a Monday morning
        customer_timezone="Europe/Vilnius",
        channel=None,
        root_component="",
        root_team="",
        resolution_number=1,
    )
    return replace(base, **changes)


# ------------------------------------------------------------------------------------------ delays, DST


def test_calendar_days_keep_the_local_clock_time_across_the_spring_dst_change():
    resolved = local(VILNIUS, 2026, 3, 28, 10, 0)  # the day before clocks go forward
    due = add_delay(resolved, Delay(days=1), VILNIUS)
    assert due.astimezone(VILNIUS).replace(tzinfo=None) == datetime(2026, 3, 29, 10, 0)
    assert due - resolved == timedelta(hours=23)  # the short day


def test_calendar_days_keep_the_local_clock_time_across_the_autumn_dst_change():
    resolved = local(VILNIUS, 2026, 10, 24, 10, 0)
    due = add_delay(resolved, Delay(days=3), VILNIUS)
    assert due.astimezone(VILNIUS).replace(tzinfo=None) == datetime(2026, 10, 27, 10, 0)
    assert due - resolved == timedelta(hours=73)


def test_hours_are_elapsed_time_even_across_a_dst_change():
    resolved = local(VILNIUS, 2026, 3, 29, 1, 0)
    due = add_delay(resolved, Delay(elapsed=timedelta(hours=4)), VILNIUS)
    assert due - resolved == timedelta(hours=4)
    assert due.astimezone(VILNIUS).hour == 6  # 01:00 + 4h with the 03:00 -> 04:00 jump


def test_a_result_is_utc():
    assert add_delay(local(TOKYO, 2026, 1, 1, 12), Delay(days=1), TOKYO).tzinfo is UTC


# ----------------------------------------------------------------------------------------- time zones


def test_the_same_instant_is_night_for_one_customer_and_day_for_another():
    at = datetime(2026, 5, 4, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo, 17:00 in Vilnius
    assert after_quiet_hours(at, VILNIUS, POLICY.quiet_hours) == at
    pushed = after_quiet_hours(at, TOKYO, POLICY.quiet_hours)
    assert pushed.astimezone(TOKYO).replace(tzinfo=None) == datetime(2026, 5, 5, 9, 0)


def test_an_unknown_or_missing_zone_falls_back_to_the_policy_default():
    assert customer_zone("Mars/Olympus_Mons", POLICY) == ZoneInfo("Europe/Vilnius")
    assert customer_zone("", POLICY) == ZoneInfo("Europe/Vilnius")
    assert customer_zone("Asia/Tokyo", POLICY) == TOKYO


# ---------------------------------------------------------------------------------------- quiet hours


def test_late_evening_moves_to_the_next_morning():
    at = local(VILNIUS, 2026, 5, 4, 22, 30)
    assert after_quiet_hours(at, VILNIUS, POLICY.quiet_hours) == local(VILNIUS, 2026, 5, 5, 9, 0)


def test_early_morning_moves_to_the_same_morning():
    at = local(VILNIUS, 2026, 5, 4, 3, 0)
    assert after_quiet_hours(at, VILNIUS, POLICY.quiet_hours) == local(VILNIUS, 2026, 5, 4, 9, 0)


def test_the_edges_of_the_quiet_window():
    quiet = POLICY.quiet_hours
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 9, 0), VILNIUS, quiet) == local(VILNIUS, 2026, 5, 4, 9, 0)
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 20, 59), VILNIUS, quiet) == local(VILNIUS, 2026, 5, 4, 20, 59)
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 21, 0), VILNIUS, quiet) == local(VILNIUS, 2026, 5, 5, 9, 0)


def test_a_window_that_does_not_wrap_midnight_and_an_empty_window():
    quiet = QuietHours(start=time(0, 0), end=time(8, 0))
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 7, 0), VILNIUS, quiet) == local(VILNIUS, 2026, 5, 4, 8, 0)
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 23, 0), VILNIUS, quiet) == local(VILNIUS, 2026, 5, 4, 23, 0)
    none = QuietHours(start=time(9, 0), end=time(9, 0))
    assert after_quiet_hours(local(VILNIUS, 2026, 5, 4, 3, 0), VILNIUS, none) == local(VILNIUS, 2026, 5, 4, 3, 0)


def test_a_quiet_window_ending_inside_the_spring_dst_gap_ends_just_after_the_gap():
    quiet = QuietHours(start=time(21, 0), end=time(3, 30))  # 03:30 does not exist in Vilnius on 29 March
    at = local(VILNIUS, 2026, 3, 29, 2, 0)
    pushed = after_quiet_hours(at, VILNIUS, quiet)
    assert pushed > at
    assert pushed.astimezone(VILNIUS).replace(tzinfo=None) == datetime(2026, 3, 29, 4, 30)
    assert not quiet.covers(pushed.astimezone(VILNIUS).time())


def test_the_autumn_night_is_an_hour_longer_and_still_ends_at_nine():
    at = local(NEW_YORK, 2026, 10, 31, 22, 0)  # clocks go back at 02:00 on 1 November
    pushed = after_quiet_hours(at, NEW_YORK, POLICY.quiet_hours)
    assert pushed.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 11, 1, 9, 0)
    assert pushed - at == timedelta(hours=12)


# ---------------------------------------------------------------------------------------- contact cap


def test_the_cap_pushes_a_fourth_contact_to_when_the_first_leaves_the_window():
    first = local(VILNIUS, 2026, 5, 4, 10, 0)
    contacts = [first, first + timedelta(days=1), first + timedelta(days=2)]
    wanted = first + timedelta(days=3)
    due = due_time(wanted, zone=VILNIUS, policy=POLICY, contact=True, contacts=contacts)
    assert due == first + timedelta(days=7)  # pushed, not dropped


def test_contacts_later_than_the_new_one_count_too():
    start = local(VILNIUS, 2026, 5, 4, 10, 0)
    later = [start + timedelta(days=1), start + timedelta(days=2), start + timedelta(days=3)]
    due = due_time(start, zone=VILNIUS, policy=POLICY, contact=True, contacts=later)
    assert cap_allows(due, later, POLICY.contact_cap)
    assert due >= later[0] + timedelta(days=7)


def test_a_cap_push_into_the_night_moves_on_to_the_morning():
    first = local(VILNIUS, 2026, 5, 4, 22, 30) - timedelta(days=7)  # leaves the window at 22:30 local
    contacts = [first, first + timedelta(hours=1), first + timedelta(hours=2)]
    due = due_time(local(VILNIUS, 2026, 5, 4, 12, 0), zone=VILNIUS, policy=POLICY, contact=True, contacts=contacts)
    assert due == local(VILNIUS, 2026, 5, 5, 9, 0)


def test_a_task_for_the_owner_ignores_quiet_hours_and_the_cap():
    at = local(VILNIUS, 2026, 5, 4, 23, 0)
    contacts = [at - timedelta(hours=h) for h in (1, 2, 3)]
    assert due_time(at, zone=VILNIUS, policy=POLICY, contact=False, contacts=contacts) == at


def test_a_floor_holds_the_follow_up():
    at = local(VILNIUS, 2026, 5, 4, 12, 0)
    floor = local(VILNIUS, 2026, 5, 10, 23, 0)
    assert due_time(at, zone=VILNIUS, policy=POLICY, contact=True, floor=floor) == local(VILNIUS, 2026, 5, 11, 9, 0)


instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC))
zones = st.sampled_from(["Europe/Vilnius", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "UTC"])


@settings(max_examples=200, deadline=None)
@given(
    wanted=instants,
    offsets=st.lists(st.integers(min_value=-14 * 24 * 60, max_value=14 * 24 * 60), max_size=8),
    zone_name=zones,
    cap=st.integers(min_value=1, max_value=4),
)
def test_a_due_time_is_never_early_never_at_night_and_never_over_the_cap(wanted, offsets, zone_name, cap):
    zone = ZoneInfo(zone_name)
    policy = replace(POLICY, contact_cap=ContactCap(max_contacts=cap, window=timedelta(days=7)))
    # Existing contacts that already respect the cap, as the store would hold them.
    contacts: list[datetime] = []
    for minutes in sorted(offsets):
        candidate = wanted + timedelta(minutes=minutes)
        if cap_allows(candidate, contacts, policy.contact_cap):
            contacts.append(candidate)
    due = due_time(wanted, zone=zone, policy=policy, contact=True, contacts=contacts)
    assert due >= wanted
    assert not policy.quiet_hours.covers(due.astimezone(zone).time().replace(tzinfo=None))
    assert cap_allows(due, contacts, policy.contact_cap)


# ------------------------------------------------------------------------------------------- planning


def test_a_minor_recoverable_case_gets_a_satisfaction_check_and_a_check_in():
    planned = plan_resolution(case(), policy=POLICY, tuning=DelayTuning())
    assert [p.kind for p in planned] == [FollowupKind.SATISFACTION_CHECK, FollowupKind.CHECK_IN]
    check, check_in = planned
    assert check.due_at == local(VILNIUS, 2026, 5, 4, 13, 0)  # two hours after resolution
    assert check_in.due_at == local(VILNIUS, 2026, 5, 7, 11, 0)  # three local days later
    assert all(p.occasion == "resolution:1" for p in planned)


def test_major_or_at_risk_cases_also_get_a_personal_note_task():
    for big in (case(severity=Severity.MAJOR), case(severity=Severity.CRITICAL), case(outlook=Outlook.AT_RISK)):
        kinds = [p.kind for p in plan_resolution(big, policy=POLICY, tuning=DelayTuning())]
        assert FollowupKind.PERSONAL_NOTE in kinds


def test_an_evening_resolution_asks_about_satisfaction_the_next_morning_and_keeps_the_original_time():
    late = case(resolved_at=local(VILNIUS, 2026, 5, 4, 20, 0))
    check = plan_resolution(late, policy=POLICY, tuning=DelayTuning())[0]
    assert check.original_due_at == local(VILNIUS, 2026, 5, 4, 22, 0)
    assert check.due_at == local(VILNIUS, 2026, 5, 5, 9, 0)


def test_the_case_own_follow_ups_count_against_the_cap_of_the_next():
    busy = [local(VILNIUS, 2026, 5, 4, 9, 0), local(VILNIUS, 2026, 5, 4, 9, 30)]  # two contacts this morning
    planned = plan_resolution(case(), policy=POLICY, tuning=DelayTuning(), contacts=busy)
    check, check_in = planned
    assert check.due_at == check.original_due_at  # the third contact in the window still fits
    assert check_in.due_at == local(VILNIUS, 2026, 5, 11, 9, 0)  # the fourth waits until the first leaves


def test_configuration_shortens_delays_as_elapsed_seconds():
    resolved = local(VILNIUS, 2026, 5, 4, 12, 0)
    tuned = plan_resolution(
        case(resolved_at=resolved),
        policy=POLICY,
        tuning=DelayTuning(override_seconds={FollowupKind.SATISFACTION_CHECK: 2.0}, scale=1 / 86_400),
    )
    assert tuned[0].due_at == resolved + timedelta(seconds=2)
    assert tuned[1].due_at == resolved + timedelta(seconds=3)  # three days scaled to three seconds


def test_a_notice_is_planned_per_action_in_the_customer_zone():
    done = datetime(2026, 5, 4, 14, 30, tzinfo=UTC)  # 23:30 in Tokyo: the notice waits for the morning
    notice = plan_notice(
        action_id="act-1",
        description="The depot now scans every parcel twice.",
        completed_at=done,
        timezone="Asia/Tokyo",
        policy=POLICY,
        tuning=DelayTuning(),
    )
    assert notice.occasion == "action:act-1"
    assert notice.text == text("followup.corrective_action_notice", action="The depot now scans every parcel twice.")
    assert notice.original_due_at == done + timedelta(hours=1)
    assert notice.due_at.astimezone(TOKYO).replace(tzinfo=None) == datetime(2026, 5, 5, 9, 0)


def test_postponing_moves_only_earlier_follow_ups():
    hold = local(VILNIUS, 2026, 5, 11, 12, 0)
    assert postponed(hold + timedelta(days=1), hold_until=hold, timezone="", policy=POLICY, contacts=[]) is None
    assert postponed(hold - timedelta(days=1), hold_until=hold, timezone="", policy=POLICY, contacts=[]) == hold


def test_a_floor_does_not_hold_a_task_for_staff():
    at = local(VILNIUS, 2026, 5, 10, 14, 0)
    floor = local(VILNIUS, 2026, 5, 17, 14, 0)  # another case of the customer is still open
    assert due_time(at, zone=VILNIUS, policy=POLICY, contact=False, floor=floor) == at


# ------------------------------------------------------------------------------------ progress updates


def test_a_progress_update_waits_a_minute_and_keeps_quiet_hours():
    day = local(VILNIUS, 2026, 5, 4, 11, 0)
    update = plan_progress(
        stage=ProgressStage.ACKNOWLEDGED, progressed_at=day, expected_by=None, timezone="Europe/Vilnius",
        policy=POLICY, tuning=DelayTuning(),
    )  # fmt: skip
    assert (update.kind, update.contact, update.due_at) == (
        FollowupKind.PROGRESS_UPDATE,
        True,
        day + timedelta(minutes=1),
    )
    assert update.text == text("followup.progress_update.acknowledged")
    night = local(VILNIUS, 2026, 5, 4, 23, 30)
    late = plan_progress(
        stage=ProgressStage.DONE, progressed_at=night, expected_by=None, timezone="Europe/Vilnius",
        policy=POLICY, tuning=DelayTuning(),
    )  # fmt: skip
    assert late.due_at == local(VILNIUS, 2026, 5, 5, 9, 0)  # told in the morning, not at midnight
    assert late.occasion != update.occasion  # each move of the case is its own update


def test_awaiting_approval_says_by_when_in_the_customers_own_time():
    asked = local(VILNIUS, 2026, 5, 4, 11, 0)
    by = asked + timedelta(hours=4)
    update = plan_progress(
        stage=ProgressStage.AWAITING_APPROVAL, progressed_at=asked, expected_by=by.astimezone(UTC),
        timezone="Asia/Tokyo", policy=POLICY, tuning=DelayTuning(),
    )  # fmt: skip
    said = update.text.param("by")
    assert said == by and said.utcoffset() == timedelta(hours=9)  # 4 May 17:00 Tokyo time


def test_progress_updates_wait_for_room_under_the_cap_but_are_not_counted():
    first = local(VILNIUS, 2026, 5, 4, 10, 0)
    full = [first, first + timedelta(hours=1), first + timedelta(hours=2)]
    update = plan_progress(
        stage=ProgressStage.OFFER_READY, progressed_at=first + timedelta(hours=3), expected_by=None,
        timezone="Europe/Vilnius", policy=POLICY, tuning=DelayTuning(), contacts=full,
    )  # fmt: skip
    assert update.due_at == first + timedelta(days=7)  # the cap applies: it waits for room
    assert POLICY.uncounted == (FollowupKind.PROGRESS_UPDATE,)  # but the cap does not count it for others
