"""The follow-up policy: loaded from TOML, validated whole, refused with every bad key named.

Layout (see ``services/followup/policy.toml``)::

    version = "..."                          required, non-empty
    default_timezone = "Europe/Vilnius"      required: an IANA zone, used when the case carries none (or a bad one)
    default_channel = "email"                optional (default email): when the customer named no preference
    [quiet_hours]   start = "21:00", end = "09:00"   local time of the customer; start == end: no quiet hours
    [contact_cap]   max_contacts = 3 (>= 1), window_days = 7 (>= 1)   rolling window, later ones are pushed
    [hold]          after_new_failure_hours = 168 (>= 0)   how long a new failure holds other cases' check-ins
    [feedback]      negative_below = 7 (0 to 11)   an answer with a score but no verdict is "not satisfied" below
                                                   it (and reopens the case); 0: a score alone never is
    [kinds.<kind>]  every kind required:
                    delay_days (calendar days in the customer's zone), delay_hours, delay_minutes (elapsed),
                    contact = bool (counts against quiet hours and the cap; default true)
                    (what a follow-up says is template followup.<kind> of the catalogue, services/followup/locales)
    [kinds.personal_note]  also min_severity = "major", when_at_risk = true
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.policy_reader import PolicyReader, load_toml
from services.followup.domain.errors import PolicyError
from services.followup.domain.model import Channel, FollowupKind, Severity


@dataclass(frozen=True)
class Delay:
    """How long after its base time a follow-up is due: calendar days in the customer's zone, then elapsed time."""

    days: int = 0
    elapsed: timedelta = timedelta(0)

    @property
    def total_seconds(self) -> float:
        """Return the nominal length in seconds (a calendar day counted as 24 hours)."""
        return self.days * 86_400 + self.elapsed.total_seconds()


@dataclass(frozen=True)
class KindRule:
    """When one kind of follow-up is due and what it says."""

    delay: Delay
    contact: bool
    min_severity: Severity | None = None
    when_at_risk: bool = False
    # A contact that is not counted still keeps quiet hours and waits for room under the cap, but does not
    # push the customer's other contacts (a progress update they are waiting for is not a check-in).
    counted: bool = True


@dataclass(frozen=True)
class QuietHours:
    """Local times between which the customer is not contacted; ``start == end`` means none."""

    start: time
    end: time

    @property
    def enabled(self) -> bool:
        return self.start != self.end

    def covers(self, at: time) -> bool:
        """True when local time ``at`` is inside the quiet window (the window may wrap midnight)."""
        if not self.enabled:
            return False
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


@dataclass(frozen=True)
class ContactCap:
    """No more than ``max_contacts`` contacts in any rolling ``window``."""

    max_contacts: int = 3
    window: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class Policy:
    """A validated follow-up policy; build it with ``load_policy``."""

    version: str
    default_timezone: str
    default_channel: Channel
    quiet_hours: QuietHours
    contact_cap: ContactCap
    hold_after_new_failure: timedelta
    kinds: Mapping[FollowupKind, KindRule]
    negative_below: int = 7

    def rule(self, kind: FollowupKind) -> KindRule:
        """Return the rule for ``kind`` (every kind has one: the loader requires it)."""
        return self.kinds[kind]

    @property
    def uncounted(self) -> tuple[FollowupKind, ...]:
        """Return the contact kinds the cap does not count (they still wait for room under it)."""
        return tuple(kind for kind, rule in self.kinds.items() if rule.contact and not rule.counted)


_TOP_KEYS = frozenset(
    {"version", "default_timezone", "default_channel", "quiet_hours", "contact_cap", "hold", "feedback", "kinds"}
)
_KIND_KEYS = frozenset({"delay_days", "delay_hours", "delay_minutes", "contact", "counted"})
_NOTE_KEYS = _KIND_KEYS | {"min_severity", "when_at_risk"}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_KIND_BY_NAME = {k.value: k for k in FollowupKind}


class _Reader(PolicyReader):
    """The kit's policy reader plus followup's own values: local clock times and IANA time zones."""

    def clock(self, data: Mapping[str, Any], key: str, path: str, default: str) -> time:
        """Return the local time "HH:MM" ``key`` (``default`` when absent)."""
        value = data.get(key, default)
        match = _CLOCK.match(value) if isinstance(value, str) else None
        if match is None:
            self.bad(path, f'must be a local time "HH:MM" (00:00 to 23:59), got {value!r}')
            return time(0)
        return time(int(match.group(1)), int(match.group(2)))

    def zone(self, data: Mapping[str, Any], key: str, path: str) -> str:
        """Return the required IANA time zone name ``key``."""
        name = self.text(data, key, path)
        if name and not is_known_zone(name):
            self.bad(path, f"unknown IANA time zone {name!r}")
        return name


