"""Followup's composition root: the one place its policy, metrics, handlers, scheduler and entrypoints are wired."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path

from recovery.followup.v1 import followup_pb2_grpc

from services.common import runtime
from services.common.db import Database
from services.common.policy import PolicyStore
from services.common.runtime import Kit, ServiceParts
from services.common.scheduler import Scheduler
from services.followup.adapters import texts
from services.followup.adapters.metrics import FollowupMetrics
from services.followup.config import FollowupSettings
from services.followup.domain.policy import load_policy
from services.followup.entrypoints import consumers
from services.followup.entrypoints.grpc_api import RULES, SERVICE, FollowupApi
from services.followup.service_layer import handlers

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


async def build(kit: Kit) -> ServiceParts:
    """Return followup's parts: five consumers, the FollowupService API, the scheduler, gauges and policy watcher."""
    settings = kit.settings
    assert isinstance(settings, FollowupSettings)
    policies = PolicyStore(settings.policy_file, load_policy, name="followup", metrics=kit.metrics)
    deps = handlers.Deps(
        policy=lambda: policies.current,
        metrics=FollowupMetrics(kit.registry),
        tuning=settings.tuning(),
        texts=texts.catalogue(),  # read and checked now: a bad catalogue stops the start, named
    )
    scheduler = Scheduler(
        name="followup-due",
        db=kit.db,
        fire_due=partial(handlers.fire_due, deps=deps),
        metrics=kit.metrics,
        poll_seconds=settings.scheduler_poll_seconds,
        batch_size=settings.scheduler_batch_size,
        retry_max_seconds=settings.retry_max_seconds,
    )
    api = FollowupApi(db=kit.db, deps=deps)
    return ServiceParts(
        subscriptions=consumers.subscriptions(deps),
        grpc_register=[partial(followup_pb2_grpc.add_FollowupServiceServicer_to_server, api)],
        grpc_service_names=[SERVICE],
        grpc_rules=RULES,
        background=[
            scheduler.run,
            partial(policies.watch, settings.policy_reload_seconds),
            partial(_gauges, kit.db, deps, settings.gauge_seconds),
        ],
    )


async def _gauges(db: Database, deps: handlers.Deps, interval: float) -> None:
    while True:
        try:
            async with db.transaction() as conn:
                await handlers.refresh_gauges(conn, deps=deps)
        except Exception as exc:  # the database is away: the gauges keep their last value, the next round retries
            log.warning("follow-up gauges not refreshed (%s: %s)", type(exc).__name__, exc)
        await asyncio.sleep(interval)


def main() -> None:
    """Run followup as a process until SIGTERM."""
    runtime.main(FollowupSettings.from_env(), build=build, migrations_dir=MIGRATIONS)
