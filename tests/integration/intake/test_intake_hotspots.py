"""Hot spots over the real stack: a burst in one area is reported once; steady traffic is not."""

from __future__ import annotations

from datetime import timedelta

from recovery.events.v1 import common_pb2, events_pb2

from services.common.wire import time_to_proto
from services.intake.domain.hotspots import window_start
from tests.integration.conftest import eventually, read_topic
from tests.integration.intake.conftest import metric, new_id, now, publish, read_events
from tests.integration.intake.test_intake_consuming import FAILURES, failure

HOTSPOTS = "recovery.hotspot-detected.v1"
WINDOW = timedelta(minutes=10)  # the test policy's window; the baseline is the 6 windows before


async def publish_in_window(publisher, component: str, window: int, count: int, *, anchor) -> None:
    """Publish ``count`` failures in ``component`` in the ``window``-th 10-minute window before ``anchor``'s."""
    start = anchor - window * WINDOW
    for i in range(count):
        at = start + timedelta(seconds=30 + i)
        await publish(
            publisher,
            FAILURES,
            failure(new_id("cust"), occurred_at=time_to_proto(at), area=common_pb2.Area(component=component)),
        )


async def test_a_burst_is_a_hot_spot_once_and_steady_traffic_is_not(intake, publisher):
    steady, bursting = new_id("steady"), new_id("burst")
    anchor = window_start(now(), WINDOW)  # fixed once: the test must not straddle a window boundary
    # Six baseline windows before the window under test (window 1), counted before it arrives, as history is.
    # (The first windows of a brand-new area are judged against an empty history; only window 1 is asserted.)
    for window in range(7, 1, -1):
        await publish_in_window(publisher, steady, window, 5, anchor=anchor)
        await publish_in_window(publisher, bursting, window, 1, anchor=anchor)
    assert await eventually(lambda: _counted(intake, steady, 30), timeout=30)
    assert await eventually(lambda: _counted(intake, bursting, 6), timeout=30)
    await publish_in_window(publisher, steady, 1, 6, anchor=anchor)  # 6 against an average of 5: ordinary
    await publish_in_window(publisher, bursting, 1, 8, anchor=anchor)  # 8 against an average of 1: a hot spot

    bootstrap = intake.settings.kafka_bootstrap_servers
    [hot] = await read_events(
        bootstrap, HOTSPOTS, events_pb2.HotspotDetected, key=f"hotspot:component:{bursting}", count=1
    )
    assert hot.dimension == common_pb2.HOTSPOT_DIMENSION_COMPONENT and hot.value == bursting
    assert (hot.baseline_total, hot.baseline_windows, hot.factor_bp) == (6, 6, 30000)
    assert hot.count >= 5  # detected as soon as the window crossed the line, whatever the batching
    assert hot.window_end_at.ToDatetime() - hot.window_start_at.ToDatetime() == WINDOW

    # More failures in the same hot window do not report it again.
    await publish_in_window(publisher, bursting, 1, 3, anchor=anchor)
    assert await eventually(lambda: _counted(intake, bursting, 6 + 8 + 3), timeout=30), (
        "the extra failures were not counted"
    )
    assert await eventually(lambda: _counted(intake, steady, 30 + 6), timeout=30)
    records = await read_topic(bootstrap, HOTSPOTS, until=lambda rs: True, settle=1.0)
    under_test = time_to_proto(anchor - WINDOW)
    found = [events_pb2.HotspotDetected.FromString(r.value) for r in records]
    assert [h for h in found if h.value == bursting] == [hot]  # once per window, never again
    assert [h for h in found if h.value == steady and h.window_start_at == under_test] == []
    assert metric(intake, "recovery_intake_hotspots_detected_total", dimension="component") >= 1


async def _counted(intake, component: str, expected: int) -> bool:
    return metric(intake, "recovery_intake_area_failures_total", dimension="component", value=component) == expected


async def test_a_fast_growing_incident_is_a_hot_spot_of_its_own(intake, publisher):
    incident = new_id("flight-LO281")
    at = time_to_proto(now() - timedelta(minutes=1))
    for _ in range(6):
        await publish(publisher, FAILURES, failure(new_id("cust"), occurred_at=at, incident_id=incident))
    [hot] = await read_events(
        intake.settings.kafka_bootstrap_servers,
        HOTSPOTS,
        events_pb2.HotspotDetected,
        key=f"hotspot:incident:{incident}",
        count=1,
    )
    assert (hot.dimension, hot.value) == (common_pb2.HOTSPOT_DIMENSION_INCIDENT, incident)
    assert hot.count >= 5


async def test_a_site_where_failures_cluster_is_a_hot_spot_and_risk_tags_are_counted(intake, publisher):
    site = new_id("WAW-T1")
    tag = common_pb2.RISK_TAG_HIGH_TURNOVER
    counter = "recovery_intake_area_failures_total"
    before = metric(intake, counter, dimension="risk_tag", value="high_turnover")
    at = time_to_proto(now() - timedelta(minutes=1))
    for _ in range(6):
        report = failure(new_id("cust"), occurred_at=at, area=common_pb2.Area(location=site), risk_tags=[tag])
        await publish(publisher, FAILURES, report)
    [hot] = await read_events(
        intake.settings.kafka_bootstrap_servers,
        HOTSPOTS,
        events_pb2.HotspotDetected,
        key=f"hotspot:location:{site}",
        count=1,
    )
    assert (hot.dimension, hot.value) == (common_pb2.HOTSPOT_DIMENSION_LOCATION, site)

    async def tagged() -> bool:
        return metric(intake, counter, dimension="risk_tag", value="high_turnover") - before == 6

    assert await eventually(tagged, timeout=30)
