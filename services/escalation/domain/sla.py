"""SLA clocks in business time: start, warn, pause (waiting on the customer), resume, stop, breach.

A clock is a value; each function returns the next value. ``due_timers`` says which timer rows the
clock needs now, so the repository can replace a case's timers whenever a clock changes.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from services.common.money import scale
from services.escalation.domain.calendar import BusinessCalendar
from services.escalation.domain.model import ClockState, SlaClock, SlaStatus

WARN = "warn"
BREACH = "breach"
RUNNING = (SlaStatus.ON_TRACK, SlaStatus.AT_RISK)


def warn_span(budget: timedelta, share_bp: int) -> timedelta:
    """Return the share of ``budget`` after which a clock is at risk (integer microseconds, half up)."""
    micros = budget // timedelta(microseconds=1)
    return timedelta(microseconds=scale(micros, share_bp))


def start(
    *, clock: SlaClock, budget: timedelta, calendar: BusinessCalendar, share_bp: int, now: datetime
) -> ClockState:
    """Return a running clock of ``budget`` business time from ``now``."""
    return ClockState(
        clock=clock,
        status=SlaStatus.ON_TRACK,
        budget=budget,
        started_at=now,
        deadline_at=calendar.add(now, budget),
        warn_at=calendar.add(now, warn_span(budget, share_bp)),
    )


def warn(state: ClockState) -> ClockState:
    """Return the clock past its warning point (unchanged unless it was on track)."""
    return replace(state, status=SlaStatus.AT_RISK) if state.status is SlaStatus.ON_TRACK else state


def breach(state: ClockState) -> ClockState:
    """Return the clock breached (unchanged unless it was running)."""
    return replace(state, status=SlaStatus.BREACHED) if state.status in RUNNING else state


def stop(state: ClockState, now: datetime) -> ClockState:
    """Return the clock stopped at ``now``: met if it was running or paused, still breached if it was."""
    if state.status in (*RUNNING, SlaStatus.PAUSED):
        return replace(state, status=SlaStatus.MET, stopped_at=now, paused_at=None)
    return replace(state, stopped_at=state.stopped_at or now)


def pause(state: ClockState, now: datetime) -> ClockState:
    """Return the clock paused at ``now`` (only a running clock pauses)."""
    if state.status not in RUNNING:
        return state
    return replace(state, status=SlaStatus.PAUSED, paused_at=now)


def resume(state: ClockState, calendar: BusinessCalendar, now: datetime) -> ClockState:
    """Return the clock running again, its deadline and warning point moved out by the business time paused."""
    if state.status is not SlaStatus.PAUSED or state.paused_at is None:
        return state
    paused_at = state.paused_at
    spent = calendar.between(paused_at, now)
    # What was left at the pause is what is left now: the deadline moves by the paused business time.
    deadline = calendar.add(now, max(calendar.between(paused_at, state.deadline_at), timedelta(0)))
    warned = state.warn_at <= paused_at
    warn_at = state.warn_at if warned else calendar.add(now, calendar.between(paused_at, state.warn_at))
    return replace(
        state,
        status=SlaStatus.AT_RISK if warned else SlaStatus.ON_TRACK,
        paused_at=None,
        paused=state.paused + spent,
        deadline_at=deadline,
        warn_at=warn_at,
    )


def remaining(state: ClockState, calendar: BusinessCalendar, now: datetime) -> timedelta:
    """Return the business time left (negative once past the deadline); frozen while paused or stopped."""
    at = state.stopped_at or state.paused_at or now
    return calendar.between(at, state.deadline_at)


def due_timers(state: ClockState) -> list[tuple[str, datetime]]:
    """Return the (kind, due time) timers this clock needs now: warning and breach while running."""
    if state.status is SlaStatus.ON_TRACK:
        return [(WARN, state.warn_at), (BREACH, state.deadline_at)]
    if state.status is SlaStatus.AT_RISK:
        return [(BREACH, state.deadline_at)]
    return []
