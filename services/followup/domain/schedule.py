"""When a follow-up is due: pure functions of (policy, case, other contacts, time).

The order of the rules, and why:

1. **Delay** from the base time (resolution, action completion): whole days are added on the customer's
   local calendar (a check-in "3 days later" stays at the same local clock time across a DST change),
   hours and minutes are elapsed time. That is ``original_due_at``.
2. **Floor** (contact kinds only): never before a hold (a new failure of the same customer holds check-ins
   for a while).
3. **Quiet hours** (contact kinds only): a time inside the customer's local quiet window moves to the
   window's end, the next allowed local time. A local end time inside a DST gap resolves to the first
   instant after the gap.
4. **Contact cap** (contact kinds only): if the customer would get more than N contacts in some rolling
   window, move to the moment the oldest blocking contact leaves the window; never dropped.

Steps 3 and 4 repeat until both hold: a cap push may land in the night, and a quiet push may land in a
crowded window. Each step only moves time forward, and past the last known contact plus the window
nothing blocks, so the loop ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.common.texts import CustomerText, text
from services.followup.domain.model import (
    RESOLUTION_KINDS,
    FollowupKind,
    Outlook,
    PlannedFollowup,
    ProgressStage,
    ResolvedCase,
)
from services.followup.domain.policy import ContactCap, Delay, KindRule, Policy, QuietHours, is_known_zone


@dataclass(frozen=True)
class DelayTuning:
    """Configuration that shortens delays (tests, demos): a scale for all kinds, or seconds per kind.

    A tuned delay is elapsed time (no calendar days): "check-in 3 days later" scaled to 3 seconds is
    3 seconds, whatever the customer's zone does.
    """

    scale: float = 1.0
    override_seconds: Mapping[FollowupKind, float] | None = None

    def apply(self, kind: FollowupKind, delay: Delay) -> Delay:
        """Return the delay in force for ``kind``: the override, the scaled policy delay, or the policy's."""
        if self.override_seconds and kind in self.override_seconds:
            return Delay(elapsed=timedelta(seconds=self.override_seconds[kind]))
        if self.scale == 1.0:
            return delay
        return Delay(elapsed=timedelta(seconds=delay.total_seconds * self.scale))


def customer_zone(name: str, policy: Policy) -> ZoneInfo:
    """Return the customer's zone, or the policy's default when ``name`` is empty or unknown here."""
    return ZoneInfo(name if name and is_known_zone(name) else policy.default_timezone)


def add_delay(base: datetime, delay: Delay, zone: ZoneInfo) -> datetime:
    """Return ``base`` plus ``delay``: days on the local calendar in ``zone``, then elapsed time; in UTC."""
    at = base.astimezone(UTC)
    if delay.days:
        local = base.astimezone(zone)
        wall = datetime.combine(local.date() + timedelta(days=delay.days), local.time(), tzinfo=zone)
        at = wall.astimezone(UTC)
    return at + delay.elapsed


