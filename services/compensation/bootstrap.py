"""Compensation's composition root: the one place its policies, metrics, handlers and entrypoints are wired."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from recovery.compensation.v1 import compensation_pb2_grpc

from services.common import runtime
from services.common.runtime import Kit, ServiceParts
from services.compensation.adapters import texts
from services.compensation.adapters.metrics import CompensationMetrics
from services.compensation.adapters.policies import PolicyBook
from services.compensation.config import CompensationSettings
from services.compensation.entrypoints import consumers
from services.compensation.entrypoints.grpc_api import RULES, SERVICE, CompensationApi
from services.compensation.service_layer import handlers

MIGRATIONS = Path(__file__).parent.joinpath("migrations")


async def build(kit: Kit) -> ServiceParts:
    """Return compensation's parts: seven consumers, the CompensationService API and the policy watcher.

    Raises PolicyError when the policy file is bad: the service does not start on it.
    """
    settings = kit.settings
    assert isinstance(settings, CompensationSettings)
    policies = await PolicyBook.open(settings.policy_file, db=kit.db, metrics=kit.metrics)
    # The catalogue is read and checked now: a bad one stops the start, named.
    deps = handlers.Deps(policies=policies, metrics=CompensationMetrics(kit.registry), texts=texts.catalogue())
    api = CompensationApi(db=kit.db, deps=deps)
    return ServiceParts(
        subscriptions=consumers.subscriptions(deps),
        grpc_register=[partial(compensation_pb2_grpc.add_CompensationServiceServicer_to_server, api)],
        grpc_service_names=[SERVICE],
        grpc_rules=RULES,
        background=[
            partial(policies.store.watch, settings.policy_reload_interval.total_seconds()),
            partial(policies.keep_saved, kit.db, settings.policy_reload_interval.total_seconds()),
        ],
    )


def main() -> None:
    """Run compensation as a process until SIGTERM."""
    runtime.main(CompensationSettings.from_env(), build=build, migrations_dir=MIGRATIONS)
