"""Compensation's policy file over the real stack: refused at start and at reload (previous kept), reloaded
live, every version kept so an old offer recomputes to the same result after a restart."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from recovery.compensation.v1 import compensation_pb2, compensation_pb2_grpc

from services.common.db import Database
from services.compensation import bootstrap
from services.compensation.adapters import wire
from services.compensation.adapters.metrics import CompensationMetrics
from services.compensation.adapters.policies import PolicyBook
from services.compensation.domain.errors import PolicyError
from services.compensation.service_layer import handlers
from tests.integration.compensation.conftest import (
    TEST_POLICY,
    Compensation,
    agent,
    case_opened,
    compensation_settings,
    metric,
    new_id,
    offers_for,
    publish,
)
from tests.integration.compensation.test_compensation_api import what_if
from tests.integration.conftest import eventually
from tests.support.running import channel, running_service

V2 = TEST_POLICY.replace('version = "2026.4"', 'version = "2026.5"').replace(
    "[goodwill.base.EUR]\nminor = 500\nmoderate = 1500", "[goodwill.base.EUR]\nminor = 500\nmoderate = 2500"
)


async def test_a_bad_policy_file_stops_the_service_from_starting(stack, tmp_path):
    (tmp_path / "policy.toml").write_text(TEST_POLICY.replace("avoidable_bp = 3000", "avoidable_bp = 0.3"))
    settings = compensation_settings(stack, tmp_path)
    with pytest.raises(PolicyError) as refused:
        async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
            pass
    assert "goodwill.avoidable_bp: must be an integer, got float" in str(refused.value)
    assert str(tmp_path / "policy.toml") in str(refused.value)


async def test_a_bad_edit_is_refused_and_a_good_one_applies_without_a_restart(stack, tmp_path):
    settings = compensation_settings(stack, tmp_path)
    policy = tmp_path / "policy.toml"
    async with (
        running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints,
        channel(endpoints.grpc_port) as ch,
    ):
        compensation = Compensation(settings=settings, endpoints=endpoints)
        stub = compensation_pb2_grpc.CompensationServiceStub(ch)
        meta = agent(compensation)
        policy.write_text(TEST_POLICY.replace("[caps.floor]\nEUR = 500", "[caps.floor]\nEUR = 90000"))

        async def refused():
            return metric(compensation, "recovery_policy_loads_total", policy="compensation", outcome="refused") >= 1

        assert await eventually(refused, timeout=30)
        in_force = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=meta)
        assert in_force.version == "2026.4"  # the previous version is still in force

        # A changed file under the same version would make "2026.4" mean two things: refused too.
        policy.write_text(TEST_POLICY.replace("avoidable_bp = 3000", "avoidable_bp = 3500"))
        assert await eventually(lambda: _refusals_at_least(compensation, 2), timeout=30)

        policy.write_text(V2)

        async def applied():
            reply = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=meta)
            return reply.version == "2026.5"

        assert await eventually(applied, timeout=30)
        old = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(version="2026.4"), metadata=meta)
        assert (old.version, old.current) == ("2026.4", False)
        facts = what_if(category=1, severity=2, avoidability=2, order_value=None, reported_costs=[])  # moderate
        new_quote = await stub.QuoteOffer(compensation_pb2.QuoteOfferRequest(facts=facts), metadata=meta)
        old_quote = await stub.QuoteOffer(
            compensation_pb2.QuoteOfferRequest(facts=facts, policy_version="2026.4"), metadata=meta
        )
        assert (new_quote.offer.policy_version, new_quote.offer.total.amount_minor) == ("2026.5", 2500)
        assert (old_quote.offer.policy_version, old_quote.offer.total.amount_minor) == ("2026.4", 1500)


async def _refusals_at_least(compensation, n: int) -> bool:
    return metric(compensation, "recovery_policy_loads_total", policy="compensation", outcome="refused") >= n


async def test_an_old_offer_recomputes_with_its_version_after_a_restart(stack, tmp_path, publisher):
    settings = compensation_settings(stack, tmp_path)
    customer, case = new_id("cust"), new_id("case")
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
        await publish(publisher, "recovery.case-opened.v1", case_opened(customer, case), source="intake")
        (proposed,) = await offers_for(stack, customer, count=1)
    assert proposed.policy_version == "2026.4"

    (tmp_path / "policy.toml").write_text(V2)
    restarted = replace(settings)  # same service, same schema, new policy version in force
    async with (
        running_service(restarted, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints,
        channel(endpoints.grpc_port) as ch,
    ):
        compensation = Compensation(settings=restarted, endpoints=endpoints)
        stub = compensation_pb2_grpc.CompensationServiceStub(ch)
        stored = await stub.GetOffer(
            compensation_pb2.GetOfferRequest(offer_id=proposed.offer_id), metadata=agent(compensation)
        )
        current = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=agent(compensation))
        assert current.version == "2026.5"

    db = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    try:
        book = await PolicyBook.open(tmp_path / "policy.toml", db=db)
        deps = handlers.Deps(policies=book, metrics=CompensationMetrics(CollectorRegistry()))
        async with db.transaction() as conn:
            again = await handlers.recompute(conn, proposed.offer_id, deps=deps)
    finally:
        await db.close()
    assert again.policy_version == "2026.4"
    assert wire.offer_to_proto(again) == stored.offer
    assert wire.offer_to_event(again) == proposed


async def test_a_version_reused_for_other_content_stops_the_service_from_starting(stack, tmp_path):
    settings = compensation_settings(stack, tmp_path)
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
        pass
    (tmp_path / "policy.toml").write_text(TEST_POLICY.replace("avoidable_bp = 3000", "avoidable_bp = 3500"))
    with pytest.raises(PolicyError, match="already used for other content"):
        async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
            pass
