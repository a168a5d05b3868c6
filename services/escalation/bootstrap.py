"""Escalation's composition root: the one place its policy, metrics, handlers and entrypoints are wired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from recovery.escalation.v1 import escalation_pb2_grpc

from services.common import runtime
from services.common.policy import PolicyStore
from services.common.runtime import Kit, ServiceParts
from services.common.scheduler import Scheduler
from services.common.unit_of_work import unit_of_work
from services.escalation.adapters.metrics import EscalationMetrics
from services.escalation.config import EscalationSettings
from services.escalation.domain.policy import load_policy
from services.escalation.entrypoints import consumers
from services.escalation.entrypoints.grpc_api import RULES, SERVICE, CaseApi
from services.escalation.service_layer import incidents, steps, timers

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def _every(seconds: float, work: Callable[[], Awaitable[None]], what: str) -> Callable[[], Awaitable[None]]:
    """Return a background loop doing ``work`` every ``seconds``; a failed round is logged and the next one tried."""

    async def loop() -> None:
        while True:
            try:
                await work()
            except Exception:
                log.warning("escalation %s: round failed", what, exc_info=True)
            await asyncio.sleep(seconds)

    return loop


async def build(kit: Kit) -> ServiceParts:
    """Return escalation's parts: four consumers, the CaseService API, the timer loop, gauges, incident updates and
    the policy watcher."""
    settings = kit.settings
    assert isinstance(settings, EscalationSettings)
    policies = PolicyStore(settings.policy_file, load_policy, name="escalation", metrics=kit.metrics)
    deps = steps.Deps(policy=lambda: policies.current, metrics=EscalationMetrics(kit.registry))
    timer_loop = Scheduler(
        name="escalation-timers",
        db=kit.db,
        fire_due=partial(timers.fire_due, deps=deps),
        metrics=kit.metrics,
        poll_seconds=settings.timer_poll_seconds,
        batch_size=settings.timer_batch_size,
        retry_max_seconds=settings.retry_max_seconds,
    )

    async def refresh_gauges() -> None:
        async with kit.db.transaction() as conn:
            await timers.refresh_gauges(conn, deps=deps)

    async def publish_incident_updates() -> None:
        async with unit_of_work(kit.db) as uow:
            await incidents.publish_updates(uow, deps=deps)

    api = CaseApi(db=kit.db, deps=deps, watch_poll_seconds=settings.watch_poll_seconds)
    return ServiceParts(
        subscriptions=consumers.subscriptions(deps),
        grpc_register=[partial(escalation_pb2_grpc.add_CaseServiceServicer_to_server, api)],
        grpc_service_names=[SERVICE],
        grpc_rules=RULES,
        background=[
            timer_loop.run,
            _every(settings.gauge_seconds, refresh_gauges, "gauges"),
            _every(settings.incident_update_seconds, publish_incident_updates, "incident updates"),
            partial(policies.watch, settings.policy_reload_seconds),
        ],
    )


def main() -> None:
    """Run escalation as a process until SIGTERM."""
    runtime.main(EscalationSettings.from_env(), build=build, migrations_dir=MIGRATIONS)
