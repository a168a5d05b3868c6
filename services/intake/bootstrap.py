"""Intake's composition root: the one place its policy, metrics, handlers and entrypoints are wired."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from recovery.intake.v1 import intake_pb2_grpc

from services.common import runtime
from services.common.policy import PolicyStore
from services.common.runtime import Kit, ServiceParts
from services.common.scheduler import Scheduler
from services.intake.adapters.metrics import IntakeMetrics
from services.intake.config import IntakeSettings
from services.intake.domain.policy import load_policy
from services.intake.entrypoints import consumers
from services.intake.entrypoints.grpc_api import RULES, SERVICE, IntakeApi
from services.intake.service_layer import handlers

MIGRATIONS = Path(__file__).parent / "migrations"


async def build(kit: Kit) -> ServiceParts:
    """Return intake's parts: five consumers, the IntakeService API, the hot-spot loop and the policy watcher."""
    settings = kit.settings
    assert isinstance(settings, IntakeSettings)
    policies = PolicyStore(settings.policy_file, load_policy, name="intake", metrics=kit.metrics)
    deps = handlers.Deps(policy=lambda: policies.current, metrics=IntakeMetrics(kit.registry))
    hotspots = Scheduler(
        name="intake-hotspots",
        db=kit.db,
        fire_due=partial(handlers.detect_hotspots, deps=deps),
        metrics=kit.metrics,
        poll_seconds=settings.hotspot_poll_seconds,
        batch_size=settings.hotspot_batch_size,
        retry_max_seconds=settings.retry_max_seconds,
    )
    api = IntakeApi(db=kit.db, deps=deps)
    return ServiceParts(
        subscriptions=consumers.subscriptions(deps),
        grpc_register=[partial(intake_pb2_grpc.add_IntakeServiceServicer_to_server, api)],
        grpc_service_names=[SERVICE],
        grpc_rules=RULES,
        background=[hotspots.run, partial(policies.watch, settings.policy_reload_seconds)],
    )


def main() -> None:
    """Run intake as a process until SIGTERM."""
    runtime.main(IntakeSettings.from_env(), build=build, migrations_dir=MIGRATIONS)
