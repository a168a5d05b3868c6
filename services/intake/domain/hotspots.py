"""Hot spots: where failures cluster. Pure counting rules; the store keeps the counts.

Each failure counts once in every dimension it has a value for (category, component, release, team,
employee, hour of day in the customer's local time, incident, location, and each of its risk tags), in the
window its occurrence time falls in. A window is hot when its count
reaches the policy minimum and exceeds the average of the trailing baseline windows by the policy factor.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.intake.domain.model import Area, Category, HotspotDimension
from services.intake.domain.policy import Policy

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Occurrence:
    """What hot-spot counting needs of one failure."""

    occurred_at: datetime
    category: Category
    area: Area
    incident_id: str = ""  # the disruption it is part of: an incident growing fast is a hot spot too
    risk_tags: tuple[str, ...] = ()  # the risk tags' names: complex scheduling, a new product, high turnover
    timezone: str = ""  # the customer's IANA zone: hours of day are local (UTC when unknown)


@dataclass(frozen=True, order=True)
class WindowKey:
    """One counter: a dimension's value in the window starting at ``window_start``."""

    dimension: str
    value: str
    window_start: datetime


def dimension_values(occurrence: Occurrence) -> tuple[tuple[HotspotDimension, str], ...]:
    """Return the (dimension, value) pairs a failure counts in; empty area fields count nowhere."""
    area = occurrence.area
    pairs = (
        (HotspotDimension.CATEGORY, occurrence.category.value),
        (HotspotDimension.COMPONENT, area.component),
        (HotspotDimension.RELEASE, area.release),
        (HotspotDimension.TEAM, area.team),
        (HotspotDimension.EMPLOYEE, area.employee_id),
        (HotspotDimension.HOUR_OF_DAY, str(occurrence.occurred_at.astimezone(_zone(occurrence.timezone)).hour)),
        (HotspotDimension.INCIDENT, occurrence.incident_id),
        (HotspotDimension.LOCATION, area.location),
        *((HotspotDimension.RISK_TAG, tag) for tag in occurrence.risk_tags),
    )
    return tuple((dimension, value) for dimension, value in pairs if value)


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    """Return the zone ``name`` (UTC when empty or unknown here: the hour is then the UTC one)."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def window_start(at: datetime, size: timedelta) -> datetime:
    """Return the start of the window of length ``size`` (aligned to the Unix epoch) that contains ``at``."""
    return _EPOCH + ((at - _EPOCH) // size) * size


def tally(occurrences: Iterable[Occurrence], policy: Policy) -> dict[WindowKey, int]:
    """Return how many of ``occurrences`` fall in each (dimension, value, window)."""
    counts: Counter[WindowKey] = Counter()
    for occurrence in occurrences:
        for dimension, value in dimension_values(occurrence):
            size = policy.hotspot_window(dimension).size
            counts[WindowKey(dimension.value, value, window_start(occurrence.occurred_at, size))] += 1
    return dict(counts)


def is_hot_spot(count: int, baseline_total: int, baseline_windows: int, *, policy: Policy) -> bool:
    """Return True when ``count`` reaches the minimum and exceeds the baseline average times the factor."""
    # All in integers: count / (baseline_total / windows) > factor_bps / 10000, with the divisions multiplied out.
    if count < policy.hotspot_min_count:
        return False
    return count * 10_000 * baseline_windows > baseline_total * policy.hotspot_factor_bps
