"""Business-time arithmetic: weekends, holidays, split days, DST, and SLA clocks that pause and resume."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.escalation.domain import sla
from services.escalation.domain.calendar import BusinessCalendar
from services.escalation.domain.model import SlaClock, SlaStatus

H = timedelta(hours=1)
# Mon-Fri 09:00-12:00 and 13:00-17:00 (a split day), closed at weekends, Christmas a holiday.
CAL = BusinessCalendar(
    timezone="UTC",
    hours={d: ((9 * 60, 12 * 60), (13 * 60, 17 * 60)) for d in range(5)},
    holidays=frozenset({date(2026, 12, 25)}),
)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_adding_within_a_period():
    assert CAL.add(at(23, 9), 2 * H) == at(23, 11)


def test_the_lunch_break_is_skipped():
    assert CAL.add(at(23, 11), 2 * H) == at(23, 14)


def test_starting_before_opening_counts_from_opening():
    assert CAL.add(at(23, 6), H) == at(23, 10)


def test_friday_evening_runs_into_monday():
    # Fri 27 Nov 16:00 + 2h: one hour Friday, one hour Monday 30 Nov.
    assert CAL.add(at(27, 16), 2 * H) == at(30, 10)


def test_a_holiday_is_skipped():
    # Thu 24 Dec 16:00 + 2h: Friday 25 Dec is a holiday, then the weekend: Monday 28 Dec 10:00.
    assert CAL.add(at(24, 16, month=12), 2 * H) == at(28, 10, month=12)


def test_between_counts_only_open_time():
    assert CAL.between(at(27, 16), at(30, 10)) == 2 * H
    assert CAL.between(at(30, 10), at(27, 16)) == -2 * H
    assert CAL.between(at(28, 10), at(29, 10)) == timedelta(0)  # the weekend


def test_periods_follow_the_wall_clock_across_dst():
    vilnius = BusinessCalendar(timezone="Europe/Vilnius", hours={d: ((0, 24 * 60),) for d in range(7)})
    # 29 March 2026 is 23 hours long in Vilnius (clocks go forward): a 24x7 day holds 23 hours.
    day = datetime(2026, 3, 29, tzinfo=ZoneInfo("Europe/Vilnius"))
    assert vilnius.between(day, day + timedelta(days=1)) == 23 * H
    assert vilnius.add(day, 23 * H) == datetime(2026, 3, 30, tzinfo=ZoneInfo("Europe/Vilnius"))


@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)),
    minutes=st.integers(min_value=1, max_value=60 * 24 * 10),
)
def test_between_undoes_add(start, minutes):
    span = timedelta(minutes=minutes)
    end = CAL.add(start, span)
    assert end > start
    assert CAL.between(start, end) == span
    assert CAL.is_open(end - timedelta(microseconds=1))


def _clock(now: datetime, budget: timedelta = 4 * H) -> sla.ClockState:
    return sla.start(clock=SlaClock.RESOLVE, budget=budget, calendar=CAL, share_bp=7500, now=now)


def test_a_clock_warns_at_its_share_and_breaches_at_its_deadline():
    clock = _clock(at(23, 9))
    assert (clock.warn_at, clock.deadline_at) == (at(23, 12), at(23, 14))  # 3h of 4h: the end of the morning
    assert sla.due_timers(clock) == [(sla.WARN, at(23, 12)), (sla.BREACH, at(23, 14))]
    warned = sla.warn(clock)
    assert warned.status is SlaStatus.AT_RISK
    assert sla.due_timers(warned) == [(sla.BREACH, at(23, 14))]
    assert sla.breach(warned).status is SlaStatus.BREACHED
    assert sla.due_timers(sla.breach(warned)) == []


def test_pause_and_resume_keep_the_time_left_and_count_the_time_paused():
    clock = _clock(at(23, 9))  # deadline Mon 14:00, warning Mon 12:00
    paused = sla.pause(clock, at(23, 10))  # 1h spent, 3h left
    assert paused.status is SlaStatus.PAUSED
    assert sla.due_timers(paused) == []
    assert sla.remaining(paused, CAL, at(24, 16)) == 3 * H  # frozen while paused
    resumed = sla.resume(paused, CAL, at(24, 16))  # Tue 16:00 + 3h of business time
    assert resumed.status is SlaStatus.ON_TRACK
    assert resumed.deadline_at == at(25, 11)
    assert resumed.warn_at == at(25, 10)  # 2h were left to the warning point
    # Paused from Mon 10:00 to Tue 16:00: Mon 10-12, 13-17 (6h) + Tue 9-12, 13-16 (6h).
    assert resumed.paused == 12 * H


def test_a_clock_paused_after_its_warning_resumes_at_risk():
    paused = sla.pause(sla.warn(_clock(at(23, 9))), at(23, 13, 30))
    resumed = sla.resume(paused, CAL, at(23, 16))
    assert resumed.status is SlaStatus.AT_RISK
    assert resumed.deadline_at == at(23, 16, 30)


def test_stopping_meets_a_running_or_paused_clock_but_not_a_breached_one():
    clock = _clock(at(23, 9))
    assert sla.stop(clock, at(23, 10)).status is SlaStatus.MET
    assert sla.stop(sla.pause(clock, at(23, 10)), at(23, 12)).status is SlaStatus.MET
    breached = sla.stop(sla.breach(clock), at(23, 16))
    assert (breached.status, breached.stopped_at) == (SlaStatus.BREACHED, at(23, 16))


@pytest.mark.parametrize(
    ("share", "expected"),
    [(10000, at(23, 12)), (5000, at(23, 10, 30)), (1, at(23, 9) + timedelta(seconds=1, microseconds=80000))],
)
def test_warning_share(share, expected):
    clock = sla.start(clock=SlaClock.ACKNOWLEDGE, budget=3 * H, calendar=CAL, share_bp=share, now=at(23, 9))
    assert clock.warn_at == expected