def is_known_zone(name: str) -> bool:
    """True when ``name`` is an IANA time zone this machine's tz database knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def load_policy(text: str) -> Policy:
    """Return the policy in TOML ``text``; raise ``PolicyError`` naming every missing, unknown or bad key."""
    data = load_toml(text, PolicyError)
    r = _Reader()
    r.only(data, _TOP_KEYS, "")
    version = r.text(data, "version", "version")
    default_timezone = r.zone(data, "default_timezone", "default_timezone")
    default_channel = r.member(
        data.get("default_channel", Channel.EMAIL.value), Channel, "default_channel", Channel.EMAIL
    )
    quiet = r.table(data, "quiet_hours", "quiet_hours", required=True)
    r.only(quiet, frozenset({"start", "end"}), "quiet_hours")
    quiet_hours = QuietHours(
        start=r.clock(quiet, "start", "quiet_hours.start", "21:00"),
        end=r.clock(quiet, "end", "quiet_hours.end", "09:00"),
    )
    cap = r.table(data, "contact_cap", "contact_cap", required=True)
    r.only(cap, frozenset({"max_contacts", "window_days"}), "contact_cap")
    contact_cap = ContactCap(
        max_contacts=r.integer(cap, "max_contacts", "contact_cap.max_contacts", None, minimum=1),
        window=timedelta(days=r.integer(cap, "window_days", "contact_cap.window_days", 7, minimum=1)),
    )
    hold = r.table(data, "hold", "hold", required=False)
    r.only(hold, frozenset({"after_new_failure_hours"}), "hold")
    hold_hours = r.integer(hold, "after_new_failure_hours", "hold.after_new_failure_hours", 168, minimum=0)
    feedback = r.table(data, "feedback", "feedback", required=False)
    r.only(feedback, frozenset({"negative_below"}), "feedback")
    negative_below = r.integer(feedback, "negative_below", "feedback.negative_below", 7, minimum=0)
    if negative_below > 11:
        r.bad("feedback.negative_below", f"must be at most 11 (scores are 0 to 10), got {negative_below}")
    kinds = _kinds(r, r.table(data, "kinds", "kinds", required=True))
    r.raise_if_bad(PolicyError)
    return Policy(
        version=version,
        default_timezone=default_timezone,
        default_channel=default_channel,
        quiet_hours=quiet_hours,
        contact_cap=contact_cap,
        hold_after_new_failure=timedelta(hours=hold_hours),
        kinds=MappingProxyType(kinds),
        negative_below=negative_below,
    )


def _kinds(r: _Reader, table: Mapping[str, Any]) -> dict[FollowupKind, KindRule]:
    kinds = {}
    for name, value in table.items():
        path = f"kinds.{name}"
        kind = _KIND_BY_NAME.get(name)
        if kind is None:
            r.bad(path, f"unknown kind; one of {', '.join(_KIND_BY_NAME)}")
            continue
        if not isinstance(value, dict):
            r.bad(path, "must be a table")
            continue
        kinds[kind] = _kind(r, kind, value, path)
    if table:
        # Every kind needs a rule: a kind added to the contract must be scheduled on purpose.
        for kind in FollowupKind:
            if kind.value not in table:
                r.bad(f"kinds.{kind.value}", "is required")
    return kinds


def _kind(r: _Reader, kind: FollowupKind, table: Mapping[str, Any], path: str) -> KindRule:
    note = kind is FollowupKind.PERSONAL_NOTE
    r.only(table, _NOTE_KEYS if note else _KIND_KEYS, path)
    delay = Delay(
        days=r.integer(table, "delay_days", f"{path}.delay_days", 0, minimum=0),
        elapsed=timedelta(
            hours=r.integer(table, "delay_hours", f"{path}.delay_hours", 0, minimum=0),
            minutes=r.integer(table, "delay_minutes", f"{path}.delay_minutes", 0, minimum=0),
        ),
    )
    min_severity = None
    if note and "min_severity" in table:
        min_severity = r.member(table["min_severity"], Severity, f"{path}.min_severity", Severity.MINOR)
    return KindRule(
        delay=delay,
        contact=r.boolean(table, "contact", f"{path}.contact", True),
        counted=r.boolean(table, "counted", f"{path}.counted", True),
        min_severity=min_severity,
        when_at_risk=r.boolean(table, "when_at_risk", f"{path}.when_at_risk", False) if note else False,
    )
