"""The follow-up policy file: the shipped one loads; a bad one is refused with every bad key named."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.followup.config import DEFAULT_POLICY, parse_overrides
from services.followup.domain.errors import PolicyError
from services.followup.domain.model import Channel, FollowupKind, Severity
from services.followup.domain.policy import load_policy


def test_the_shipped_policy_loads_with_every_kind():
    policy = load_policy(DEFAULT_POLICY.read_text())
    assert policy.version == "2026.4"
    assert set(policy.kinds) == set(FollowupKind)
    assert policy.default_channel is Channel.EMAIL
    assert policy.contact_cap.max_contacts == 3
    note = policy.rule(FollowupKind.PERSONAL_NOTE)
    assert note.min_severity is Severity.MAJOR and note.when_at_risk and not note.contact


def test_every_bad_key_is_named_at_once():
    text = """
version = ""
default_timezone = "Mars/Base"
default_channel = "pigeon"
colour = "blue"
[quiet_hours]
start = "25:00"
[contact_cap]
max_contacts = 0
[kinds.satisfaction_check]
delay_hours = -1
message = "hi"
delay_hour = 2
[kinds.check_in]
delay_days = 3.5
[kinds.personal_note]
min_severity = "huge"
[kinds.teleport]
delay_days = 1
"""
    with pytest.raises(PolicyError) as caught:
        load_policy(text)
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "version",
        "default_timezone",
        "default_channel",
        "colour",
        "quiet_hours.start",
        "contact_cap.max_contacts",
        "kinds.satisfaction_check.delay_hours",
        "kinds.satisfaction_check.delay_hour",
        "kinds.satisfaction_check.message",  # the words are the catalogue's, not the policy's
        "kinds.check_in.delay_days",
        "kinds.personal_note.min_severity",
        "kinds.teleport",
        "kinds.corrective_action_notice",
        "kinds.progress_update",
    }


def test_not_toml_is_refused():
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy("version = ")


def test_delay_overrides_are_read_and_bad_ones_named():
    assert parse_overrides("satisfaction_check=2, check_in=4.5") == {
        FollowupKind.SATISFACTION_CHECK: 2.0,
        FollowupKind.CHECK_IN: 4.5,
    }
    assert parse_overrides("") == {}
    with pytest.raises(InvalidInput) as caught:
        parse_overrides("check_in=soon,teleport=3")
    assert {v.field for v in caught.value.violations} == {
        "FOLLOWUP_DELAY_OVERRIDES.check_in",
        "FOLLOWUP_DELAY_OVERRIDES.teleport",
    }