def after_quiet_hours(at: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """Return ``at`` when the customer may be contacted then, else the end of their local quiet window."""
    local = at.astimezone(zone)
    if not quiet.covers(local.time().replace(tzinfo=None)):
        return at
    day = local.date()
    # In a window that wraps midnight, the evening part ends tomorrow morning; the early part ends today.
    if quiet.start > quiet.end and local.time().replace(tzinfo=None) >= quiet.start:
        day += timedelta(days=1)
    end = datetime.combine(day, quiet.end, tzinfo=zone).astimezone(UTC)
    # A wall time in a DST gap maps (fold=0) to the instant just after the gap, which is later than ``at``.
    return max(end, at)


def cap_allows(at: datetime, contacts: Sequence[datetime], cap: ContactCap) -> bool:
    """True when one more contact at ``at`` keeps every rolling window at or under the cap."""
    near = sorted(c for c in contacts if abs(c - at) < cap.window)
    need = cap.max_contacts  # existing contacts that, with ``at``, would make one too many
    for i in range(len(near) - need + 1):
        group = near[i : i + need]
        if max(group[-1], at) - min(group[0], at) < cap.window:
            return False
    return True


def next_cap_slot(at: datetime, contacts: Sequence[datetime], cap: ContactCap) -> datetime:
    """Return the earliest moment after ``at`` at which a contact in the past window leaves it."""
    leaving = [c + cap.window for c in contacts if c + cap.window > at]
    return min(leaving)


def due_time(
    original: datetime,
    *,
    zone: ZoneInfo,
    policy: Policy,
    contact: bool,
    contacts: Sequence[datetime] = (),
    floor: datetime | None = None,
) -> datetime:
    """Return when a follow-up planned for ``original`` is due after the hold floor, quiet hours and the cap."""
    if not contact:
        return original  # a task for staff (a personal note) is not held back, like it ignores quiet hours
    at = max(original, floor) if floor else original
    while True:
        at = after_quiet_hours(at, zone, policy.quiet_hours)
        if cap_allows(at, contacts, policy.contact_cap):
            return at
        at = next_cap_slot(at, contacts, policy.contact_cap)


def wants_personal_note(case: ResolvedCase, rule: KindRule) -> bool:
    """True when the case is big enough (severity at or above the rule's) or at risk, as the rule says."""
    if rule.when_at_risk and case.outlook is Outlook.AT_RISK:
        return True
    return rule.min_severity is not None and case.severity is not None and case.severity.rank >= rule.min_severity.rank


# Which resolution kinds a case gets: a dispatch table of predicates.
_WANTED = {
    FollowupKind.SATISFACTION_CHECK: lambda case, rule: True,
    FollowupKind.CHECK_IN: lambda case, rule: True,
    FollowupKind.PERSONAL_NOTE: wants_personal_note,
}


def resolution_occasion(case: ResolvedCase) -> str:
    """Return the occasion key of a resolution's follow-ups (a reopened case resolved again plans anew)."""
    return f"resolution:{max(case.resolution_number, 1)}"


def plan_resolution(
    case: ResolvedCase,
    *,
    policy: Policy,
    tuning: DelayTuning,
    contacts: Iterable[datetime] = (),
    floor: datetime | None = None,
) -> list[PlannedFollowup]:
    """Return the follow-ups a resolved case gets, each due per delay, hold, quiet hours and contact cap."""
    zone = customer_zone(case.customer_timezone, policy)
    known = list(contacts)
    planned = []
    for kind in RESOLUTION_KINDS:
        rule = policy.rule(kind)
        if not _WANTED[kind](case, rule):
            continue
        original = add_delay(case.resolved_at, tuning.apply(kind, rule.delay), zone)
        due = due_time(original, zone=zone, policy=policy, contact=rule.contact, contacts=known, floor=floor)
        if rule.contact:
            known.append(due)  # the next one of this case counts this one against the cap
        planned.append(
            PlannedFollowup(
                kind=kind,
                occasion=resolution_occasion(case),
                original_due_at=original,
                due_at=due,
                contact=rule.contact,
                text=kind_text(kind, rule),
            )
        )
    return planned


def kind_text(kind: FollowupKind, rule: KindRule) -> CustomerText:
    """Return what a resolution's follow-up of ``kind`` says (a check-in counts the days since)."""
    if kind is FollowupKind.CHECK_IN:
        return text("followup.check_in", count=max(round(rule.delay.total_seconds / 86_400), 1))
    return text(f"followup.{kind.value}")


def plan_notice(
    *,
    action_id: str,
    description: str,
    completed_at: datetime,
    timezone: str,
    policy: Policy,
    tuning: DelayTuning,
    contacts: Iterable[datetime] = (),
    floor: datetime | None = None,
) -> PlannedFollowup:
    """Return the corrective-action notice for one customer, due per delay, hold, quiet hours and cap."""
    kind = FollowupKind.CORRECTIVE_ACTION_NOTICE
    rule = policy.rule(kind)
    zone = customer_zone(timezone, policy)
    original = add_delay(completed_at, tuning.apply(kind, rule.delay), zone)
    due = due_time(original, zone=zone, policy=policy, contact=rule.contact, contacts=list(contacts), floor=floor)
    return PlannedFollowup(
        kind=kind,
        occasion=notice_occasion(action_id),
        original_due_at=original,
        due_at=due,
        contact=rule.contact,
        text=text(f"followup.{kind.value}", action=description),
    )


def plan_progress(
    *,
    stage: ProgressStage,
    progressed_at: datetime,
    expected_by: datetime | None,
    timezone: str,
    policy: Policy,
    tuning: DelayTuning,
    contacts: Iterable[datetime] = (),
) -> PlannedFollowup:
    """Return the progress update of a case's move, due per delay, quiet hours and cap (never held by a new
    failure: it is about the case in hand). An awaiting-approval update says by when, in the customer's time."""
    kind = FollowupKind.PROGRESS_UPDATE
    rule = policy.rule(kind)
    zone = customer_zone(timezone, policy)
    original = add_delay(progressed_at, tuning.apply(kind, rule.delay), zone)
    due = due_time(original, zone=zone, policy=policy, contact=rule.contact, contacts=list(contacts))
    params = {"by": expected_by.astimezone(zone)} if expected_by is not None else {}
    return PlannedFollowup(
        kind=kind,
        occasion=progress_occasion(stage, progressed_at),
        original_due_at=original,
        due_at=due,
        contact=rule.contact,
        text=text(f"followup.{kind.value}.{stage.value}", **params),
    )


def progress_occasion(stage: ProgressStage, progressed_at: datetime) -> str:
    """Return the occasion key of one progress update (a case has one per move it tells)."""
    return f"progress:{stage.value}:{progressed_at.astimezone(UTC).isoformat()}"


def notice_occasion(action_id: str) -> str:
    """Return the occasion key of a corrective action's notices (one per customer and action)."""
    return f"action:{action_id}"


def postponed(
    due_at: datetime,
    *,
    hold_until: datetime,
    timezone: str,
    policy: Policy,
    contacts: Sequence[datetime],
) -> datetime | None:
    """Return the new due time of a pending contact held until ``hold_until``, or None when already later."""
    if due_at >= hold_until:
        return None
    zone = customer_zone(timezone, policy)
    return due_time(hold_until, zone=zone, policy=policy, contact=True, contacts=contacts)
