"""Business-time arithmetic on a calendar: a time zone, opening periods per weekday, holidays.

All inputs and outputs are aware datetimes; periods are laid out in the calendar's zone (so DST moves
them as the wall clock does) and compared in absolute time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# A calendar with any opening hours has a period within a fortnight of any date unless every day is a
# holiday; this bounds the search so a pathological calendar fails loudly instead of looping forever.
MAX_DAYS = 3 * 366


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening periods per weekday (0 = Monday) as (start, end) minutes since midnight, plus holidays."""

    timezone: str
    hours: Mapping[int, tuple[tuple[int, int], ...]]
    holidays: frozenset[date] = field(default_factory=frozenset)
    # Each day's periods, computed once: every SLA clock of a batch walks the same few days.
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def always_open(cls) -> BusinessCalendar:
        """Return a 24x7 calendar in UTC."""
        return cls(timezone="UTC", hours={d: ((0, 24 * 60),) for d in range(7)})

    def periods_on(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """Return the day's opening periods as aware UTC datetimes (empty on a holiday or closed day)."""
        if (known := self._days.get(day)) is not None:
            return known
        if len(self._days) > 4096:
            self._days.clear()  # a long-running process walks ever later days; keep the memory bounded
        periods = self._days[day] = tuple(self._compute_periods(day))
        return periods

    def _compute_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        if day in self.holidays:
            return []
        zone = ZoneInfo(self.timezone)
        midnight = datetime.combine(day, time(0), tzinfo=zone)
        out = []
        for start, end in self.hours.get(day.weekday(), ()):
            # Wall-clock minutes, so a period on a DST day keeps its local opening times.
            # Then UTC: aware arithmetic within one ZoneInfo is wall-clock arithmetic, wrong across DST.
            out.append((_at(midnight, start, zone).astimezone(UTC), _at(midnight, end, zone).astimezone(UTC)))
        return out

    def _periods_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        day = moment.astimezone(ZoneInfo(self.timezone)).date() - timedelta(days=1)
        for offset in range(MAX_DAYS):
            yield from self.periods_on(day + timedelta(days=offset))
        raise ValueError(f"calendar {self.timezone} has no opening hours within {MAX_DAYS} days of {moment}")

    def add(self, start: datetime, span: timedelta) -> datetime:
        """Return the moment ``span`` of business time after ``start``."""
        if span <= timedelta(0):
            return start
        start = start.astimezone(UTC)
        remaining = span
        for opens, closes in self._periods_from(start):
            if closes <= start:
                continue
            begin = max(start, opens)
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable")  # _periods_from raises first

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Return the business time from ``start`` to ``end`` (negative when ``end`` is earlier)."""
        if end < start:
            return -self.between(end, start)
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        total = timedelta(0)
        for opens, closes in self._periods_from(start):
            if opens >= end:
                break
            overlap = min(closes, end) - max(opens, start)
            if overlap > timedelta(0):
                total += overlap
        return total

    def is_open(self, at: datetime) -> bool:
        """True when ``at`` falls inside an opening period."""
        day = at.astimezone(ZoneInfo(self.timezone)).date()
        return any(opens <= at < closes for opens, closes in self.periods_on(day))


def _at(midnight: datetime, minutes: int, zone: ZoneInfo) -> datetime:
    day = midnight.date() + timedelta(days=minutes // (24 * 60))
    minute = minutes % (24 * 60)
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
