"""Intake's policy file over the real stack: refused at start, refused at reload (previous kept), reloaded live."""

from __future__ import annotations

import pytest
from recovery.intake.v1 import intake_pb2_grpc

from services.intake import bootstrap
from services.intake.domain.errors import PolicyError
from tests.integration.conftest import eventually
from tests.integration.intake.conftest import TEST_POLICY, Intake, intake_settings, metric, new_id
from tests.integration.intake.test_intake_api import agent, report
from tests.support.running import channel, running_service


async def test_a_bad_policy_file_stops_the_service_from_starting(stack, tmp_path):
    (tmp_path / "policy.toml").write_text(TEST_POLICY.replace('late_delivery = "minor"', 'late_delivery = "tiny"'))
    settings = intake_settings(stack, tmp_path)
    with pytest.raises(PolicyError) as refused:
        async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
            pass
    assert "severity.base.late_delivery: must be one of minor, moderate, major, critical, got 'tiny'" in str(
        refused.value
    )


async def test_a_bad_edit_is_refused_and_a_good_one_applies_without_a_restart(stack, tmp_path):
    settings = intake_settings(stack, tmp_path)
    policy = tmp_path / "policy.toml"
    async with (
        running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints,
        channel(endpoints.grpc_port) as ch,
    ):
        intake = Intake(settings=settings, endpoints=endpoints)
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        policy.write_text(TEST_POLICY.replace("[merge]\nwindow_hours = 48", "[merge]\nwindow_hours = -1"))
        assert await eventually(lambda: _refused(intake), timeout=10)
        response = await stub.ReportFailure(report(new_id("cust")), metadata=agent(intake))
        assert response.classification.policy_version == "2026.2"  # the previous version is still in force

        policy.write_text(TEST_POLICY.replace('version = "2026.2"', 'version = "2026.2-edited"'))

        async def applied():
            reply = await stub.ReportFailure(report(new_id("cust")), metadata=agent(intake))
            return reply.classification.policy_version == "2026.2-edited"

        assert await eventually(applied, timeout=10)


async def _refused(intake) -> bool:
    return metric(intake, "recovery_policy_loads_total", policy="intake", outcome="refused") >= 1
